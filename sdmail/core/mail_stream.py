"""Submitting a message to a service that queues it: postdrop, and the cleanup service.

`sendmail` hands local mail to the postdrop service (/run/sdmail/postdrop), and
programs that do not run as sdmail (the local agent forwarding for aliases and
.forward files) hand mail to the cleanup service (/run/sdmail/cleanup), the same
way: one frame (core/ipc) whose header is a `SubmitRequest` and whose payload is
the message content, answered by one frame with the queue ID or Postfix's
reply.  The service learns WHO submits from the kernel (SO_PEERCRED), never
from the request.

This module is the client side and the codec; the services own what they do
with a request.  Keep its imports small: sendmail runs it once per message.

Failure modes: `submit` raises `SubmitError` (code, dsn, text) when the service
refuses the message (4xx: try again later; 5xx: never), `ProtocolError` for a
garbled reply, and OSError when the service cannot be reached (not running, no
permission) — the caller decides what that means (sendmail: exit 75).
`SubmitRequest.from_header` raises ProtocolError for a malformed request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sdmail.core.ipc import ProtocolError, request
from sdmail.core.records import TRACE_FLAGS_MAX

OK = "ok"


@dataclass(frozen=True)
class SubmitRecipient:
    address: str
    orcpt: str | None = None
    notify: int = 0  # records.Notify value


@dataclass(frozen=True)
class SubmitRequest:
    """A message's envelope as a submitting program knows it.

    `sender` None means "the submitting user" (postdrop fills in the login name);
    addresses are in internal form (core/address).  `attributes` carry what a
    re-submitting agent knows (e.g. `orig_queue_id`).
    """

    sender: str | None
    recipients: tuple[SubmitRecipient, ...] = ()
    full_name: str | None = None
    extract_recipients: bool = False
    ret: str | None = None
    envid: str | None = None
    body_type: str | None = None
    smtputf8: bool = False
    origin: str = "local"
    attributes: dict[str, str] = field(default_factory=dict)
    trace_flags: int = 0  # core/records.TraceFlag: sendmail -v, -bv; kept when forwarded

    def to_header(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["op"] = "submit"
        return fields

    @classmethod
    def from_header(cls, fields: dict[str, Any]) -> SubmitRequest:
        try:
            if fields.get("op") != "submit":
                raise ValueError(f"not a submission: {fields.get('op')!r}")
            recipients = tuple(SubmitRecipient(**r) for r in fields.get("recipients", ()))
            values = {k: v for k, v in fields.items() if k not in ("op", "recipients")}
            made = cls(recipients=recipients, **values)
            _check(made)
            return made
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed submission: {exc}") from None


class SubmitError(Exception):
    """The service refused the message; code/dsn/text are Postfix's reply."""

    def __init__(self, code: int, dsn: str, text: str) -> None:
        self.code, self.dsn, self.text = code, dsn, text
        super().__init__(f"{code} {dsn} {text}")

    @property
    def temporary(self) -> bool:
        return self.code < 500


def accepted(queue_id: str) -> dict[str, Any]:
    """The reply header for a queued message."""
    return {"op": "reply", "status": OK, "queue_id": queue_id}


def refused(code: int, dsn: str, text: str) -> dict[str, Any]:
    """The reply header for a refused message."""
    return {"op": "reply", "status": "error", "code": code, "dsn": dsn, "text": text}


def submit(path: str, req: SubmitRequest, content: bytes, *, timeout: float = 300.0) -> str:
    """Send the message to the service at PATH; its queue ID, or SubmitError."""
    reply = request(path, req.to_header(), content, timeout=timeout).header
    if reply.get("op") != "reply":
        raise ProtocolError(f"unexpected reply: {reply.get('op')!r}")
    if reply.get("status") == OK and isinstance(reply.get("queue_id"), str):
        return str(reply["queue_id"])
    try:
        raise SubmitError(int(reply["code"]), str(reply["dsn"]), str(reply["text"]))
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"malformed reply: {reply!r}") from None


def _check(made: SubmitRequest) -> None:
    if made.sender is not None and not isinstance(made.sender, str):
        raise TypeError("sender must be a string or null")
    for recipient in made.recipients:
        if not isinstance(recipient.address, str):
            raise TypeError("recipient address must be a string")
    if not isinstance(made.attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in made.attributes.items()
    ):
        raise TypeError("attributes must map strings to strings")
    flags = made.trace_flags
    if not isinstance(flags, int) or isinstance(flags, bool) or not 0 <= flags <= TRACE_FLAGS_MAX:
        raise ValueError(f"bad trace flags {flags!r}")
