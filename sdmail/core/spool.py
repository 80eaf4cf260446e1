"""The mail queue on disk: queue directories, queue IDs, durable creation, moves and locks.

This module owns the directory tree below `queue_directory` (a path handed in;
nothing here reads the configuration): the queue directories of
`records.QueueName`, the names of the files in them, and how a file gets there.
A message is one file named by its queue ID in exactly one of the message
queues; a queue ID from outside is checked by `valid_queue_id` before it is
used, and the only path ever built from one is `<queue directory>/<ID>` (looked
up with `openat` in a directory opened without following links), so no caller
string reaches any other file. Queue files are opened with O_NOFOLLOW and used
only if they are regular files with one link. The bytes inside a queue file
are `sdmail.core.qfile`'s business.

Creating a queue file (`Spool.create`): the file is written under a temporary
name that is never a valid queue ID (so no reader sees it), fsynced, renamed to
its queue ID (Postfix's long format, from the time the file was made and its
inode), and the directory is fsynced before the ID is returned; the caller may
acknowledge the message only after that. Threads of one process creating
files in the same directory share directory fsyncs (group commit): a thread
whose rename is done joins the next fsync to start, and returns only when an
fsync that began after its rename has finished. A crash at any point leaves
either no file under a queue ID, or a complete one; temporary files left by a
crash are removed by `purge_temporary`. Moves between queues are one
`rename()` followed by an fsync of the target directory (on Linux file systems
a rename is one journal transaction, so the file is in one queue or the
other). Removals and in-place updates are not fsynced, as in Postfix: a crash
can at worst bring a message or recipient back for one more delivery.

Locks (`lock_shared`, `lock_exclusive`) are non-blocking `flock` on an open
queue file: a delivery agent holds a shared lock while it works on a message;
qmgr takes an exclusive one when it opens a file, so it leaves alone a file an
agent of an earlier qmgr still works on.

A Spool keeps one descriptor per queue directory (O_CLOEXEC). A child that is
forked to drop privileges must close the spool (and every queue file) first.

Failure modes: `InvalidQueueId` (also a ValueError) for a malformed queue ID;
`NoSuchQueueFile` when the ID is not in the queue; `NotAQueueFile` for a
symbolic link, a non-regular file or a file with several links;
`QueueFileLocked` when a lock is held elsewhere; `QueueWriteError` when a queue
file cannot be created or written (full disk, quota, I/O error; the partial
file is removed first, and nothing appears under a queue ID); `SpoolError`,
their base, for any other failing system call, naming the directory and queue
ID. `Spool.create` also passes on `qfile.InvalidEnvelope` and whatever the
content iterable raises, after removing the partial file.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from sdmail.core.qfile import QueueFileWriter
from sdmail.core.records import ALL_QUEUES, MESSAGE_QUEUES, Envelope, QueueName

# Postfix's long queue ID: seconds (base 52, at least 6 digits), microseconds
# (base 52, 4 digits), "z", inode number (base 51: the same digits but "z").
QUEUE_ID_DIGITS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
INODE_DIGITS = QUEUE_ID_DIGITS[:-1]
_SECONDS_WIDTH = 6
_USEC_WIDTH = 4
_MAX_FIELD = 12
_D52 = "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]"
_D51 = "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]"
_QUEUE_ID = re.compile(
    f"({_D52}{{{_SECONDS_WIDTH},{_MAX_FIELD}}})({_D52}{{{_USEC_WIDTH}}})z({_D51}{{1,{_MAX_FIELD}}})"
)
_TEMPORARY = re.compile(r"tmp\.[0-9]+\.[0-9]+\.[0-9]+")

QUEUE_DIRECTORY_MODE = 0o700
QUEUE_FILE_MODE = 0o600


class SpoolError(Exception):
    """A queue operation failed; the message names the queue and queue ID."""


class InvalidQueueId(SpoolError, ValueError):
    """A string that is not a queue ID was given where one is needed."""


class NoSuchQueueFile(SpoolError):
    """The queue file is not (or no longer) in that queue."""


class NotAQueueFile(SpoolError):
    """The name in the queue is a link, a special file or a file with several links."""


class QueueFileLocked(SpoolError):
    """Another process holds a conflicting lock on the queue file."""


class QueueWriteError(SpoolError):
    """The queue file could not be written; nothing was queued."""

    def __init__(self, message: str, errno_value: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_value


# -- queue IDs -----------------------------------------------------------------


def _digits(value: int, alphabet: str) -> str:
    base = len(alphabet)
    out = []
    while True:
        value, digit = divmod(value, base)
        out.append(alphabet[digit])
        if value == 0:
            return "".join(reversed(out))


def _value(text: str, alphabet: str) -> int:
    value = 0
    for char in text:
        value = value * len(alphabet) + alphabet.index(char)
    return value


def make_queue_id(seconds: int, microseconds: int, inode: int) -> str:
    """The long queue ID for a file with `inode` created at that time.

    Raises ValueError for a negative number or microseconds >= 10**6.
    """
    if seconds < 0 or inode < 1 or not 0 <= microseconds < 1_000_000:
        raise ValueError(f"no queue ID for time {seconds}.{microseconds} and inode {inode}")
    return (
        _digits(seconds, QUEUE_ID_DIGITS).rjust(_SECONDS_WIDTH, "0")
        + _digits(microseconds, QUEUE_ID_DIGITS).rjust(_USEC_WIDTH, "0")
        + "z"
        + _digits(inode, INODE_DIGITS)
    )


def parse_queue_id(queue_id: str) -> tuple[int, int, int]:
    """(seconds, microseconds, inode) of a long queue ID; InvalidQueueId if it is none."""
    match = _QUEUE_ID.fullmatch(queue_id) if isinstance(queue_id, str) else None
    if match is not None:
        seconds, usec, inode = match.groups()
        canonical = (len(seconds) == _SECONDS_WIDTH or seconds[0] != "0") and inode[0] != "0"
        usec_value = _value(usec, QUEUE_ID_DIGITS)
        if canonical and usec_value < 1_000_000:
            return _value(seconds, QUEUE_ID_DIGITS), usec_value, _value(inode, INODE_DIGITS)
    raise InvalidQueueId(f"invalid queue ID {queue_id!r}")


def valid_queue_id(queue_id: str) -> bool:
    """True if `queue_id` is a well-formed long queue ID (safe as a file name)."""
    try:
        parse_queue_id(queue_id)
    except InvalidQueueId:
        return False
    return True


class _QueueIdClock:
    """Microsecond time stamps that never repeat or go back within a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> tuple[int, int]:
        with self._lock:
            now = max(time.time_ns() // 1000, self._last + 1)
            self._last = now
        return divmod(now, 1_000_000)


_CLOCK = _QueueIdClock()
_TEMP_SEQUENCE = itertools.count()


# -- locks -----------------------------------------------------------------------


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _flock(file: int | _HasFileno, operation: int, what: str) -> None:
    fd = file if isinstance(file, int) else file.fileno()
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        name = str(file) if isinstance(file, QueueFileHandle) else "queue file"
        raise QueueFileLocked(f"{name}: {what} lock is held by another process") from None


def lock_shared(file: int | _HasFileno) -> None:
    """Take a shared lock (a delivery agent at work); QueueFileLocked if held exclusively."""
    _flock(file, fcntl.LOCK_SH, "an exclusive")


def lock_exclusive(file: int | _HasFileno) -> None:
    """Take the exclusive lock (qmgr); QueueFileLocked if anyone holds a lock."""
    _flock(file, fcntl.LOCK_EX, "a")


def unlock(file: int | _HasFileno) -> None:
    """Release this descriptor's lock (closing the file does it too)."""
    fd = file if isinstance(file, int) else file.fileno()
    fcntl.flock(fd, fcntl.LOCK_UN)


# -- group commit ------------------------------------------------------------------


class _SyncRound:
    def __init__(self) -> None:
        self.finished = False
        self.error: tuple[int, str] | None = None


class _GroupSync:
    """Directory fsyncs shared by the threads that need one at about the same time.

    A caller's rename must be complete before it calls `sync`. It joins the
    round that has not started yet; the first member to find no fsync running
    starts it, so every member's rename precedes the fsync that covers it.
    """

    def __init__(self, fsync: Callable[[], None]) -> None:
        self._fsync = fsync
        self._cond = threading.Condition()
        self._joinable: _SyncRound | None = None
        self._running = False

    def sync(self) -> None:
        with self._cond:
            if self._joinable is None:
                self._joinable = _SyncRound()
            my_round = self._joinable
            leader = False
            while not my_round.finished:
                if not self._running and self._joinable is my_round:
                    self._running = True
                    self._joinable = None
                    leader = True
                    break
                self._cond.wait()
        if leader:
            self._lead(my_round)
        if my_round.error is not None:
            raise OSError(*my_round.error)

    def _lead(self, my_round: _SyncRound) -> None:
        try:
            self._fsync()
        except OSError as exc:
            my_round.error = (exc.errno or errno.EIO, exc.strerror or str(exc))
        finally:
            with self._cond:
                my_round.finished = True
                self._running = False
                self._cond.notify_all()


# -- the spool -----------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    """A queue file that is on disk under its queue ID."""

    queue_id: str
    queue: QueueName
    created_at: datetime.datetime  # UTC, to the microsecond; the time in the queue ID


ContentMaker = Callable[[Created], "bytes | Iterable[bytes]"]


class QueueFileHandle:
    """An open queue file: its descriptor, queue and queue ID. A context manager."""

    def __init__(self, fd: int, queue: QueueName, queue_id: str) -> None:
        self.fd = fd
        self.queue = queue
        self.queue_id = queue_id

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> QueueFileHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __str__(self) -> str:
        return f"{self.queue}/{self.queue_id}"


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_error(exc: OSError, queue: QueueName) -> QueueWriteError:
    return QueueWriteError(
        f"queue file write error: {exc.strerror or exc} (queue {queue})", exc.errno
    )


def _write_queue_file(
    fd: int, queue: QueueName, envelope: Envelope, content: bytes | Iterable[bytes]
) -> int:
    """Write and fsync the file; return its inode number. Content errors pass through."""

    def store(data: bytes | bytearray | memoryview) -> None:
        try:
            _write_all(fd, data)
        except OSError as exc:
            raise _write_error(exc, queue) from None

    writer = QueueFileWriter(store, envelope)
    if isinstance(content, bytes | bytearray | memoryview):
        writer.write(content)
    else:
        for chunk in content:
            writer.write(chunk)
    writer.finish()
    try:
        os.fsync(fd)
        return os.fstat(fd).st_ino
    except OSError as exc:
        raise _write_error(exc, queue) from None


def _queue(queue: QueueName | str) -> QueueName:
    try:
        return QueueName(queue)
    except ValueError:
        raise SpoolError(f"unknown queue {queue!r}") from None


def _checked_id(queue_id: str) -> str:
    parse_queue_id(queue_id)
    return queue_id


class Spool:
    """The queue below `queue_directory`; share one instance among a process's threads.

    `dir_fsync` is the door to the directory fsync (tests and benchmarks).
    """

    def __init__(
        self,
        queue_directory: str | os.PathLike[str],
        *,
        dir_fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.path = Path(queue_directory)
        self._dir_fsync = dir_fsync
        self._lock = threading.Lock()
        self._dir_fds: dict[QueueName, int] = {}
        self._syncs = {q: _GroupSync(self._fsync_of(q)) for q in ALL_QUEUES}

    def _fsync_of(self, queue: QueueName) -> Callable[[], None]:
        return lambda: self._dir_fsync(self._dir_fd(queue))

    def close(self) -> None:
        with self._lock:
            fds, self._dir_fds = self._dir_fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _dir_fd(self, queue: QueueName) -> int:
        with self._lock:
            fd = self._dir_fds.get(queue)
            if fd is None:
                path = self.path / queue.value
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    fd = os.open(path, flags)
                except OSError as exc:
                    raise SpoolError(f"queue directory {path}: {exc.strerror}") from None
                self._dir_fds[queue] = fd
            return fd

    # -- directories --

    def create_directories(self) -> list[QueueName]:
        """Create the missing queue directories (mode 0700); return those created."""
        created = []
        for queue in ALL_QUEUES:
            path = self.path / queue.value
            try:
                path.mkdir(mode=QUEUE_DIRECTORY_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                raise SpoolError(f"cannot create queue directory {path}: {exc.strerror}") from None
            path.chmod(QUEUE_DIRECTORY_MODE)  # the umask may have taken bits away
            created.append(queue)
        return created

    def check_directories(self, owner_uid: int | None = None) -> list[str]:
        """What is wrong with the queue directories, one line each; empty if all is well."""
        problems = []
        for queue in ALL_QUEUES:
            path = self.path / queue.value
            try:
                st = path.lstat()
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
                continue
            if not stat.S_ISDIR(st.st_mode):
                problems.append(f"{path}: not a directory")
                continue
            mode = stat.S_IMODE(st.st_mode)
            if mode != QUEUE_DIRECTORY_MODE:
                problems.append(f"{path}: mode {mode:04o}, should be {QUEUE_DIRECTORY_MODE:04o}")
            if owner_uid is not None and st.st_uid != owner_uid:
                problems.append(f"{path}: owned by uid {st.st_uid}, should be {owner_uid}")
        return problems

    # -- creating --

    def create(
        self,
        queue: QueueName | str,
        envelope: Envelope,
        content: bytes | Iterable[bytes] | ContentMaker,
    ) -> Created:
        """Write a queue file durably and return its queue ID (see the module docstring).

        CONTENT may be a function of the queue ID and its time, for content that
        must name its own queue ID (Received:, Message-Id:); whatever it raises
        passes through after the partial file is removed.
        """
        queue = _queue(queue)
        dir_fd = self._dir_fd(queue)
        temp_name, fd = self._open_temporary(queue, dir_fd)
        current_name = temp_name
        try:
            try:
                seconds, usec = _CLOCK.next()
                queue_id = make_queue_id(seconds, usec, os.fstat(fd).st_ino)
                created = Created(
                    queue_id,
                    queue,
                    datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(
                        microsecond=usec
                    ),
                )
                data = content(created) if callable(content) else content
                _write_queue_file(fd, queue, envelope, data)
            finally:
                with contextlib.suppress(OSError):  # the data is on disk, or an error is raised
                    os.close(fd)
            try:
                os.rename(temp_name, queue_id, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                current_name = queue_id
                self._syncs[queue].sync()
            except OSError as exc:
                raise _write_error(exc, queue) from None
        except BaseException:
            self._discard(dir_fd, current_name)
            raise
        return created

    def _open_temporary(self, queue: QueueName, dir_fd: int) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            name = f"tmp.{os.getpid()}.{threading.get_native_id()}.{next(_TEMP_SEQUENCE)}"
            try:
                return name, os.open(name, flags, QUEUE_FILE_MODE, dir_fd=dir_fd)
            except FileExistsError:
                continue  # left by a crashed process that had our pid
            except OSError as exc:
                raise QueueWriteError(
                    f"cannot create queue file in {self.path / queue.value}: {exc.strerror}",
                    exc.errno,
                ) from None

    @staticmethod
    def _discard(dir_fd: int, name: str) -> None:
        # A temporary file that survives this is removed by purge_temporary.
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)

    # -- using --

    def still_there(self, handle: QueueFileHandle) -> bool:
        """Whether HANDLE's file is still its queue file: not removed, not moved away.

        A delivery agent asks this once it holds its lock, because postsuper may have
        deleted or held the message between the agent's open and its lock.
        """
        try:
            opened = os.fstat(handle.fd)
            named = os.stat(
                handle.queue_id, dir_fd=self._dir_fd(handle.queue), follow_symlinks=False
            )
        except OSError:
            return False
        return opened.st_nlink > 0 and (named.st_dev, named.st_ino) == (
            opened.st_dev,
            opened.st_ino,
        )

    def open(
        self, queue: QueueName | str, queue_id: str, *, writable: bool = False
    ) -> QueueFileHandle:
        """Open a queue file for reading (or for done marks with `writable`)."""
        queue, queue_id = _queue(queue), _checked_id(queue_id)
        access = os.O_RDWR if writable else os.O_RDONLY
        # O_NONBLOCK: a FIFO planted in the queue must not hang the open.
        flags = access | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        where = f"{queue}/{queue_id}"
        try:
            fd = os.open(queue_id, flags, dir_fd=self._dir_fd(queue))
        except FileNotFoundError:
            raise NoSuchQueueFile(f"{where}: no such queue file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotAQueueFile(f"{where}: is a symbolic link") from None
            if exc.errno == errno.EISDIR:
                raise NotAQueueFile(f"{where}: not a regular file") from None
            raise SpoolError(f"{where}: {exc.strerror}") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "not a regular file"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} links"
        if problem is not None:
            os.close(fd)
            raise NotAQueueFile(f"{where}: {problem}")
        return QueueFileHandle(fd, queue, queue_id)

    def find(self, queue_id: str) -> QueueName | None:
        """The message queue holding `queue_id`, or None."""
        queue_id = _checked_id(queue_id)
        for queue in MESSAGE_QUEUES:
            try:
                os.stat(queue_id, dir_fd=self._dir_fd(queue), follow_symlinks=False)
            except FileNotFoundError:
                continue
            return queue
        return None

    def list_queue(self, queue: QueueName | str) -> Iterator[str]:
        """The queue IDs in `queue`, in directory order; other names are skipped.

        A name is yielded whatever kind of file it is; `open` tells.
        """
        queue = _queue(queue)
        for name in self._names(queue):
            if valid_queue_id(name):
                yield name

    def _names(self, queue: QueueName) -> Iterator[str]:
        # A fresh open file description: a directory stream shares its offset.
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        scan_fd = os.open(".", flags, dir_fd=self._dir_fd(queue))
        try:
            with os.scandir(scan_fd) as entries:
                for entry in entries:
                    yield entry.name
        finally:
            os.close(scan_fd)

    def move(self, queue_id: str, from_queue: QueueName | str, to_queue: QueueName | str) -> None:
        """Move a queue file to another queue: rename, then fsync the target directory."""
        queue_id = _checked_id(queue_id)
        source, target = _queue(from_queue), _queue(to_queue)
        where = f"{source}/{queue_id}"
        if source == target:
            raise SpoolError(f"{where}: cannot move a queue file to its own queue")
        target_fd = self._dir_fd(target)
        try:
            os.stat(queue_id, dir_fd=target_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            raise SpoolError(f"{where}: {target}/{queue_id} already exists")
        try:
            os.rename(queue_id, queue_id, src_dir_fd=self._dir_fd(source), dst_dir_fd=target_fd)
        except FileNotFoundError:
            raise NoSuchQueueFile(f"{where}: no such queue file") from None
        except OSError as exc:
            raise SpoolError(f"{where}: cannot move to {target}: {exc.strerror}") from None
        try:
            self._syncs[target].sync()
        except OSError as exc:
            raise SpoolError(f"{target}/{queue_id}: directory fsync: {exc.strerror}") from None

    def quarantine(self, queue_id: str, from_queue: QueueName | str) -> None:
        """Move a file that cannot be used to `corrupt/`."""
        self.move(queue_id, from_queue, QueueName.CORRUPT)

    def remove(self, queue: QueueName | str, queue_id: str) -> None:
        """Delete a queue file (not fsynced: a crash can only bring it back)."""
        queue, queue_id = _queue(queue), _checked_id(queue_id)
        try:
            os.unlink(queue_id, dir_fd=self._dir_fd(queue))
        except FileNotFoundError:
            raise NoSuchQueueFile(f"{queue}/{queue_id}: no such queue file") from None
        except OSError as exc:
            raise SpoolError(f"{queue}/{queue_id}: cannot remove: {exc.strerror}") from None

    def purge_temporary(
        self, older_than: float, queues: Iterable[QueueName] = MESSAGE_QUEUES
    ) -> list[str]:
        """Remove temporary files not modified for `older_than` seconds in QUEUES (every
        message queue by default); return the "queue/name"s removed."""
        cutoff = time.time() - older_than
        removed = []
        for queue in queues:
            dir_fd = self._dir_fd(queue)
            for name in self._names(queue):
                if not _TEMPORARY.fullmatch(name):
                    continue
                try:
                    if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime >= cutoff:
                        continue
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # its writer finished or gave up meanwhile
                except OSError as exc:
                    raise SpoolError(f"{queue}/{name}: cannot remove: {exc.strerror}") from None
                removed.append(f"{queue}/{name}")
        return removed
