"""Mailbox writers: appending to an mbox file and delivering into a Maildir, with locking.

OWNS the on-disk forms of final delivery, shared by the local agent (mailboxes, alias and
.forward `/file` targets) and later the virtual agent:

- mbox: one entry per message, `From SENDER  DATE` (asctime, two spaces, MAILER-DAEMON for
  the null sender), the message with every line that starts with `From ` quoted as
  `>From `, and an empty line after it (`mbox_entry`). `append_mbox` takes the locks
  Debian's mail tools take (a `FILE.lock` dot-lock as liblockfile makes it, and an fcntl
  lock on the open file), appends, fsyncs, and on any write error truncates the file
  back to the size it had, so a reader never sees half a message.
- Maildir: the message goes to `tmp/` under a unique name
  (`TIME.MPID_SEQRRAND.HOST,S=SIZE`), is fsynced, then linked into `new/` and unlinked
  from `tmp/`, and `new/` is fsynced: a reader sees a file in `new/` only when it is
  whole (`deliver_maildir`).

Every file and directory is opened without following a symbolic link (O_NOFOLLOW), and a
mailbox that is a link, not a regular file, or a file with several links is refused. The
caller runs these functions in a process that already has the rights of the mailbox's
owner (DESIGN.md, Privileges); nothing here changes privileges or reads main.cf: lock
attempts, delays and size limits are handed in.

Failure modes: every failure is a `MailstoreError` whose text names the path and whose
`errno` is the system error (None when there is none): `UnsafeMailbox` for a symbolic
link, a special file or several links; `LockTimeout` when a lock was still held after
every attempt; `MailboxFull` when the entry would pass the size limit (errno EFBIG); a
plain MailstoreError for any other failing system call (EACCES, ENOSPC, EDQUOT, ...),
after the mailbox was truncated back or the temporary Maildir file removed.
`locked_mbox` raises the same errors as `append_mbox` before its block runs.
`LockPolicy.from_styles` raises ValueError for an unknown lock style.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAILBOX_MODE: Final = 0o600
MAILDIR_MODE: Final = 0o700
DOTLOCK_SUFFIX: Final = ".lock"
NULL_SENDER_NAME: Final = "MAILER-DAEMON"
LOCK_STYLES: Final = frozenset({"fcntl", "dotlock", "flock"})

_FROM_LINE_START: Final = re.compile(rb"^From ", re.MULTILINE)
_MAILDIR_SUBDIRS: Final = ("tmp", "new", "cur")
_NOFOLLOW_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_SEQUENCE = itertools.count()


class MailstoreError(Exception):
    """A mailbox could not be written; the text names the path, `errno` the cause."""

    def __init__(self, message: str, errno_value: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno_value


class UnsafeMailbox(MailstoreError):
    """The mailbox is a symbolic link, not a regular file, or has several links."""


class LockTimeout(MailstoreError):
    """Another process still held the mailbox's lock after every attempt."""


class MailboxFull(MailstoreError):
    """The message would make the mailbox larger than its size limit."""


@dataclass(frozen=True)
class LockPolicy:
    """How a mailbox is locked (mailbox_delivery_lock and the deliver_lock_* parameters)."""

    fcntl: bool
    dotlock: bool
    flock: bool
    attempts: int
    delay: float
    stale_after: float

    @classmethod
    def from_styles(
        cls, styles: Sequence[str], attempts: int, delay: float, stale_after: float
    ) -> LockPolicy:
        """A policy from mailbox_delivery_lock's words (`fcntl`, `dotlock`, `flock`)."""
        unknown = sorted(set(styles) - LOCK_STYLES)
        if unknown:
            raise ValueError(f"unknown mailbox lock style: {', '.join(unknown)}")
        return cls(
            fcntl="fcntl" in styles,
            dotlock="dotlock" in styles,
            flock="flock" in styles,
            attempts=max(1, attempts),
            delay=delay,
            stale_after=stale_after,
        )


# --------------------------------------------------------------------------------------
# mbox
# --------------------------------------------------------------------------------------
def mbox_from_line(sender: str, when: float) -> bytes:
    """`From SENDER  Tue Nov 24 21:51:01 2025` and a line end, as Postfix writes it."""
    shown = sender or NULL_SENDER_NAME
    return f"From {shown}  {time.asctime(time.localtime(when))}\n".encode(
        "utf-8", "surrogateescape"
    )


