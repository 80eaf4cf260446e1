"""What the child does as the mailbox owner: walk from `virtual_mailbox_base` to the
mailbox's directory without following links, then write the mailbox with core/mailstore.

`mailbox_action(delivery)` is an action for `agent.run_as`; the child has already become
the mailbox owner, nothing here changes privileges. The walk opens the base and each
directory below it relative to the one before with O_NOFOLLOW | O_DIRECTORY (creating a
missing one, mode 0700, on the way to a Maildir), and the write goes to
`/proc/self/fd/N/NAME`, NAME inside the directory the walk holds open: neither a
symbolic link nor a directory renamed after the walk can send it elsewhere. Texts in
statuses name the real path, never the /proc one.

A write that fails defers (4.2.0), except a mailbox over `virtual_mailbox_limit` or a
full quota, which bounces (5.2.2), and a full or read-only file system (4.3.0, the latter
naming the unit drop-in to edit), as local delivery decides.

Failure modes: the action never raises; every outcome is a Status. `mailstore_status`
never raises.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sdmail.core.dsn import Status
from sdmail.core.mailstore import (
    LockPolicy,
    MailboxFull,
    MailstoreError,
    UnsafeMailbox,
    append_mbox,
    deliver_maildir,
    mbox_entry,
)
from sdmail.virtual.maps import MailboxPlace

VIRTUAL_UNIT: Final = "sdmail-virtual.service"
PROC_FD: Final = "/proc/self/fd"
_FULL: Final = (errno.EFBIG, errno.EDQUOT)
_SYSTEM_TROUBLE: Final = (errno.ENOSPC, errno.EROFS, errno.EIO)
_DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAILDIR_PARENT_MODE: Final = 0o700


@dataclass(frozen=True)
class Delivery:
    """One message for one virtual mailbox, as the child writes it."""

    place: MailboxPlace
    sender: str
    headers: bytes  # Return-Path:, X-Original-To:, Delivered-To:
    content: bytes
    when: float
    size_limit: int  # virtual_mailbox_limit; 0: none
    lock: LockPolicy


def mailbox_action(delivery: Delivery) -> Callable[[], Status]:
    """The action that writes DELIVERY (see the module docstring)."""

    def action() -> Status:
        place = delivery.place
        try:
            parent = open_parent(place, create=place.maildir)
        except MailstoreError as exc:
            return mailstore_status(exc)
        try:
            inside = f"{PROC_FD}/{parent}"
            if not os.path.isdir(inside):
                return Status("4.3.0", f"{PROC_FD} is not available: virtual delivery needs /proc")
            try:
                return _write(delivery, f"{inside}/{place.name}")
            except MailstoreError as exc:
                exc.message = exc.message.replace(inside, place.parent)
                return mailstore_status(exc)
        finally:
            os.close(parent)

    return action


def _write(delivery: Delivery, target: str) -> Status:
    if delivery.place.maildir:
        data = delivery.headers + delivery.content
        if 0 < delivery.size_limit < len(data):
            raise MailboxFull(
                f"maildir {delivery.place.path}: message is larger than virtual_mailbox_limit "
                f"({delivery.size_limit} bytes)",
                errno.EFBIG,
            )
        deliver_maildir(target, data, when=delivery.when)
        return Status("2.0.0", "delivered to maildir")
    entry = mbox_entry(delivery.sender, delivery.headers, delivery.content, delivery.when)
    append_mbox(target, entry, delivery.lock, size_limit=delivery.size_limit)
    return Status("2.0.0", "delivered to mailbox")


def open_parent(place: MailboxPlace, *, create: bool) -> int:
    """A descriptor of the directory that holds PLACE's mailbox, reached from the base
    without following a link; CREATE makes missing directories on the way."""
    fd = _open_directory(place.base, None, place.base)
    where = place.base.rstrip("/")
    try:
        for name in place.directories:
            where = f"{where}/{name}"
            if create:
                _make_directory(name, fd, where)
            inner = _open_directory(name, fd, where)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_directory(name: str, dir_fd: int, where: str) -> None:
    try:
        os.mkdir(name, MAILDIR_PARENT_MODE, dir_fd=dir_fd)
    except FileExistsError:
        pass  # a link or a file in the way is refused when it is opened
    except OSError as exc:
        raise MailstoreError(
            f"cannot create directory {where}: {exc.strerror}", exc.errno
        ) from None


def _open_directory(name: str, dir_fd: int | None, where: str) -> int:
    try:
        return os.open(name, _DIRECTORY_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            # O_DIRECTORY | O_NOFOLLOW on a symbolic link fails with ENOTDIR on Linux.
            what = "is a symbolic link" if _is_link(name, dir_fd) else "is not a directory"
            raise UnsafeMailbox(f"{where}: {what}", exc.errno) from None
        raise MailstoreError(f"cannot open directory {where}: {exc.strerror}", exc.errno) from None


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def mailstore_status(exc: MailstoreError) -> Status:
    """The status of a failed mailbox write (see the module docstring)."""
    if isinstance(exc, MailboxFull) or exc.errno in _FULL:
        return Status("5.2.2", exc.message)
    if exc.errno == errno.EROFS:
        return Status(
            "4.3.0",
            f"{exc.message} (the path is read-only for {VIRTUAL_UNIT}: add it to "
            f"ReadWritePaths= with 'systemctl edit {VIRTUAL_UNIT}')",
        )
    if exc.errno in _SYSTEM_TROUBLE:
        return Status("4.3.0", exc.message)
    return Status("4.2.0", exc.message)
