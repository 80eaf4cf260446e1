"""`python3 -m sdmail.local`: the local delivery agent as a socket-activated service.

`main` hands the agent skeleton (sdmail/agent.py) a `LocalDelivery` for each connection's
worker, bound from the configuration in force; the skeleton does the rest (caller check,
shared lock, done marks, log lines, one worker per connection, max_idle and max_use).

Failure modes: `main` returns an exit status: 78 for a main.cf that does not parse or a
mailbox_delivery_lock style it does not know, or a missing `local` socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdmail.agent import Agent, run_agent
from sdmail.core.skeleton import ExitCode, Fatal, PlainDaemonContext
from sdmail.local.recipient import LocalDelivery
from sdmail.local.settings import LocalSettings

PROGRAM = "local"


def make_agent(ctx: PlainDaemonContext[Any]) -> Agent:
    """The Agent one worker serves its connection with."""
    settings: LocalSettings = ctx.settings
    try:
        delivery = LocalDelivery(settings)
    except ValueError as exc:
        raise Fatal(f"mailbox_delivery_lock: {exc}", ExitCode.CONFIG) from None
    return Agent(PROGRAM, deliver_recipient=delivery.deliver, close=delivery.close)


def main(argv: Sequence[str] | None = None) -> int:
    return run_agent(PROGRAM, argv, make_agent, settings=LocalSettings)
