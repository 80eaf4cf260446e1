"""The per-destination fast-flush logs in `$queue_directory/flush/` (Postfix's flush.c).

One file per site, named by the site in lower case with every character that is not
an ASCII letter or digit turned into `_` (so `Example.COM` is `flush/example_com`);
its content is queue IDs, one per line, appended by `add` under an exclusive flock.

`send_site` / `send_path` take the same lock, read the IDs (each once), and make
each message that is still in deferred/ eligible for delivery at once: its time
stamp, which qmgr reads as "not before", becomes now.  The file is then truncated,
except for the IDs of messages found in active/: qmgr is working on them, and an
`add` for this very round may already be in the log, so dropping them could lose a
deferral that comes a moment later.  The log's access time records when it was read
(set explicitly, whatever the mount's atime policy).  The caller wakes qmgr.

`touch` is `postqueue -i` for one message.  `housekeeping` is Postfix's refresh and
purge: a log not read for fast_flush_refresh_time is sent, an empty one unchanged for
fast_flush_purge_time is removed, a file whose name cannot be a site's is removed.

Nothing here moves or rewrites a queue file: only its time stamps change, which qmgr
reads and sets itself.  Files are opened without following links.

Failure modes: OSError passes to the caller (the service answers `fail`); a bad line
in a log is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sdmail.core.records import QueueName
from sdmail.core.spool import valid_queue_id

FLUSH_DIRECTORY = "flush"
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC

log = logging.getLogger("sdmail.flush")


class Touched(enum.Enum):
    """What became of one queue ID a flush asked for."""

    SCHEDULED = "scheduled"  # in deferred/, now due
    ACTIVE = "active"  # qmgr holds it (active/ or incoming/): it is being delivered
    GONE = "gone"  # no such message in the queue (delivered, deleted, or on hold)


def log_name(site: str) -> str:
    """The file name of SITE's log."""
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in site.lower())


def _is_log_name(name: str) -> bool:
    return bool(name) and all(
        (c.isascii() and c.isalnum() and not c.isupper()) or c == "_" for c in name
    )


class FlushLogs:
    """The flush/ directory of the queue at QUEUE_DIRECTORY."""

    def __init__(self, queue_directory: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.queue = Path(queue_directory)
        self.directory = self.queue / FLUSH_DIRECTORY
        self.clock = clock

    def ensure_directory(self) -> None:
        """Create flush/ (0700) when the package's tmpfiles did not (tests, a bare queue)."""
        if not self.directory.is_dir():
            with contextlib.suppress(FileExistsError):
                self.directory.mkdir(mode=0o700)

    # -- add -------------------------------------------------------------------------------
    def add(self, site: str, queue_id: str) -> None:
        fd = os.open(
            self.directory / log_name(site),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS,
            0o600,
        )
        try:
            _check_regular(fd, site)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{queue_id}\n".encode("ascii"))
        finally:
            os.close(fd)  # releases the lock

    # -- send ------------------------------------------------------------------------------
    def send_site(self, site: str) -> int:
        """Make the mail logged for SITE due now; the number of messages scheduled."""
        return self.send_path(self.directory / log_name(site))

    def send_path(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR | _OPEN_FLAGS)
        except FileNotFoundError:
            return 0  # nothing was ever deferred for this site
        try:
            _check_regular(fd, path.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
            scheduled = 0
            keep: list[str] = []
            for queue_id in _queue_ids(fd, path.name):
                outcome = self.touch(queue_id)
                if outcome is Touched.SCHEDULED:
                    scheduled += 1
                elif outcome is Touched.ACTIVE:
                    keep.append(queue_id)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            if keep:
                os.write(fd, "".join(f"{q}\n" for q in keep).encode("ascii"))
            now = self.clock()
            os.utime(fd, (now, os.fstat(fd).st_mtime))  # read now; changed when it was
        finally:
            os.close(fd)
        return scheduled

    def touch(self, queue_id: str) -> Touched:
        """Make the deferred message QUEUE_ID due now (`postqueue -i`)."""
        now = self.clock()
        try:
            fd = os.open(self.queue / QueueName.DEFERRED / queue_id, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            return self._where_else(queue_id)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return Touched.GONE
            os.utime(fd, (now, now))
        finally:
            os.close(fd)
        return Touched.SCHEDULED

    def _where_else(self, queue_id: str) -> Touched:
        for queue in (QueueName.ACTIVE, QueueName.INCOMING):
            if (self.queue / queue / queue_id).exists():
                return Touched.ACTIVE
        return Touched.GONE

    # -- housekeeping ----------------------------------------------------------------------
    def housekeeping(self, refresh_time: float, purge_time: float) -> int:
        """Send stale logs and remove old empty ones; the number of messages scheduled."""
        scheduled = 0
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return 0
        for name in names:
            path = self.directory / name
            if not _is_log_name(name):
                log.warning("bad fast flush log name: %s; removed", name)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            now = self.clock()
            if st.st_size == 0:
                if st.st_mtime + purge_time < now:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            elif st.st_atime + refresh_time < now:
                scheduled += self.send_path(path)
        return scheduled


def _check_regular(fd: int, name: str) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError(f"fast flush log {name} is not a regular file")


def _queue_ids(fd: int, name: str) -> Iterator[str]:
    """The queue IDs in the log open at FD, each once, in order; bad lines are skipped."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    seen: set[str] = set()
    for raw in b"".join(chunks).split(b"\n"):
        text = raw.decode("ascii", "replace").strip()
        if not text or text in seen:
            continue
        if not valid_queue_id(text):
            log.warning('bad queue id "%.30s..." in fast flush log %s', text, name)
            continue
        seen.add(text)
        yield text
