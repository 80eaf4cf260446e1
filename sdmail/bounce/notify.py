"""Sending a non-delivery notice for the bounce log of a message (Postfix's bounce_notify).

`Notifier.send_non_delivery` reads the records of `bounce/QUEUEID`, keeps the recipients
the sender wants to hear of (no DSN NOTIFY, or NOTIFY with FAILURE), reads what the
notice returns of the message from its queue file (the whole message up to
bounce_size_limit octets and unless DSN RET=HDRS, else its headers), builds the
notice (notice.py) and queues it through the cleanup library with the null
sender, which is what keeps a notice from ever bouncing back as one.  It logs
`QUEUEID: sender non-delivery notification: NEWID` and removes the bounce log.

A message whose sender is the null address (a notice that bounced) gets no
notice: it is discarded with a log line (Postfix's default notify_classes sends
no double bounce to the postmaster).  A notice with no recipient left to report
is not sent either.  The original is read best effort: a queue file that cannot
be read still gets its sender a notice, without the returned message.

Failure modes: `BounceError` when cleanup could not queue the notice for a
reason that may pass (full disk, a table that failed); the bounce log is then
kept, so a later call sends the notice.  A notice cleanup refuses for good is
logged as a warning and treated as sent, so it cannot hold the message forever.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from sdmail.bounce.notice import Failure, Original, is_eight_bit, non_delivery_notice
from sdmail.cleanup.api import Cleanup, CleanupError, Origin, Submission
from sdmail.core import bounce_log, qfile
from sdmail.core.dsn import Status
from sdmail.core.log import msg_info, msg_warning
from sdmail.core.records import BodyType, DsnRet, Envelope, Notify, QueueName, Recipient
from sdmail.core.spool import Spool, SpoolError

log = logging.getLogger("sdmail.bounce")

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


class BounceError(Exception):
    """The notice could not be queued now; try again later (the bounce log is kept)."""


@dataclass(frozen=True)
class BounceSettings:
    """The parameters of notices; field names are parameter names."""

    myhostname: str
    queue_directory: str
    bounce_size_limit: int


class Notifier:
    """Sends notices through CLEANUP for messages in SPOOL; share one per configuration."""

    def __init__(self, cleanup: Cleanup, spool: Spool, settings: BounceSettings) -> None:
        self.cleanup = cleanup
        self.spool = spool
        self.settings = settings

    def send_non_delivery(
        self, queue: QueueName, queue_id: str, envelope: Envelope, *, now: float | None = None
    ) -> str | None:
        """Tell ENVELOPE's sender about the failures in bounce/QUEUE_ID, then remove that log.

        QUEUE is where the message's queue file is now.  Returns the notice's queue ID,
        or None when no notice was due (an empty log, the null sender, NOTIFY without
        FAILURE).
        """
        settings = self.settings
        now = time.time() if now is None else now
        records = bounce_log.read(settings.queue_directory, QueueName.BOUNCE, queue_id)
        if not records:
            return None
        if envelope.sender == "":
            msg_info(queue_id, "non-delivery notification to the null sender discarded")
            _remove_log(settings, queue_id)
            return None
        failures = _reported(records, envelope.recipients)
        if not failures:
            _remove_log(settings, queue_id)
            return None
        original = _original(self.spool, settings, queue, queue_id, envelope)
        notice = non_delivery_notice(original, failures, myhostname=settings.myhostname, now=now)
        submission = Submission(
            sender="",
            recipients=(Recipient(envelope.sender),),
            origin=Origin.NOTICE,
            body_type=BodyType.EIGHT_BIT_MIME if is_eight_bit(notice) else None,
            smtputf8=envelope.smtputf8,
            arrival=now,
        )
        try:
            accepted = self.cleanup.submit(submission, notice)
        except CleanupError as exc:
            if exc.temporary:
                raise BounceError(f"cannot queue a non-delivery notification: {exc}") from None
            msg_warning(queue_id, f"sender non-delivery notification not sent: {exc}")
            _remove_log(settings, queue_id)
            return None
        msg_info(queue_id, f"sender non-delivery notification: {accepted.queue_id}")
        _remove_log(settings, queue_id)
        return accepted.queue_id


def _reported(
    records: list[bounce_log.StatusRecord], recipients: tuple[Recipient, ...]
) -> list[Failure]:
    """The failures the sender asked to hear of, with each recipient's DSN details."""
    by_address: dict[str, list[Recipient]] = {}
    for recipient in recipients:
        by_address.setdefault(recipient.address, []).append(recipient)
    failures = []
    for record in records:
        match = _matching(by_address.get(record.address, []), record.orig_address)
        notify = match.notify if match is not None else Notify(0)
        if notify and Notify.FAILURE not in notify:
            continue
        try:
            status = Status(record.dsn, record.text)
        except ValueError:
            status = Status("5.0.0", record.text)
        failures.append(
            Failure(
                address=record.address,
                status=status,
                orig_address=record.orig_address,
                orcpt=match.orcpt if match is not None else None,
            )
        )
    return failures


def _matching(candidates: list[Recipient], orig_address: str | None) -> Recipient | None:
    for candidate in candidates:
        if candidate.orig_address == orig_address:
            return candidate
    return candidates[0] if candidates else None


def _original(
    spool: Spool, settings: BounceSettings, queue: QueueName, queue_id: str, envelope: Envelope
) -> Original:
    content, headers_only = b"", True
    try:
        with spool.open(queue, queue_id) as handle:
            queue_file = qfile.read_envelope(handle.fd)
            headers_only = (
                queue_file.content_size > settings.bounce_size_limit or envelope.ret is DsnRet.HDRS
            )
            wanted = queue_file.body_offset if headers_only else queue_file.content_size
            content = _read_content(handle.fd, queue_file, wanted)
    except (SpoolError, qfile.CorruptQueueFile, OSError) as exc:
        msg_warning(queue_id, f"cannot return the message in its notice: {exc}")
    if headers_only:
        content = content.rstrip(b"\n") + b"\n" if content.strip() else b""
    found = _MESSAGE_ID.search(_header_block(content))
    message_id = found[1].decode("utf-8", "replace").replace("\n", "").strip() if found else None
    return Original(
        queue_id=queue_id,
        sender=envelope.sender,
        arrival=envelope.arrival_sec + envelope.arrival_usec / 1_000_000,
        content=content,
        headers_only=headers_only,
        message_id=message_id or None,
        envid=envelope.envid,
    )


def _read_content(fd: int, queue_file: qfile.QueueFile, wanted: int) -> bytes:
    pieces: list[bytes] = []
    have = 0
    for piece in qfile.iter_content(fd, queue_file):
        pieces.append(piece)
        have += len(piece)
        if have >= wanted:
            break
    return b"".join(pieces)[:wanted]


def _header_block(content: bytes) -> bytes:
    end = content.find(b"\n\n")
    return content if end < 0 else content[: end + 1]


def _remove_log(settings: BounceSettings, queue_id: str) -> None:
    bounce_log.remove(settings.queue_directory, queue_id, (QueueName.BOUNCE,))
