"""`python3 -m sdmail.error [-n error|retry]`: the error and retry transports as
socket-activated services.

`error_status(service, nexthop)` is the status every recipient gets; `main` takes the
service name off the command line and runs the agent skeleton (sdmail/agent.py) on the
socket of that name, with one outcome per recipient and `relay=none`.

Failure modes: `main` returns an exit status: 64 for a service name other than `error` or
`retry` (or a bad command line), 78 when systemd passed no socket of that name.
`error_status` raises ValueError for a service name it does not serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sdmail.agent import Agent, DeliverRequest, Message, Outcome, run_agent
from sdmail.core.deliver_request import RequestRecipient
from sdmail.core.dsn import Status, split_dsn
from sdmail.core.log import msg_warning, setup_logging
from sdmail.core.service_name import ServiceNameError, take_service_name
from sdmail.core.skeleton import ExitCode, PlainDaemonContext

PROGRAM: Final = "error"
RELAY: Final = "none"
# Per service: the code of a reason without one, and the text of an empty reason.
SERVICES: Final = {
    "error": ("5.0.0", "mail delivery error"),
    "retry": ("4.0.0", "mail delivery deferred"),
}


def error_status(service: str, nexthop: str) -> tuple[Status, str | None]:
    """The status of each recipient for SERVICE with the reason NEXTHOP, and the code of
    the wrong class that NEXTHOP gave and that was ignored (None when there was none)."""
    try:
        default, empty_text = SERVICES[service]
    except KeyError:
        raise ValueError(f"bad error service name: {service}") from None
    given = split_dsn(nexthop, default)
    text = given.text or empty_text
    if given.dsn[0] == default[0]:
        return Status(given.dsn, text), None
    return Status(default, text), given.dsn


def make_deliver(service: str) -> DeliverRequest:
    """The deliver_request function of SERVICE."""

    def deliver(message: Message, recipients: Sequence[RequestRecipient]) -> list[Outcome]:
        status, ignored = error_status(service, message.request.nexthop)
        if ignored is not None:
            msg_warning(message.queue_id, f'{service}: ignoring dsn code "{ignored}"')
        return [Outcome(status, relay=RELAY) for _ in recipients]

    return deliver


def main(argv: Sequence[str] | None = None) -> int:
    try:
        service, rest = take_service_name(argv, PROGRAM)
        if service not in SERVICES:
            raise ServiceNameError(f"bad error service name: {service} (error or retry)")
    except ServiceNameError as exc:
        setup_logging(PROGRAM).critical("%s", exc)
        return ExitCode.USAGE
    deliver = make_deliver(service)

    def make_agent(_ctx: PlainDaemonContext[Any]) -> Agent:
        return Agent(service, deliver_request=deliver)

    return run_agent(PROGRAM, rest, make_agent, socket_name=service)
