"""`python3 -m sdmail.discard`: the discard transport as a socket-activated service.

`discard_status(nexthop)` is the status every recipient gets; `main` runs the agent
skeleton (sdmail/agent.py) with one outcome per recipient, `relay=none`.

Failure modes: `main` returns an exit status (78 when systemd passed no `discard` socket,
64 for a bad command line); `discard_status` never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sdmail.agent import Agent, Message, Outcome, run_agent
from sdmail.core.deliver_request import RequestRecipient
from sdmail.core.dsn import Status, split_dsn
from sdmail.core.log import msg_warning
from sdmail.core.skeleton import PlainDaemonContext

PROGRAM: Final = "discard"
RELAY: Final = "none"
SENT_DSN: Final = "2.0.0"
DEFAULT_TEXT: Final = "discarded"


def discard_status(nexthop: str) -> tuple[Status, str | None]:
    """The status of a discarded recipient, and the code of another class that NEXTHOP gave
    and that was ignored (None when there was none)."""
    given = split_dsn(nexthop, SENT_DSN)
    text = given.text or DEFAULT_TEXT
    if given.is_success:
        return Status(given.dsn, text), None
    return Status(SENT_DSN, text), given.dsn


def deliver(message: Message, recipients: Sequence[RequestRecipient]) -> list[Outcome]:
    """Every recipient of the request discarded with the request's next hop as the reason."""
    status, ignored = discard_status(message.request.nexthop)
    if ignored is not None:
        msg_warning(message.queue_id, f'discard: ignoring dsn code "{ignored}"')
    return [Outcome(status, relay=RELAY) for _ in recipients]


def make_agent(_ctx: PlainDaemonContext[Any]) -> Agent:
    return Agent(PROGRAM, deliver_request=deliver)


def main(argv: Sequence[str] | None = None) -> int:
    return run_agent(PROGRAM, argv, make_agent)
