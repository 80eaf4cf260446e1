"""The queue listing: what one queued message looks like to mailq, how the queue is read
into such entries, and how they travel from the showq service to postqueue.

`scan_queue` is the one reader of the queue for listings, used by the showq service and
by postqueue when root lists the queue directly because showq is down.  It walks the
queues in Postfix's order (maildrop, active, incoming, deferred, hold), one file at a
time (an entry is built and handed on before the next file is opened: never the whole
queue in memory), reads each file's envelope with `qfile.read_envelope` (the content is
stepped over), and takes the deferral reasons from the message's defer log
(`core/bounce_log`).  An entry holds the queue name and ID, the arrival time, the size
(the content size of a queue file, the file size of a maildrop file, as Postfix), the
sender, the forced-expire flag (the owner-execute bit of the file's mode, Postfix's
MAIL_QUEUE_STAT_EXPIRE, which `postsuper -e` sets) and the recipients not yet done,
each with its original address and its latest delay reason.  As Postfix's showq lists
the defer log first, recipients with a reason come first, in the order the log first
names them, then the others in queue-file order.  Addresses are internal (unquoted)
and the null sender is ""; quoting for display is the client's business.

The protocol (core/ipc frames on `$socket_directory/showq`): the client sends
`{"op": "showq"}`; the service answers `{"op": "showq", "status": "ok"}` or
`{"op": "showq", "status": "refused", "text": ...}` (the caller, known from
SO_PEERCRED, is not in authorized_mailq_users), then per message one `message` frame
with the first recipients and `more: true` while `recipients` frames follow, and at the
end `{"op": "end", "messages": N}`.  A listing without its end frame was cut short.

Failure modes: `scan_queue` never raises for a file it cannot use: a file that vanished
meanwhile (moved by qmgr) is skipped silently, one that is not a queue file or cannot be
read is skipped and reported to ON_SKIP (queue, queue ID, why); a queue directory that
cannot be read is reported the same way with an empty queue ID.  `request_listing`
raises `ShowqUnavailable` (with the errno) when nothing answers at the socket (or the
service closes the connection before it answers), `ShowqRefused` with the service's
text, and `ShowqProtocolError` for a reply that is not the protocol; iterating a
`Listing` raises `ShowqProtocolError` for a malformed or cut-short stream and OSError
(a timeout) from the socket.  `send_listing` passes on OSError from the socket (the
client went away).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final

from sdmail.core import bounce_log, qfile
from sdmail.core.ipc import ConnectionClosed, ProtocolError, recv_frame, send_frame
from sdmail.core.records import QueueName, Recipient
from sdmail.core.spool import NoSuchQueueFile, Spool, SpoolError

SHOWQ_OP: Final = "showq"
STATUS_OK: Final = "ok"
STATUS_REFUSED: Final = "refused"

#: Postfix's showq order.
LISTING_ORDER: Final = (
    QueueName.MAILDROP,
    QueueName.ACTIVE,
    QueueName.INCOMING,
    QueueName.DEFERRED,
    QueueName.HOLD,
)
_LISTED_NAMES: Final = frozenset(queue.value for queue in LISTING_ORDER)

# Recipients travel in frames of at most about this many octets, far below
# ipc.MAX_HEADER; one string longer than _MAX_FIELD is cut (a reason text a
# remote server made huge), so that any one recipient fits a frame.
_FRAME_BUDGET: Final = 256 * 1024
_MAX_FIELD: Final = 64 * 1024
_FORCED_EXPIRE_BIT: Final = stat.S_IXUSR

SkipHandler = Callable[[QueueName, str, str], None]


class ShowqError(Exception):
    """The queue listing could not be had from the showq service."""


class ShowqUnavailable(ShowqError):
    """Nothing answers at the showq socket; `errno` says why (None: closed unanswered)."""

    def __init__(self, message: str, errno_value: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_value


class ShowqRefused(ShowqError):
    """The service refused the caller; the text is the reason to show."""


class ShowqProtocolError(ShowqError):
    """The service's answer is not the showq protocol (or was cut short)."""


@dataclass(frozen=True)
class RecipientEntry:
    address: str
    orig_address: str | None = None
    delay_reason: str | None = None


@dataclass(frozen=True)
class QueueEntry:
    """One queued message as mailq shows it."""

    queue_name: str
    queue_id: str
    arrival_time: int
    message_size: int
    forced_expire: bool
    sender: str
    recipients: tuple[RecipientEntry, ...] = ()


# --------------------------------------------------------------------------------------
# Reading the queue
# --------------------------------------------------------------------------------------
def _ignore_skip(_queue: QueueName, _queue_id: str, _why: str) -> None:
    return None


