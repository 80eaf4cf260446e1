"""Draining maildrop/: each file through cleanup into incoming/, or out of the way.

For every queue ID in maildrop/ (core/spool.list_queue: temporary files of a
postdrop at work are not queue IDs and are never touched), `Drain.pick_up`
decides one `Outcome`:

- PICKED_UP: cleanup queued it; `NEWID: uid=N from=<sender>` is logged (the
  new queue ID, Postfix's line), the maildrop file removed, qmgr woken;
- QUARANTINED: the name is a symbolic link, FIFO, directory or multiply-linked
  file (never opened: core/spool opens without following links), or a file
  that is not a complete maildrop message, or one cleanup refused for good
  (5xx: too big, no recipients, too many hops; Postfix would bounce it to the
  sender, and sdmail has no bounce code for pickup yet): it goes to corrupt/
  with a warning that names the reason;
- REMOVED: it could not be moved to corrupt/ (a name already there) and was
  unlinked instead, with a warning;
- DEFERRED: cleanup refused it for now (4xx), the file could not be read, or an
  unexpected error happened: it stays, with a warning, for the next full drain;
- STUCK: it can neither be processed nor moved nor removed (a directory that is
  not empty, a file pickup may not remove), or it was queued but could not be
  removed: it is remembered and never tried again by this process, so nothing
  can make pickup spin or queue a message twice;
- GONE: it disappeared before it was opened;
- BUSY: another pickup holds its lock (systemd runs one pickup, but an
  administrator may start another by hand): that one takes care of it.

While pickup works on a file it holds an exclusive lock on it (core/spool), and
it goes on only if the file is still linked once the lock is taken, so two
pickups never queue one message twice.

A file owned by another user than pickup's, or with a mode other than 0600, is
processed with a warning: maildrop/ is written by the mail owner only.

Failure modes: none; every problem with one file is an Outcome and a log line.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdmail.cleanup.api import Cleanup, CleanupError
from sdmail.core.address import AddressError, quote_address
from sdmail.core.log import log_traceback, msg_info, msg_warning
from sdmail.core.records import QueueName
from sdmail.core.spool import (
    QUEUE_FILE_MODE,
    NoSuchQueueFile,
    NotAQueueFile,
    QueueFileLocked,
    Spool,
    SpoolError,
    lock_exclusive,
)
from sdmail.core.trigger import WAKEUP, trigger
from sdmail.pickup.maildrop import MaildropMessage, MalformedMaildropFile, read_maildrop

log = logging.getLogger("sdmail.pickup")

MAILDROP = QueueName.MAILDROP
# A maildrop temporary file older than this was left by a postdrop that died mid-write.
STALE_TEMPORARY_SECONDS = 3600


class Outcome(enum.Enum):
    PICKED_UP = "picked up"
    QUARANTINED = "quarantined"
    REMOVED = "removed"
    DEFERRED = "deferred"
    STUCK = "stuck"
    GONE = "gone"
    BUSY = "busy"


@dataclass
class DrainReport:
    """What one drain did, file by file."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)

    @property
    def handled(self) -> int:
        """Files that left maildrop/ (queued, quarantined or removed)."""
        done = (Outcome.PICKED_UP, Outcome.QUARANTINED, Outcome.REMOVED)
        return sum(1 for o in self.outcomes.values() if o in done)