def quote_from_lines(data: bytes) -> bytes:
    """DATA with `>` before every line that starts with `From ` (mboxo quoting)."""
    return _FROM_LINE_START.sub(b">From ", data)


def mbox_entry(sender: str, prefix: bytes, content: bytes, when: float) -> bytes:
    """One mbox entry: the From_ line, PREFIX (added headers) and CONTENT quoted, and the
    empty line that ends it (a line end first when CONTENT lacks one)."""
    body = quote_from_lines(prefix + content)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return mbox_from_line(sender, when) + body + b"\n"


def append_mbox(
    path: str | os.PathLike[str], entry: bytes, policy: LockPolicy, *, size_limit: int
) -> None:
    """Append ENTRY to the mbox file PATH (created with mode 0600 when missing) under the
    locks POLICY names; fsynced. SIZE_LIMIT 0 means no limit."""
    mailbox = os.fspath(path)
    with locked_mbox(mailbox, policy) as fd:
        _append_whole(fd, mailbox, entry, size_limit)


@contextlib.contextmanager
def locked_mbox(path: str | os.PathLike[str], policy: LockPolicy) -> Iterator[int]:
    """The mbox file PATH open for appending (created 0600 when missing, refused when
    unsafe) under the locks POLICY names, for the time of the block; the locks are released
    and the file closed after it (postlock holds a mailbox this way)."""
    mailbox = os.fspath(path)
    with _dotlock(mailbox, policy) if policy.dotlock else contextlib.nullcontext():
        fd = _open_mailbox(mailbox)
        try:
            _kernel_locks(fd, mailbox, policy)
            yield fd
        finally:
            os.close(fd)  # releases the kernel locks


def _open_mailbox(mailbox: str) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW_FLAGS
    try:
        fd = os.open(mailbox, flags, MAILBOX_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeMailbox(f"{mailbox}: is a symbolic link", exc.errno) from None
        raise _error(f"cannot open file {mailbox}", exc) from None
    try:
        _check_regular(fd, mailbox)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(fd: int, path: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeMailbox(f"{path}: not a regular file")
    if st.st_nlink != 1:
        raise UnsafeMailbox(f"{path}: file has {st.st_nlink} hard links")


def _kernel_locks(fd: int, mailbox: str, policy: LockPolicy) -> None:
    if policy.fcntl:
        _retry_lock(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB), mailbox, policy)
    if policy.flock:
        _retry_lock(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB), mailbox, policy)


def _retry_lock(take: Callable[[], object], mailbox: str, policy: LockPolicy) -> None:
    for attempt in range(policy.attempts):
        try:
            take()
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise _error(f"{mailbox}: unable to lock for exclusive access", exc) from None
            if attempt + 1 == policy.attempts:
                raise LockTimeout(
                    f"{mailbox}: unable to lock for exclusive access: {os.strerror(exc.errno)}",
                    exc.errno,
                ) from None
        time.sleep(policy.delay)


def _append_whole(fd: int, mailbox: str, entry: bytes, size_limit: int) -> None:
    old_size = os.fstat(fd).st_size
    if size_limit > 0 and old_size + len(entry) > size_limit:
        raise MailboxFull(
            f"{mailbox}: error writing message: {os.strerror(errno.EFBIG)}", errno.EFBIG
        )
    try:
        _write_all(fd, entry)
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, old_size)
            os.fsync(fd)
        raise _error(f"{mailbox}: error writing message", exc) from None


@contextlib.contextmanager
def _dotlock(mailbox: str, policy: LockPolicy) -> Iterator[None]:
    """`MAILBOX.lock`, created exclusively (liblockfile's rule): stale ones are removed."""
    lock_path = mailbox + DOTLOCK_SUFFIX
    identity = _create_dotlock(lock_path, policy)
    try:
        yield
    finally:
        _remove_dotlock(lock_path, identity)