def scan_queue(
    queue_directory: str | os.PathLike[str], on_skip: SkipHandler | None = None
) -> Iterator[QueueEntry]:
    """The entries of every message in the queue, queue by queue in LISTING_ORDER."""
    skip = on_skip or _ignore_skip
    with Spool(queue_directory) as spool:
        for queue in LISTING_ORDER:
            try:
                for queue_id in spool.list_queue(queue):
                    entry = read_entry(spool, queue, queue_id, skip)
                    if entry is not None:
                        yield entry
            except (SpoolError, OSError) as exc:
                skip(queue, "", f"cannot read queue {queue}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def read_entry(
    spool: Spool, queue: QueueName, queue_id: str, on_skip: SkipHandler | None = None
) -> QueueEntry | None:
    """The entry of QUEUE/QUEUE_ID, or None when it vanished or cannot be used."""
    skip = on_skip or _ignore_skip
    try:
        handle = spool.open(queue, queue_id)
    except NoSuchQueueFile:
        return None  # moved on (qmgr, postsuper) since the directory was read
    except SpoolError as exc:
        skip(queue, queue_id, str(exc))
        return None
    with handle:
        try:
            status = os.fstat(handle.fileno())
            queue_file = qfile.read_envelope(handle.fileno())
        except qfile.CorruptQueueFile as exc:
            skip(queue, queue_id, f"{queue}/{queue_id}: {exc}")
            return None
        except OSError as exc:
            skip(queue, queue_id, f"{queue}/{queue_id}: {_reason(exc)}")
            return None
    envelope = queue_file.envelope
    maildrop = queue == QueueName.MAILDROP
    reasons = {} if maildrop else _delay_reasons(spool.path, queue_id)
    return QueueEntry(
        queue_name=queue.value,
        queue_id=queue_id,
        arrival_time=envelope.arrival_sec or int(status.st_mtime),
        message_size=status.st_size if maildrop else queue_file.content_size,
        forced_expire=bool(status.st_mode & _FORCED_EXPIRE_BIT),
        sender=envelope.sender,
        recipients=_pending_recipients(envelope.recipients, reasons),
    )


def _delay_reasons(queue_directory: Path, queue_id: str) -> dict[str, str]:
    """Address -> its latest deferral text, in the order the defer log first names them."""
    try:
        records = bounce_log.read(queue_directory, QueueName.DEFER, queue_id)
    except OSError:
        return {}  # a log that cannot be read only costs the reasons
    reasons: dict[str, str] = {}
    for record in records:
        if isinstance(record.address, str) and isinstance(record.text, str):
            reasons[record.address] = record.text
    return reasons


def _pending_recipients(
    recipients: Iterable[Recipient], reasons: dict[str, str]
) -> tuple[RecipientEntry, ...]:
    pending = [r for r in recipients if not r.done]
    order = {address: index for index, address in enumerate(reasons)}
    with_reason = sorted((r for r in pending if r.address in order), key=lambda r: order[r.address])
    without = [r for r in pending if r.address not in order]
    return tuple(
        RecipientEntry(r.address, r.orig_address, reasons.get(r.address))
        for r in [*with_reason, *without]
    )


# --------------------------------------------------------------------------------------
# The wire: entries <-> frame headers
# --------------------------------------------------------------------------------------
def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= _MAX_FIELD else text[:_MAX_FIELD]


def _recipient_fields(recipient: RecipientEntry) -> dict[str, str]:
    fields = {"address": _cut(recipient.address) or ""}
    if recipient.orig_address is not None:
        fields["orig_address"] = _cut(recipient.orig_address) or ""
    if recipient.delay_reason is not None:
        fields["delay_reason"] = _cut(recipient.delay_reason) or ""
    return fields


def _recipient_batches(recipients: Iterable[RecipientEntry]) -> Iterator[list[dict[str, str]]]:
    batch: list[dict[str, str]] = []
    size = 0
    for recipient in recipients:
        fields = _recipient_fields(recipient)
        cost = 64 + sum(len(value) for value in fields.values())
        if batch and size + cost > _FRAME_BUDGET:
            yield batch
            batch, size = [], 0
        batch.append(fields)
        size += cost
    yield batch


def entry_frames(entry: QueueEntry) -> Iterator[dict[str, Any]]:
    """The frame headers that carry ENTRY: a `message` frame, then `recipients` frames."""
    batches = list(_recipient_batches(entry.recipients))
    for index, batch in enumerate(batches):
        more = index + 1 < len(batches)
        if index == 0:
            yield {
                "op": "message",
                "queue_name": entry.queue_name,
                "queue_id": entry.queue_id,
                "arrival_time": entry.arrival_time,
                "message_size": entry.message_size,
                "forced_expire": entry.forced_expire,
                "sender": _cut(entry.sender),
                "recipients": batch,
                "more": more,
            }
        else:
            yield {"op": "recipients", "recipients": batch, "more": more}


