"""The request qmgr sends a delivery agent, and the agent's answer (Postfix's deliver_request).

One request asks for one delivery attempt of one message to a group of its
recipients that share a transport and next hop.  The agent opens the queue file
itself (it names its queue and queue ID), holds a shared lock on it while it
works, marks each recipient it finished done in the file (`qfile.mark_done` at
the recipient's offset) BEFORE it answers, logs the delivery line
(`log.format_delivery`), and answers with one status per recipient.  qmgr keeps
the defer and bounce logs and decides what happens to the message next.

A recipient's status is `sent`, `bounced` or `deferred` with an RFC 3463 code
and the text Postfix would log.  A request whose `trace_flags` hold VERIFY
(`sendmail -bv`) delivers nothing: the agent answers what it would do (`sent`
with "delivers to mailbox", or the failure it found) and marks every requested
recipient done, deferred ones too; qmgr reports the answers and removes the message.  `site_failure` says the destination itself
failed (connection refused, greeting 4xx): qmgr's negative concurrency
feedback, and "delivery temporarily suspended" for the rest of the queue.

Wire form: a frame (core/ipc) whose header is the dataclass as a JSON object,
`"op": "deliver"` for the request.  Failure modes: `ProtocolError` for a frame
that does not hold a valid request or reply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sdmail.core.dsn import DsnError, Status
from sdmail.core.ipc import ProtocolError

SENT, BOUNCED, DEFERRED = "sent", "bounced", "deferred"
STATUSES = frozenset({SENT, BOUNCED, DEFERRED})


def status_word(status: Status) -> str:
    """`sent`, `deferred` or `bounced`, as the log, qmgr and the status logs say it."""
    if status.is_success:
        return SENT
    return DEFERRED if status.is_temporary else BOUNCED


def verify_word(status: Status) -> str:
    """`deliverable` or `undeliverable`, as a `sendmail -bv` attempt logs it."""
    return "deliverable" if status.is_success else "undeliverable"


@dataclass(frozen=True)
class RequestRecipient:
    address: str
    offset: int
    orig_address: str | None = None
    notify: int = 0
    orcpt: str | None = None


@dataclass(frozen=True)
class DeliveryRequest:
    queue_name: str
    queue_id: str
    transport: str
    nexthop: str
    sender: str
    recipients: tuple[RequestRecipient, ...]
    arrival: float
    queue_active_at: float = 0.0  # when qmgr took the message (for delays= b)
    attempt: int = 1
    trace_flags: int = 0  # core/records.TraceFlag: VERIFY means say what, deliver nothing

    def to_header(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["op"] = "deliver"
        return fields

    @classmethod
    def from_header(cls, fields: dict[str, Any]) -> DeliveryRequest:
        try:
            if fields.get("op") != "deliver":
                raise ValueError(f"not a delivery request: {fields.get('op')!r}")
            recipients = tuple(RequestRecipient(**r) for r in fields["recipients"])
            values = {k: v for k, v in fields.items() if k not in ("op", "recipients")}
            request = cls(recipients=recipients, **values)
            _check_types(request)
            return request
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed delivery request: {exc}") from None


@dataclass(frozen=True)
class RecipientStatus:
    offset: int
    address: str
    status: str  # sent | bounced | deferred
    dsn: str
    text: str
    relay: str = "none"

    def as_status(self) -> Status:
        return Status(self.dsn, self.text)


@dataclass(frozen=True)
class DeliveryResult:
    recipients: tuple[RecipientStatus, ...] = ()
    site_failure: bool = False

    def to_header(self) -> dict[str, Any]:
        return {
            "op": "result",
            "recipients": [asdict(r) for r in self.recipients],
            "site_failure": self.site_failure,
        }

    @classmethod
    def from_header(cls, fields: dict[str, Any]) -> DeliveryResult:
        try:
            if fields.get("op") != "result":
                raise ValueError(f"not a delivery result: {fields.get('op')!r}")
            statuses = tuple(RecipientStatus(**r) for r in fields["recipients"])
            for status in statuses:
                if status.status not in STATUSES:
                    raise ValueError(f"unknown status {status.status!r}")
                status.as_status()
            return cls(statuses, bool(fields.get("site_failure", False)))
        except (KeyError, TypeError, ValueError, DsnError) as exc:
            raise ProtocolError(f"malformed delivery result: {exc}") from None


def _check_types(request: DeliveryRequest) -> None:
    for name in ("queue_name", "queue_id", "transport", "nexthop", "sender"):
        if not isinstance(getattr(request, name), str):
            raise TypeError(f"{name} must be a string")
    if not isinstance(request.trace_flags, int) or isinstance(request.trace_flags, bool):
        raise TypeError("trace_flags must be an integer")
    for recipient in request.recipients:
        if not isinstance(recipient.address, str) or not isinstance(recipient.offset, int):
            raise TypeError("recipient address must be a string and offset an integer")
