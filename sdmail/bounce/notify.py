"""Sending the notices a message's status logs call for (Postfix's bounce_notify,
bounce_warn and bounce_trace).

`send_delay` warns the sender of the recipients in `defer/QUEUEID` (those with no
NOTIFY or NOTIFY=DELAY; the log stays, mailq shows it): `sender delay notification`.
`send_trace` reports `trace/QUEUEID`: to a `sendmail -v`/`-bv` sender every
recipient's result (Mail Delivery Status Report), else the recipients that asked
for NOTIFY=SUCCESS (Successful Mail Delivery Report): `sender delivery status
notification`.  Both return only the original's headers unless RET=FULL.

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
from dataclasses import dataclass, field

from sdmail.bounce.notice import (
    DELAY,
    DOUBLE_BOUNCE,
    NON_DELIVERY,
    POSTMASTER_COPY,
    POSTMASTER_DELAY,
    STATUS_REPORT,
    SUCCESS,
    Failure,
    Kind,
    Original,
    Timing,
    is_eight_bit,
    notice,
)
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
    notify_classes: tuple[str, ...] = ()
    double_bounce_sender: str = "double-bounce"
    bounce_notice_recipient: str = "postmaster"
    delay_notice_recipient: str = "postmaster"
    double_bounce_notice_recipient: str = field(
        default="postmaster", metadata={"parameter": "2bounce_notice_recipient"}
    )


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
        return self._send(
            _NON_DELIVERY, queue, queue_id, envelope, now=time.time() if now is None else now
        )

    def send_delay(
        self,
        queue: QueueName,
        queue_id: str,
        envelope: Envelope,
        *,
        timing: Timing,
        now: float | None = None,
    ) -> str | None:
        """Warn ENVELOPE's sender that the recipients in defer/QUEUE_ID are still being
        retried (the log is kept: it is what mailq shows).  None when no notice was due."""
        return self._send(
            _DELAY,
            queue,
            queue_id,
            envelope,
            now=time.time() if now is None else now,
            timing=timing,
        )

    def send_trace(
        self, queue: QueueName, queue_id: str, envelope: Envelope, *, now: float | None = None
    ) -> str | None:
        """Send what trace/QUEUE_ID holds, then remove that log: the delivery status report
        `sendmail -v`/`-bv` asked for (ENVELOPE's trace flags), else the success notice of
        DSN NOTIFY=SUCCESS.  None when no notice was due."""
        flow = _STATUS_REPORT if envelope.trace_flags else _SUCCESS
        return self._send(flow, queue, queue_id, envelope, now=time.time() if now is None else now)

    def _send(
        self,
        flow: _Flow,
        queue: QueueName,
        queue_id: str,
        envelope: Envelope,
        *,
        now: float,
        timing: Timing | None = None,
    ) -> str | None:
        settings = self.settings
        records = bounce_log.read(settings.queue_directory, flow.log, queue_id)
        if not records:
            return None
        if envelope.sender == "":
            if flow is _NON_DELIVERY and "2bounce" in settings.notify_classes:
                everything = _reported(records, envelope.recipients, _EVERY_FAILURE)
                self._postmaster_copy(
                    DOUBLE_BOUNCE, settings.double_bounce_notice_recipient, "non-delivery",
                    queue=queue, queue_id=queue_id, envelope=envelope, reported=everything,
                    now=now,
                )  # fmt: skip
            else:
                msg_info(queue_id, f"{flow.name} notification to the null sender discarded")
            self._done(flow, queue_id)
            return None
        reported = _reported(records, envelope.recipients, flow)
        if not reported:
            self._done(flow, queue_id)
            return None
        original = _original(self.spool, settings, queue, queue_id, envelope, kind=flow.kind)
        timing = timing or Timing()
        text = notice(
            flow.kind, original, reported, myhostname=settings.myhostname, now=now, timing=timing
        )
        try:
            accepted = self._submit("", envelope.sender, envelope, text, now)
        except CleanupError as exc:
            if exc.temporary:
                raise BounceError(f"cannot queue a {flow.name} notification: {exc}") from None
            msg_warning(queue_id, f"sender {flow.name} notification not sent: {exc}")
            self._done(flow, queue_id)
            return None
        msg_info(queue_id, f"sender {flow.name} notification: {accepted}")
        copy = _POSTMASTER_COPIES.get(flow.name)
        if copy is not None and copy[0] in settings.notify_classes:
            everything = _reported(records, envelope.recipients, _EVERY_FAILURE)
            recipient = getattr(settings, copy[2])
            self._postmaster_copy(
                copy[1], recipient, flow.name, queue=queue, queue_id=queue_id,
                envelope=envelope, reported=everything, now=now, timing=timing,
            )  # fmt: skip
        self._done(flow, queue_id)
        return accepted

    def _submit(self, sender: str, to: str, envelope: Envelope, text: bytes, now: float) -> str:
        submission = Submission(
            sender=sender,
            recipients=(Recipient(to),),
            origin=Origin.NOTICE,
            body_type=BodyType.EIGHT_BIT_MIME if is_eight_bit(text) else None,
            smtputf8=envelope.smtputf8,
            arrival=now,
        )
        return self.cleanup.submit(submission, text).queue_id

    def _postmaster_copy(
        self,
        kind: Kind,
        to: str,
        what: str,
        *,
        queue: QueueName,
        queue_id: str,
        envelope: Envelope,
        reported: list[Failure],
        now: float,
        timing: Timing | None = None,
    ) -> None:
        """A notify_classes copy for the postmaster, from double_bounce_sender so that it
        can never bounce (qmgr discards mail to that address); best effort."""
        if not reported:
            return
        settings = self.settings
        original = _original(self.spool, settings, queue, queue_id, envelope, kind=kind)
        text = notice(
            kind, original, reported, myhostname=settings.myhostname, now=now,
            timing=timing or Timing(), to=to,
        )  # fmt: skip
        try:
            accepted = self._submit(settings.double_bounce_sender, to, envelope, text, now)
        except CleanupError as exc:
            msg_warning(queue_id, f"postmaster {what} notification not sent: {exc}")
            return
        msg_info(queue_id, f"postmaster {what} notification: {accepted}")

    def _done(self, flow: _Flow, queue_id: str) -> None:
        if flow.remove_log:
            bounce_log.remove(self.settings.queue_directory, queue_id, (flow.log,))


@dataclass(frozen=True)
class _Flow:
    """One kind of notice: the log it reports, whom it reports, and what it is called."""

    name: str  # as logged: `sender NAME notification: NEWID`
    kind: Kind
    log: QueueName
    wanted: Notify  # the NOTIFY flag a recipient needs (NOTIFY not given: DEFAULT_NOTIFY)
    remove_log: bool


# Without NOTIFY, a sender hears of failures and delays, as classic bounces had it.
DEFAULT_NOTIFY = Notify.FAILURE | Notify.DELAY
_NON_DELIVERY = _Flow("non-delivery", NON_DELIVERY, QueueName.BOUNCE, Notify.FAILURE, True)
_DELAY = _Flow("delay", DELAY, QueueName.DEFER, Notify.DELAY, False)
_SUCCESS = _Flow("delivery status", SUCCESS, QueueName.TRACE, Notify.SUCCESS, True)
# Asked for on the command line: every recipient is reported, whatever its NOTIFY.
_STATUS_REPORT = _Flow("delivery status", STATUS_REPORT, QueueName.TRACE, Notify(0), True)
# The postmaster hears of every failure, whatever the sender asked for.
_EVERY_FAILURE = _Flow("non-delivery", NON_DELIVERY, QueueName.BOUNCE, Notify(0), True)
# A sender notice's postmaster copy: (notify_classes word, kind, its recipient's setting).
_POSTMASTER_COPIES = {
    "non-delivery": ("bounce", POSTMASTER_COPY, "bounce_notice_recipient"),
    "delay": ("delay", POSTMASTER_DELAY, "delay_notice_recipient"),
}


def _reported(
    records: list[bounce_log.StatusRecord], recipients: tuple[Recipient, ...], flow: _Flow
) -> list[Failure]:
    """The records the sender asked to hear of, with each recipient's DSN details."""
    by_address: dict[str, list[Recipient]] = {}
    for recipient in recipients:
        by_address.setdefault(recipient.address, []).append(recipient)
    reported = []
    seen: set[tuple[str, str | None]] = set()
    for record in records:
        match = _matching(by_address.get(record.address, []), record.orig_address)
        notify = (match.notify if match is not None else Notify(0)) or DEFAULT_NOTIFY
        if flow.wanted and flow.wanted not in notify:
            continue
        if flow.log is QueueName.DEFER:
            # The defer log grows at every attempt; the warning names each recipient once.
            if (record.address, record.orig_address) in seen:
                continue
            seen.add((record.address, record.orig_address))
        try:
            status = Status(record.dsn, record.text)
        except ValueError:
            status = Status("5.0.0", record.text)
        reported.append(
            Failure(
                address=record.address,
                status=status,
                orig_address=record.orig_address,
                orcpt=match.orcpt if match is not None else None,
                action=record.action or _ACTIONS[flow.log],
                relay=record.relay,
            )
        )
    return reported


_ACTIONS = {QueueName.BOUNCE: "failed", QueueName.DEFER: "delayed", QueueName.TRACE: "delivered"}


def _matching(candidates: list[Recipient], orig_address: str | None) -> Recipient | None:
    for candidate in candidates:
        if candidate.orig_address == orig_address:
            return candidate
    return candidates[0] if candidates else None


def _original(
    spool: Spool,
    settings: BounceSettings,
    queue: QueueName,
    queue_id: str,
    envelope: Envelope,
    *,
    kind: Kind,
) -> Original:
    """What the notice returns: the whole message for a non-delivery notice (unless
    RET=HDRS), its headers for the others (unless RET=FULL); never more than
    bounce_size_limit."""
    content, headers_only = b"", True
    wants_headers = {
        "message": envelope.ret is DsnRet.HDRS,
        "headers": envelope.ret is not DsnRet.FULL,
        "only headers": True,
        "all": False,
    }[kind.returns]
    try:
        with spool.open(queue, queue_id) as handle:
            queue_file = qfile.read_envelope(handle.fd)
            headers_only = queue_file.content_size > settings.bounce_size_limit or wants_headers
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
        smtputf8=envelope.smtputf8,
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
