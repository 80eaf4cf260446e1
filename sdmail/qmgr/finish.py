"""What becomes of a message once every recipient qmgr held has a result (qmgr_active_done).

In Postfix's order:

1. If some recipients were deferred and the message is too old (its arrival plus
   maximal_queue_lifetime, or bounce_queue_lifetime for a notice, i.e. the null
   sender), it expires: `QUEUEID: from=<sender>, status=expired, returned to
   sender` is logged, each deferred recipient's last reason goes to the bounce
   log, and the recipients are marked done (so that a crash from here on can only
   repeat the notice, never the delivery).
2. If the bounce log holds failures, the sender gets a non-delivery notice
   (sdmail/bounce); a notice that cannot be queued now keeps the message (and its
   bounce log) in deferred/ to try again.
3. If the trace log holds records, the sender gets the report they are for
   (`sendmail -v`/`-bv`: Mail Delivery Status Report; DSN NOTIFY=SUCCESS:
   Successful Mail Delivery Report).  A `-v` message that stays in the queue has
   its trace flags cleared in the file once its report is queued: only its first
   attempt is reported.  A report that cannot be queued now keeps the message,
   like a notice.
4. If recipients remain deferred and the message's delay warning time (Postfix's
   `W`, set by cleanup from delay_warning_time) has come, the sender gets one
   delay notice and the time becomes -1 in the file (sent).
5. If recipients remain deferred, the file's time stamp is set to now plus its
   age clamped to minimal_backoff_time..maximal_backoff_time, and it is renamed
   into deferred/: a deferred scan takes it again when that time has come.
6. Otherwise the queue file and its logs are removed: `QUEUEID: removed`.

Blocking: call it in a worker thread.  Failure modes: `SpoolError` or `OSError`
when the queue file cannot be moved, changed or removed (the message then stays
in active/, where the next qmgr start finds it).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from sdmail.bounce.notice import Timing
from sdmail.bounce.notify import BounceError, Notifier
from sdmail.core import bounce_log, qfile, spool
from sdmail.core.log import msg_info, msg_warning
from sdmail.core.records import QueueName
from sdmail.qmgr.message import ActiveMessage, StatusLogs
from sdmail.qmgr.schedule import is_expired, retry_delay


@dataclass(frozen=True)
class FinishSettings:
    """The parameters of the end of a delivery round; field names are parameter names."""

    minimal_backoff_time: int
    maximal_backoff_time: int
    maximal_queue_lifetime: int
    bounce_queue_lifetime: int
    delay_warning_time: int = 0


@dataclass(frozen=True)
class Finished:
    """Where the message went: None when removed, else deferred/."""

    deferred_until: float | None
    notice: str | None = None  # the queue ID of a non-delivery notice queued


class Finisher:
    """Ends delivery rounds of messages in SPOOL's active/."""

    def __init__(
        self,
        queue: spool.Spool,
        notifier: Notifier,
        logs: StatusLogs,
        settings: FinishSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.notifier = notifier
        self.logs = logs
        self.settings = settings
        self.clock = clock

    def finish(self, message: ActiveMessage) -> Finished:
        """Expire, notify, defer or remove MESSAGE; see the module docstring."""
        now = self.clock()
        if message.deferred:
            forced = self._force_expired(message)
            if forced or self._expired(message, now):
                self._expire(message, forced=forced)
        notice, notice_failed = self._notify(message, now)
        report_failed = self._report(message, now)
        if message.deferred:
            self._warn_of_delay(message, now)
        if message.deferred or notice_failed or report_failed:
            until = now + retry_delay(
                now - message.arrival,
                self.settings.minimal_backoff_time,
                self.settings.maximal_backoff_time,
            )
            self._defer(message, until)
            return Finished(until, notice)
        self.queue.remove(QueueName.ACTIVE, message.queue_id)
        bounce_log.remove(self.queue.path, message.queue_id)
        msg_info(message.queue_id, "removed")
        return Finished(None, notice)

    def _expired(self, message: ActiveMessage, now: float) -> bool:
        s = self.settings
        lifetime = s.maximal_queue_lifetime if message.sender else s.bounce_queue_lifetime
        return is_expired(now, message.arrival, lifetime)

    def _force_expired(self, message: ActiveMessage) -> bool:
        """`postsuper -e/-f` marks a message to expire with its owner-execute bit."""
        try:
            with self.queue.open(QueueName.ACTIVE, message.queue_id) as handle:
                return bool(os.fstat(handle.fd).st_mode & stat.S_IXUSR)
        except (spool.SpoolError, OSError):
            return False

    def _expire(self, message: ActiveMessage, *, forced: bool = False) -> None:
        word = "force-expired" if forced else "expired"
        msg_info(message.queue_id, f"from=<{message.sender}>, status={word}, returned to sender")
        for recipient, status in message.deferred.values():
            self.logs.bounced(message, recipient, status, log_line=False)
        with self.queue.open(QueueName.ACTIVE, message.queue_id, writable=True) as handle:
            for offset in message.deferred:
                qfile.mark_done(handle, offset)
        message.deferred.clear()

    def _notify(self, message: ActiveMessage, now: float) -> tuple[str | None, bool]:
        try:
            notice = self.notifier.send_non_delivery(
                QueueName.ACTIVE, message.queue_id, message.envelope, now=now
            )
        except BounceError as exc:
            msg_warning(message.queue_id, f"{exc}; will try again")
            return None, True
        return notice, False

    def _report(self, message: ActiveMessage, now: float) -> bool:
        """Send the trace log's report; True when it must be tried again later."""
        try:
            report = self.notifier.send_trace(
                QueueName.ACTIVE, message.queue_id, message.envelope, now=now
            )
        except BounceError as exc:
            msg_warning(message.queue_id, f"{exc}; will try again")
            return True
        if report is not None and message.recording and message.deferred:
            self._clear_trace_flags(message)
        return False

    def _clear_trace_flags(self, message: ActiveMessage) -> None:
        try:
            with self.queue.open(QueueName.ACTIVE, message.queue_id, writable=True) as handle:
                qfile.clear_trace_flags(handle.fd, qfile.read_envelope(handle.fd))
        except (spool.SpoolError, qfile.CorruptQueueFile, OSError) as exc:
            msg_warning(message.queue_id, f"cannot clear the trace flags: {exc}")

    def _warn_of_delay(self, message: ActiveMessage, now: float) -> None:
        due = message.envelope.delay_warning_time
        if due <= 0 or now < due:
            return
        timing = Timing(self.settings.delay_warning_time, self.settings.maximal_queue_lifetime)
        try:
            self.notifier.send_delay(
                QueueName.ACTIVE, message.queue_id, message.envelope, timing=timing, now=now
            )
        except BounceError as exc:
            msg_warning(message.queue_id, f"{exc}; will try again")
            return
        try:
            with self.queue.open(QueueName.ACTIVE, message.queue_id, writable=True) as handle:
                qfile.set_delay_warning(handle.fd, qfile.read_envelope(handle.fd), -1)
        except (spool.SpoolError, qfile.CorruptQueueFile, OSError) as exc:
            msg_warning(message.queue_id, f"cannot mark the delay notice sent: {exc}")

    def _defer(self, message: ActiveMessage, until: float) -> None:
        with self.queue.open(QueueName.ACTIVE, message.queue_id) as handle:
            os.utime(handle.fd, (until, until))
        self.queue.move(message.queue_id, QueueName.ACTIVE, QueueName.DEFERRED)
