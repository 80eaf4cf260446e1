"""Forwarding: the addresses an alias or a .forward file lists go back into the queue as a new
message, through the cleanup service (Postfix's local/forward.c).

The new message is the original content with `Received: by $myhostname ($mail_name)` /
`id QUEUEID; DATE` and `Delivered-To: RECIPIENT` on top (the latter is what stops a
forwarding loop the next time round), the same envelope sender (or the `owner-` alias's,
decided by the caller), DSN RET and ENVID, and each new recipient with the original
recipient's NOTIFY and ORCPT. It is submitted with core/mail_stream to
`$socket_directory/cleanup`, origin `forward`; the cleanup service learns who submits from
the kernel.

Failure modes: `forward` never raises; it returns the status to log: `2.0.0 forwarded as
NEWID`, the service's refusal (4.x.x defers, 5.x.x bounces), or 4.3.0 when the service
cannot be reached or answers nonsense.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from sdmail.core.dsn import DsnError, Status
from sdmail.core.ipc import ProtocolError
from sdmail.core.mail_stream import SubmitError, SubmitRecipient, SubmitRequest, submit
from sdmail.core.maildate import mail_date
from sdmail.core.records import Envelope

CLEANUP_SERVICE = "cleanup"
ORIGIN = "forward"


@dataclass(frozen=True)
class Forwarding:
    """Where and how forwarded mail is submitted."""

    socket_directory: str
    myhostname: str
    mail_name: str
    timeout: float
    add_delivered_to: bool


def forwarded_content(
    how: Forwarding, queue_id: str, delivered_to: str, content: bytes, when: float | None = None
) -> bytes:
    """CONTENT with the Received: and Delivered-To: headers forwarding adds."""
    received = (
        f"Received: by {how.myhostname} ({how.mail_name})\n\tid {queue_id}; {mail_date(when)}\n"
    )
    delivered = f"Delivered-To: {delivered_to}\n" if how.add_delivered_to else ""
    return (received + delivered).encode("utf-8", "surrogateescape") + content


def forward(
    how: Forwarding,
    *,
    queue_id: str,
    envelope: Envelope,
    sender: str,
    addresses: Sequence[str],
    notify: int,
    orcpt: str | None,
    delivered_to: str,
    content: bytes,
    trace_flags: int = 0,
) -> Status:
    """Submit CONTENT to ADDRESSES as a new message; the status to log for the recipient."""
    request = SubmitRequest(
        sender=sender,
        recipients=tuple(SubmitRecipient(a, orcpt=orcpt, notify=notify) for a in addresses),
        ret=envelope.ret.value if envelope.ret is not None else None,
        envid=envelope.envid,
        body_type=envelope.body_type.value if envelope.body_type is not None else None,
        smtputf8=envelope.smtputf8,
        origin=ORIGIN,
        attributes={"orig_queue_id": queue_id},
        trace_flags=trace_flags,
    )
    data = forwarded_content(how, queue_id, delivered_to, content)
    path = os.path.join(how.socket_directory, CLEANUP_SERVICE)
    try:
        new_id = submit(path, request, data, timeout=how.timeout)
    except SubmitError as exc:
        return _refusal(exc)
    except ProtocolError as exc:
        return Status("4.3.0", f"mail forwarding failed: cleanup service: {exc}")
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Status("4.3.0", f"mail forwarding failed: cleanup service unavailable: {reason}")
    return Status("2.0.0", f"forwarded as {new_id}")


def _refusal(exc: SubmitError) -> Status:
    try:
        status = Status(exc.dsn, exc.text)
    except DsnError:
        status = Status("4.3.0" if exc.temporary else "5.3.0", exc.text)
    if status.is_success:
        return Status("4.3.0", exc.text)
    return status