def status_ok() -> dict[str, Any]:
    return {"op": SHOWQ_OP, "status": STATUS_OK}


def status_refused(text: str) -> dict[str, Any]:
    return {"op": SHOWQ_OP, "status": STATUS_REFUSED, "text": text}


def end_frame(messages: int) -> dict[str, Any]:
    return {"op": "end", "messages": messages}


def send_listing(sock: socket.socket, entries: Iterable[QueueEntry]) -> int:
    """Stream ENTRIES and the end frame to SOCK (after `status_ok`); the number sent."""
    count = 0
    for entry in entries:
        for header in entry_frames(entry):
            send_frame(sock, header)
        count += 1
    send_frame(sock, end_frame(count))
    return count


def _malformed(why: str) -> ShowqProtocolError:
    return ShowqProtocolError(f"malformed showq server response: {why}")


def _field(fields: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = fields.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _malformed(f"{name}: {value!r}")
    return value


def _optional_text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise _malformed(f"{name}: {value!r}")
    return value


def _recipients_from(fields: dict[str, Any]) -> list[RecipientEntry]:
    raw = _field(fields, "recipients", list)
    recipients = []
    for item in raw:
        if not isinstance(item, dict):
            raise _malformed(f"recipient: {item!r}")
        recipients.append(
            RecipientEntry(
                _field(item, "address", str),
                _optional_text(item, "orig_address"),
                _optional_text(item, "delay_reason"),
            )
        )
    return recipients


def entry_from_frames(first: dict[str, Any], following: Iterator[dict[str, Any]]) -> QueueEntry:
    """The entry whose `message` frame is FIRST; FOLLOWING yields its `recipients` frames."""
    queue_name = _field(first, "queue_name", str)
    if queue_name not in _LISTED_NAMES:
        raise _malformed(f"queue_name: {queue_name!r}")
    recipients = _recipients_from(first)
    more = _field(first, "more", bool)
    while more:
        fields = next(following, None)
        if fields is None:
            raise _malformed("the listing ends inside a message")
        if fields.get("op") != "recipients":
            raise _malformed(f"expected recipients, got {fields.get('op')!r}")
        recipients.extend(_recipients_from(fields))
        more = _field(fields, "more", bool)
    size = _field(first, "message_size", int)
    arrival = _field(first, "arrival_time", int)
    if size < 0 or arrival < 0:
        raise _malformed(f"negative size or time: {size}, {arrival}")
    return QueueEntry(
        queue_name=queue_name,
        queue_id=_field(first, "queue_id", str),
        arrival_time=arrival,
        message_size=size,
        forced_expire=_field(first, "forced_expire", bool),
        sender=_field(first, "sender", str),
        recipients=tuple(recipients),
    )


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------
class Listing:
    """An answered showq request: iterate it for the entries (once), then close it."""

    def __init__(self, sock: socket.socket, reader: BinaryIO) -> None:
        self._sock = sock
        self._reader = reader

    def handshake(self, path: str | os.PathLike[str]) -> None:
        """Send the request and read the service's answer (see request_listing)."""
        try:
            send_frame(self._sock, {"op": SHOWQ_OP})
            answer = recv_frame(self._reader, max_payload=0).header
        except ConnectionClosed:
            raise ShowqUnavailable(f"{path}: closed without an answer") from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ShowqUnavailable(f"{path}: {exc.strerror}", errno.ECONNRESET) from None
        except ProtocolError as exc:
            raise _malformed(str(exc)) from None
        if answer.get("op") != SHOWQ_OP:
            raise _malformed(f"unexpected {answer.get('op')!r}")
        if answer.get("status") == STATUS_REFUSED:
            raise ShowqRefused(str(answer.get("text") or "refused"))
        if answer.get("status") != STATUS_OK:
            raise _malformed(f"status {answer.get('status')!r}")

    def _headers(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                frame = recv_frame(self._reader, max_payload=0)
            except ConnectionClosed:
                raise _malformed("the listing was cut short") from None
            except ProtocolError as exc:
                raise _malformed(str(exc)) from None
            yield frame.header

    def __iter__(self) -> Iterator[QueueEntry]:
        headers = self._headers()
        for fields in headers:
            op = fields.get("op")
            if op == "end":
                return
            if op != "message":
                raise _malformed(f"unexpected {op!r}")
            yield entry_from_frames(fields, headers)

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> Listing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def request_listing(path: str | os.PathLike[str], *, timeout: float | None = None) -> Listing:
    """Ask the showq service at PATH for the listing; the open Listing once it agreed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise ShowqUnavailable(f"{path}: {exc.strerror or exc}", exc.errno) from None
    listing = Listing(sock, sock.makefile("rb"))
    try:
        listing.handshake(path)
    except BaseException:
        listing.close()
        raise
    return listing
