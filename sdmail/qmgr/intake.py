"""Taking one queue file into the active queue (Postfix's qmgr_active_feed and qmgr_message_alloc).

`take(...)` moves a ready file from incoming/ or deferred/ into active/ and reads
it, in this order: the file must not have a time stamp in the future (a deferred
message not due yet, or a message an agent of an earlier qmgr still works on),
unless the scan ignores time stamps (the `A` trigger); it is renamed into
active/; opened (no links, regular file: else it goes to corrupt/); locked
EXCLUSIVELY without waiting (a delivery agent holds a shared lock while it works:
if one still does, the file goes back to incoming/ with its time stamp 60 s
ahead, `QUEUEID: skipped, still being delivered`, Postfix's rule); its envelope
decoded (a file that does not decode goes to corrupt/ with Postfix's warning
`saving corrupt file "ID" from queue "active" to queue "corrupt"`).  A message
taken from deferred/ loses its defer log, so that mailq shows no stale reason
during the retry.  Then qmgr logs `QUEUEID: from=<sender>, size=N, nrcpt=N
(queue active)`, resolves each recipient not yet done through trivial-rewrite,
and releases the lock: the agents take theirs.

A message is read in batches of at most qmgr_message_recipient_limit recipients
still to deliver (Postfix's rule): `take` reads the first batch and keeps where
the next one begins in the message; when every recipient of a batch has a result,
`read_more` reads the next one from there (no lock: the file stays in active/,
and qmgr's own marks and the agents' touch different records).  After the last
batch, `read_all_recipients` gives the message its whole recipient list back for
the notices at the end, which take each recipient's DSN details from it.

Some recipients are settled here, under the lock, without an agent: mail to the
local `$double_bounce_sender` is discarded (done, logged as sent with
`undeliverable postmaster notification discarded`), an address that resolves to
the `error` transport bounces with the next hop's text (as Postfix's error(8)
agent would), one for a transport in defer_transports is deferred with `4.3.2
deferred transport` unless a flush (`postqueue -f`, `sendmail -q`) took the
message in, and one the resolver cannot handle now is deferred with `4.3.0
address resolver failure`.

Blocking: call it in a worker thread.  Failure modes: none raised for the file's
content or kind (they are outcomes); `SpoolError` and `OSError` from the queue
directories themselves (a directory that cannot be opened) pass through.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from sdmail.core import bounce_log, qfile, spool
from sdmail.core.dsn import Status
from sdmail.core.log import msg_info
from sdmail.core.match_list import MatchListError
from sdmail.core.records import QueueName
from sdmail.core.tables.table import TableError
from sdmail.qmgr.message import ActiveMessage, StatusLogs, Todo
from sdmail.trivial_rewrite.resolve import (
    ERROR_TRANSPORT,
    AddressClass,
    Resolved,
    ResolveError,
)

log = logging.getLogger("sdmail.qmgr")

STILL_BEING_DELIVERED_DELAY = 60.0  # Postfix's: how long a locked file rests in incoming/
FUTURE_SLACK = 1.0  # a time stamp up to this far ahead counts as now (clock granularity)
RESOLVER_FAILURE = Status("4.3.0", "address resolver failure")
DOUBLE_BOUNCE_DISCARDED = Status("2.0.0", "undeliverable postmaster notification discarded")
DEFERRED_TRANSPORT = Status("4.3.2", "deferred transport")
_LEADING_DSN = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})\s+(.*)", re.DOTALL)

Resolve = Callable[[str], Resolved]


class Outcome(enum.Enum):
    TAKEN = "taken"  # in active/, read, unlocked: schedule it
    NOT_DUE = "not due"  # its time stamp is in the future: left where it was
    GONE = "gone"  # it was not there (any more)
    LOCKED = "locked"  # an agent still works on it: back in incoming/, 60 s ahead
    CORRUPT = "corrupt"  # moved to corrupt/


@dataclass(frozen=True)
class Intake:
    outcome: Outcome
    message: ActiveMessage | None = None
    due: float | None = None  # wall-clock time the file will be ready (NOT_DUE, LOCKED)


@dataclass(frozen=True)
class IntakeSettings:
    double_bounce_sender: str
    recipient_limit: int  # qmgr_message_recipient_limit: recipients read at once
    defer_transports: frozenset[str]  # delivered only when a flush takes the message in


def take(
    queue: spool.Spool,
    from_queue: QueueName,
    queue_id: str,
    *,
    now: float,
    ignore_time: bool,
    flush: bool = False,
    resolve: Resolve,
    logs: StatusLogs,
    settings: IntakeSettings,
) -> Intake:
    """Move QUEUE_ID from FROM_QUEUE into active/ and read it; see the module docstring.

    FLUSH: a flush takes the message in, so defer_transports do not hold it back."""
    try:
        st = os.stat(queue.path / from_queue.value / queue_id, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return Intake(Outcome.GONE)
    if not ignore_time and st.st_mtime > now + FUTURE_SLACK:
        return Intake(Outcome.NOT_DUE, due=st.st_mtime)
    try:
        queue.move(queue_id, from_queue, QueueName.ACTIVE)
    except spool.NoSuchQueueFile:
        return Intake(Outcome.GONE)
    try:
        handle = queue.open(QueueName.ACTIVE, queue_id, writable=True)
    except spool.NoSuchQueueFile:
        return Intake(Outcome.GONE)
    except spool.NotAQueueFile as exc:
        log.warning("%s", exc)
        return _quarantine(queue, queue_id)
    with handle:
        try:
            spool.lock_exclusive(handle)
        except spool.QueueFileLocked:
            return _still_being_delivered(queue, handle, now)
        try:
            queue_file = qfile.read_envelope(handle.fd, recipient_limit=settings.recipient_limit)
        except qfile.CorruptQueueFile as exc:
            log.warning("%s: %s", queue_id, exc)
            return _quarantine(queue, queue_id)
        if from_queue is QueueName.DEFERRED:
            bounce_log.remove(queue.path, queue_id, (QueueName.DEFER,))
        message = _message(queue_id, queue_file, now)
        message.flushed = flush
        _resolve_all(message, handle, resolve, logs, settings)
    return Intake(Outcome.TAKEN, message)


def _message(queue_id: str, queue_file: qfile.QueueFile, now: float) -> ActiveMessage:
    envelope = queue_file.envelope
    msg_info(
        queue_id,
        f"from=<{envelope.sender}>, size={queue_file.content_size},"
        f" nrcpt={queue_file.recipient_count} (queue active)",
    )
    message = ActiveMessage(queue_id, envelope, queue_file.content_size, active_at=now)
    _batch(message, queue_file)
    return message


def _batch(message: ActiveMessage, queue_file: qfile.QueueFile) -> None:
    message.envelope = queue_file.envelope
    message.unread_offset = queue_file.unread_offset
    message.todo = []
    message.outstanding = sum(1 for r in queue_file.envelope.recipients if not r.done)


def read_more(
    queue: spool.Spool,
    message: ActiveMessage,
    *,
    resolve: Resolve,
    logs: StatusLogs,
    settings: IntakeSettings,
) -> None:
    """Read MESSAGE's next batch of recipients from its file in active/ and resolve them.

    Raises SpoolError (the file is gone or not a queue file), CorruptQueueFile or
    OSError; MESSAGE is then unchanged.
    """
    assert message.unread_offset is not None
    with queue.open(QueueName.ACTIVE, message.queue_id, writable=True) as handle:
        queue_file = qfile.read_envelope(
            handle.fd,
            recipients_from=message.unread_offset,
            recipient_limit=settings.recipient_limit,
        )
        _batch(message, queue_file)
        _resolve_all(message, handle, resolve, logs, settings)


def read_all_recipients(queue: spool.Spool, message: ActiveMessage) -> None:
    """Put every recipient of MESSAGE's file in active/ (done or not) into its envelope.

    Raises what `read_more` raises; MESSAGE is then unchanged.
    """
    with queue.open(QueueName.ACTIVE, message.queue_id) as handle:
        message.envelope = qfile.read_envelope(handle.fd).envelope


def _resolve_all(
    message: ActiveMessage,
    handle: spool.QueueFileHandle,
    resolve: Resolve,
    logs: StatusLogs,
    settings: IntakeSettings,
) -> None:
    for recipient in message.envelope.recipients:
        if recipient.done or recipient.offset is None:
            continue
        try:
            resolved = resolve(recipient.address)
        except (ResolveError, TableError, MatchListError) as exc:
            log.warning("%s: cannot resolve <%s>: %s", message.queue_id, recipient.address, exc)
            logs.deferred(message, recipient, RESOLVER_FAILURE)
            message.outstanding -= 1
            continue
        if resolved.transport in settings.defer_transports and not message.flushed:
            logs.deferred(message, recipient, DEFERRED_TRANSPORT)
            message.outstanding -= 1
        elif _is_double_bounce(resolved, settings.double_bounce_sender):
            qfile.mark_done(handle, recipient.offset)
            logs.sent(message, recipient, DOUBLE_BOUNCE_DISCARDED)
            message.outstanding -= 1
        elif resolved.transport == ERROR_TRANSPORT:
            logs.bounced(message, recipient, error_transport_status(resolved.nexthop))
            qfile.mark_done(handle, recipient.offset)
            message.outstanding -= 1
        else:
            message.todo.append(
                Todo(recipient, resolved.recipient, resolved.transport, resolved.nexthop)
            )


def _is_double_bounce(resolved: Resolved, double_bounce_sender: str) -> bool:
    if resolved.addr_class is not AddressClass.LOCAL:
        return False
    local = resolved.recipient.rpartition("@")[0] or resolved.recipient
    return local.lower() == double_bounce_sender.lower()


def error_transport_status(nexthop: str) -> Status:
    """What the error transport answers: the next hop's `X.Y.Z text`, or 5.0.0 and the text."""
    match = _LEADING_DSN.fullmatch(nexthop.strip())
    if match is not None:
        try:
            status = Status(match[1], match[2])
        except ValueError:
            pass
        else:
            if status.is_permanent:
                return status
    return Status("5.0.0", nexthop.strip() or "mail delivery error")


def _still_being_delivered(queue: spool.Spool, handle: spool.QueueFileHandle, now: float) -> Intake:
    due = now + STILL_BEING_DELIVERED_DELAY
    msg_info(handle.queue_id, "skipped, still being delivered")
    os.utime(handle.fd, (due, due))
    queue.move(handle.queue_id, QueueName.ACTIVE, QueueName.INCOMING)
    return Intake(Outcome.LOCKED, due=due)


def _quarantine(queue: spool.Spool, queue_id: str) -> Intake:
    log.warning('saving corrupt file "%s" from queue "active" to queue "corrupt"', queue_id)
    try:
        queue.quarantine(queue_id, QueueName.ACTIVE)
    except spool.NoSuchQueueFile:
        return Intake(Outcome.GONE)
    return Intake(Outcome.CORRUPT)