class Drain:
    """Moves maildrop/ through CLEANUP; remembers what is deferred or stuck."""

    def __init__(self, spool: Spool, cleanup: Cleanup, qmgr_socket: str | Path) -> None:
        self.spool = spool
        self.cleanup = cleanup
        self.qmgr_socket = str(qmgr_socket)
        self.deferred: set[str] = set()
        self.stuck: set[str] = set()
        self._uid = os.geteuid()

    def waiting(self) -> list[str]:
        """Queue IDs in maildrop/ that a drain would try (deferred ones included)."""
        return [name for name in self.spool.list_queue(MAILDROP) if name not in self.stuck]

    def drain(self, *, retry: bool, stop: Callable[[], bool] = lambda: False) -> DrainReport:
        """Try every waiting file; deferred ones only with RETRY (the periodic full drain).

        STOP is asked between two files; when it says True the drain ends early (SIGTERM).
        """
        report = DrainReport()
        if retry:
            self._purge_stale_temporaries()
        present = set()
        for queue_id in self.waiting():
            present.add(queue_id)
            if queue_id in self.deferred and not retry:
                continue
            if stop():
                break
            outcome = self.pick_up(queue_id)
            report.outcomes[queue_id] = outcome
            if outcome is Outcome.DEFERRED:
                self.deferred.add(queue_id)
            else:
                self.deferred.discard(queue_id)
        if retry:
            self.deferred &= present  # removed by someone else meanwhile
        return report

    def _purge_stale_temporaries(self) -> None:
        """A postdrop that died mid-write leaves a temporary file, which would keep the path
        unit (DirectoryNotEmpty) restarting pickup for nothing: remove it once stale."""
        try:
            removed = self.spool.purge_temporary(STALE_TEMPORARY_SECONDS, (MAILDROP,))
        except SpoolError as exc:
            log.warning("%s", exc)
            return
        for name in removed:
            log.warning("removed stale temporary file %s", name)

    # -- one file ---------------------------------------------------------------------
    def pick_up(self, queue_id: str) -> Outcome:
        try:
            handle = self.spool.open(MAILDROP, queue_id)
        except NoSuchQueueFile:
            return Outcome.GONE
        except NotAQueueFile as exc:
            return self._set_aside(queue_id, _reason(exc, queue_id))
        except SpoolError as exc:
            msg_warning(queue_id, f"cannot open maildrop file: {_reason(exc, queue_id)}")
            return Outcome.DEFERRED
        with handle:  # its lock is held until the file is gone or left
            try:
                lock_exclusive(handle)
            except QueueFileLocked:
                return Outcome.BUSY
            try:
                st = os.fstat(handle.fd)
                if st.st_nlink == 0:
                    return Outcome.GONE  # another pickup finished it before we locked
                self._check_owner(queue_id, st)
                message = read_maildrop(handle.fd, st.st_uid)
            except MalformedMaildropFile as exc:
                return self._set_aside(queue_id, str(exc))
            except OSError as exc:
                msg_warning(queue_id, f"cannot read maildrop file: {exc.strerror or exc}")
                return Outcome.DEFERRED
            for warning in message.warnings:
                msg_warning(queue_id, warning)
            return self._submit(queue_id, message)

    def _submit(self, queue_id: str, message: MaildropMessage) -> Outcome:
        try:
            accepted = self.cleanup.submit(message.submission, message.content)
        except CleanupError as exc:
            if exc.temporary:
                msg_warning(queue_id, f"cleanup refused the message for now: {exc}; will retry")
                return Outcome.DEFERRED
            return self._set_aside(queue_id, f"cleanup refused the message: {exc}")
        except Exception as exc:
            # A bug must not lose the message nor stop the drain: treat it as temporary.
            msg_warning(queue_id, f"internal error: {type(exc).__name__}: {exc}; will retry")
            log_traceback(log, exc)
            return Outcome.DEFERRED
        requeued = f" orig_id={queue_id}" if message.requeued else ""
        msg_info(accepted.queue_id, f"uid={message.uid} from=<{_logged(message.sender)}>{requeued}")
        try:
            self.spool.remove(MAILDROP, queue_id)
        except NoSuchQueueFile:
            pass
        except SpoolError as exc:
            # Trying it again would queue the message twice.
            msg_warning(queue_id, f"queued as {accepted.queue_id} but {_reason(exc, queue_id)}")
            self.stuck.add(queue_id)
        trigger(self.qmgr_socket, WAKEUP)
        return Outcome.PICKED_UP

    def _check_owner(self, queue_id: str, st: os.stat_result) -> None:
        if st.st_uid != self._uid:
            msg_warning(queue_id, f"maildrop file owned by uid {st.st_uid}, not {self._uid}")
        mode = stat.S_IMODE(st.st_mode)
        if mode != QUEUE_FILE_MODE:
            msg_warning(queue_id, f"maildrop file has mode {mode:04o}, not {QUEUE_FILE_MODE:04o}")

    def _set_aside(self, queue_id: str, reason: str) -> Outcome:
        """Move a file that will never be queued out of maildrop/: corrupt/, else unlink."""
        try:
            self.spool.quarantine(queue_id, MAILDROP)
        except NoSuchQueueFile:
            return Outcome.GONE
        except SpoolError as move_error:
            try:
                self.spool.remove(MAILDROP, queue_id)
            except NoSuchQueueFile:
                return Outcome.GONE
            except SpoolError as remove_error:
                msg_warning(
                    queue_id,
                    f"maildrop file: {reason}; cannot move it to corrupt/ "
                    f"({_reason(move_error, queue_id)}) nor remove it "
                    f"({_reason(remove_error, queue_id)}); leaving it alone",
                )
                self.stuck.add(queue_id)
                return Outcome.STUCK
            msg_warning(
                queue_id,
                f"maildrop file: {reason}; removed "
                f"(cannot move it to corrupt/: {_reason(move_error, queue_id)})",
            )
            return Outcome.REMOVED
        msg_warning(queue_id, f"maildrop file: {reason}; moved to corrupt/{queue_id}")
        return Outcome.QUARANTINED


def _reason(exc: Exception, queue_id: str) -> str:
    """A spool error's text without its `queue/ID: ` lead (the log line starts with the ID)."""
    return str(exc).removeprefix(f"{MAILDROP}/{queue_id}: ")


def _logged(address: str) -> str:
    try:
        return quote_address(address)
    except AddressError:
        return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in address)
