"""Linux inotify: being told when files appear in a directory, without polling.

Debian 12 packages no Python binding for inotify, so this module carries its own
(through ctypes on the C library): `Inotify()` is one inotify instance, a
non-blocking, close-on-exec descriptor that select(), poll() and asyncio's
`loop.add_reader` can wait on; `add_watch(path, mask)` watches a directory for
the events of MASK (`IN_CLOSE_WRITE`, `IN_MOVED_TO`, `IN_CREATE`, ...);
`read_events()` returns what is pending, decoded, and an empty list when nothing
is (it never blocks). `IN_Q_OVERFLOW` (an `Event` whose `overflow` is true)
means the kernel dropped events: the reader must rescan what it watches.

It owns the system calls and the event layout (struct inotify_event: int wd,
uint32 mask, uint32 cookie, uint32 len, then LEN bytes of NUL-padded name) and
nothing else: which directories to watch and what an event means is the
caller's business.

Failure modes: `InotifyError` (an OSError, with errno) when the C library has no
inotify, when inotify_init1 or inotify_add_watch fails (no such directory,
EACCES, the per-user limit of instances or watches) or when reading fails;
`decode_events` raises `InotifyError` for a buffer that does not hold whole
events. Using a closed instance raises `InotifyError` (EBADF).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Final

# <sys/inotify.h>: events to watch for ...
IN_ACCESS: Final = 0x00000001
IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_CLOSE_NOWRITE: Final = 0x00000010
IN_OPEN: Final = 0x00000020
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
# ... events the kernel reports unasked ...
IN_UNMOUNT: Final = 0x00002000
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
# ... and flags of add_watch and of the events.
IN_ONLYDIR: Final = 0x01000000
IN_DONT_FOLLOW: Final = 0x02000000
IN_EXCL_UNLINK: Final = 0x04000000
IN_MASK_ADD: Final = 0x20000000
IN_ISDIR: Final = 0x40000000
IN_ONESHOT: Final = 0x80000000

IN_CLOSE: Final = IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
IN_MOVE: Final = IN_MOVED_FROM | IN_MOVED_TO

# inotify_init1 flags are O_NONBLOCK and O_CLOEXEC by definition.
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC

_EVENT_HEADER: Final = struct.Struct("=iIII")
# One read returns whole events only; this holds many, and always one with the
# longest name (NAME_MAX 255, NUL-padded), which a smaller buffer would refuse.
READ_SIZE: Final = 64 * 1024


class InotifyError(OSError):
    """An inotify call failed, or a buffer does not hold whole events."""


@dataclass(frozen=True)
class Event:
    """One inotify event: its watch, what happened, and the name inside the directory.

    `name` is "" for an event about the watched directory itself; names that are
    not UTF-8 keep their bytes as surrogate escapes (os.fsdecode).
    """

    wd: int
    mask: int
    cookie: int
    name: str

    @property
    def overflow(self) -> bool:
        """The kernel's queue overflowed: events were lost, rescan."""
        return bool(self.mask & IN_Q_OVERFLOW)

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


class _LibC:
    """The three functions of the C library this module needs, typed for ctypes."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            lib = ctypes.CDLL(None, use_errno=True)
        try:
            self.init1 = lib.inotify_init1
            self.add_watch = lib.inotify_add_watch
            self.rm_watch = lib.inotify_rm_watch
        except AttributeError:
            raise InotifyError(errno.ENOSYS, "the C library has no inotify") from None
        self.init1.argtypes = [ctypes.c_int]
        self.init1.restype = ctypes.c_int
        self.add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.add_watch.restype = ctypes.c_int
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self.rm_watch.restype = ctypes.c_int


_libc: _LibC | None = None


def _lib() -> _LibC:
    global _libc  # noqa: PLW0603  (loaded once, on first use)
    if _libc is None:
        _libc = _LibC()
    return _libc


def _failed(call: str, what: str = "") -> InotifyError:
    code = ctypes.get_errno()
    where = f" {what}" if what else ""
    return InotifyError(code, f"{call}{where}: {os.strerror(code)}")


def decode_events(buffer: bytes) -> list[Event]:
    """The events in BUFFER, as one read() of an inotify descriptor returns them."""
    events = []
    offset = 0
    header = _EVENT_HEADER.size
    while offset < len(buffer):
        if len(buffer) - offset < header:
            raise InotifyError(errno.EINVAL, f"inotify event cut short at offset {offset}")
        wd, mask, cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
        offset += header
        if length > len(buffer) - offset:
            raise InotifyError(errno.EINVAL, f"inotify event name cut short at offset {offset}")
        raw_name = buffer[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, cookie, os.fsdecode(raw_name)))
    return events


class Inotify:
    """One inotify instance; a context manager that closes it."""

    def __init__(self) -> None:
        lib = _lib()
        fd = int(lib.init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            raise _failed("inotify_init1")
        self._fd = fd
        self.watches: dict[int, str] = {}

    def fileno(self) -> int:
        """The descriptor to wait on; readable when events are pending."""
        if self._fd < 0:
            raise InotifyError(errno.EBADF, "inotify instance is closed")
        return self._fd

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch PATH for the events of MASK; returns the watch descriptor (events' `wd`)."""
        fd = self.fileno()
        encoded = os.fsencode(path)
        wd = int(_lib().add_watch(fd, encoded, mask))
        if wd < 0:
            raise _failed("inotify_add_watch", os.fsdecode(encoded))
        self.watches[wd] = os.fsdecode(encoded)
        return wd

    def remove_watch(self, wd: int) -> None:
        """Stop watching; the kernel then reports one IN_IGNORED event for WD."""
        if _lib().rm_watch(self.fileno(), wd) < 0:
            raise _failed("inotify_rm_watch", self.watches.get(wd, str(wd)))
        self.watches.pop(wd, None)

    def read_events(self) -> list[Event]:
        """Every event pending now, decoded; [] when there is none (never blocks)."""
        fd = self.fileno()
        events: list[Event] = []
        while True:
            try:
                buffer = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return events
            except InterruptedError:
                continue
            except OSError as exc:
                raise InotifyError(exc.errno, f"read inotify events: {exc.strerror}") from None
            if not buffer:
                return events
            events += decode_events(buffer)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Inotify:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