def _create_dotlock(lock_path: str, policy: LockPolicy) -> tuple[int, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW_FLAGS
    for attempt in range(policy.attempts):
        try:
            fd = os.open(lock_path, flags, MAILBOX_MODE)
        except FileExistsError:
            _remove_if_stale(lock_path, policy.stale_after)
        except OSError as exc:
            raise _error(f"unable to create lock file {lock_path}", exc) from None
        else:
            try:
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
                st = os.fstat(fd)
            finally:
                os.close(fd)
            return st.st_dev, st.st_ino
        if attempt + 1 < policy.attempts:
            time.sleep(policy.delay)
    raise LockTimeout(
        f"unable to create lock file {lock_path}: {os.strerror(errno.EEXIST)}", errno.EEXIST
    )


def _remove_if_stale(lock_path: str, stale_after: float) -> None:
    with contextlib.suppress(FileNotFoundError):
        if time.time() - os.lstat(lock_path).st_mtime > stale_after:
            os.unlink(lock_path)


def _remove_dotlock(lock_path: str, identity: tuple[int, int]) -> None:
    # Only our own lock: after a stale-lock removal by someone else it may be theirs.
    with contextlib.suppress(OSError):
        st = os.lstat(lock_path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(lock_path)


# --------------------------------------------------------------------------------------
# Maildir
# --------------------------------------------------------------------------------------
def maildir_name(size: int, when: float, hostname: str) -> str:
    """A unique Maildir file name: `TIME.MPID_SEQRRAND.HOST,S=SIZE`, with `/` and `:` in the
    host name written `\\057` and `\\072` as the Maildir convention asks."""
    host = hostname.replace("/", "\\057").replace(":", "\\072")
    return f"{int(when)}.M{os.getpid()}_{next(_SEQUENCE)}R{secrets.token_hex(8)}.{host},S={size}"


def deliver_maildir(
    directory: str | os.PathLike[str],
    data: bytes,
    *,
    hostname: str | None = None,
    when: float | None = None,
) -> Path:
    """Deliver DATA into the Maildir DIRECTORY (made with tmp/, new/, cur/, mode 0700, when
    missing); the path of the new file in new/."""
    maildir = os.fspath(directory)
    moment = time.time() if when is None else when
    name = maildir_name(len(data), moment, socket.gethostname() if hostname is None else hostname)
    top = _open_maildir(maildir)
    try:
        subdirs = {sub: _open_subdir(top, maildir, sub) for sub in _MAILDIR_SUBDIRS}
        try:
            _write_maildir_file(subdirs["tmp"], subdirs["new"], maildir, name, data)
        finally:
            for fd in subdirs.values():
                os.close(fd)
    finally:
        os.close(top)
    return Path(maildir, "new", name)


def _open_maildir(maildir: str) -> int:
    try:
        os.makedirs(maildir, MAILDIR_MODE, exist_ok=True)
    except FileExistsError:
        pass  # a symbolic link to a directory; refused below
    except OSError as exc:
        raise _error(f"create maildir {maildir}", exc) from None
    return _open_directory(maildir, None, maildir)


def _open_subdir(top: int, maildir: str, sub: str) -> int:
    where = os.path.join(maildir, sub)
    try:
        os.mkdir(sub, MAILDIR_MODE, dir_fd=top)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _error(f"create maildir directory {where}", exc) from None
    return _open_directory(sub, top, where)


def _open_directory(name: str, dir_fd: int | None, where: str) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW_FLAGS
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_DIRECTORY | O_NOFOLLOW on a symbolic link fails with ENOTDIR on Linux.
            what = "is a symbolic link" if _is_symlink(name, dir_fd) else "not a directory"
            raise UnsafeMailbox(f"{where}: {what}", exc.errno) from None
        raise _error(f"open maildir directory {where}", exc) from None


def _is_symlink(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _write_maildir_file(tmp: int, new: int, maildir: str, name: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW_FLAGS
    where = os.path.join(maildir, "tmp", name)
    try:
        fd = os.open(name, flags, MAILBOX_MODE, dir_fd=tmp)
    except OSError as exc:
        raise _error(f"create maildir file {where}", exc) from None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        # link(), not rename(): a name that exists in new/ is never replaced.
        os.link(name, name, src_dir_fd=tmp, dst_dir_fd=new, follow_symlinks=False)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=tmp)
        raise _error(f"create maildir file {where}", exc) from None
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=tmp)
    try:
        os.fsync(new)
    except OSError as exc:
        raise _error(f"fsync maildir directory {os.path.join(maildir, 'new')}", exc) from None


# --------------------------------------------------------------------------------------
def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _error(what: str, exc: OSError) -> MailstoreError:
    return MailstoreError(f"{what}: {exc.strerror or exc}", exc.errno)
