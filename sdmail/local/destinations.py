"""What local delivery writes or runs for a user: mbox files, Maildirs and commands.

Each `*_action` function returns the action that `agent.run_as` runs in a child that has
already become the user (or default_privs, or an alias file's owner): nothing here changes
privileges. Each action reports a Status with Postfix's texts: `delivered to mailbox`,
`delivered to maildir`, `delivered to file: PATH`, `delivered to command: CMD`.

`Copy` holds what every destination writes: the message content and the headers local
delivery prepends (`Return-Path:`, `X-Original-To:`, `Delivered-To:`, as Postfix's
prepend_delivered_header and enable_original_recipient say); an mbox gets them under a
`From ` line with `>From ` quoting and an empty line after (core/mailstore), a Maildir
file gets them as they are, a command gets the `From ` line and them on its stdin.

A mailbox that cannot be written is deferred, never bounced (4.2.0; 4.3.0 for a full or
read-only file system, whose text names the unit drop-in to edit); only a mailbox that is
full (mailbox_size_limit, EFBIG, EDQUOT) bounces with 5.2.2, as Postfix's.

Failure modes: the actions raise TempFail or PermFail (the child reports them as a
status); `mailstore_status` never raises.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sdmail.agent import ChildResult
from sdmail.core.dsn import Status
from sdmail.core.mailstore import (
    LockPolicy,
    MailboxFull,
    MailstoreError,
    append_mbox,
    deliver_maildir,
    mbox_entry,
    mbox_from_line,
)
from sdmail.core.pipe_command import command_status, run_command

LOCAL_UNIT: Final = "sdmail-local.service"
_FULL: Final = (errno.EFBIG, errno.EDQUOT)
_SYSTEM_TROUBLE: Final = (errno.ENOSPC, errno.EROFS, errno.EIO)

Action = Callable[[], ChildResult | Status]


@dataclass(frozen=True)
class Copy:
    """One message as a destination receives it."""

    sender: str
    file_headers: bytes  # prepended for mailboxes and files
    command_headers: bytes  # prepended for commands
    content: bytes
    when: float


def prepended_headers(
    sender: str, original: str | None, delivered: str | None, with_original: bool
) -> bytes:
    """`Return-Path: <sender>`, `X-Original-To: original`, `Delivered-To: delivered`."""
    lines = [f"Return-Path: <{sender}>\n"]
    if with_original and original:
        lines.append(f"X-Original-To: {original}\n")
    if delivered:
        lines.append(f"Delivered-To: {delivered}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def mailstore_status(exc: MailstoreError, lead: str) -> Status:
    """The status of a failed mailbox write: LEAD, then what went wrong."""
    text = f"{lead}{exc.message}"
    if isinstance(exc, MailboxFull) or exc.errno in _FULL:
        return Status("5.2.2", text)
    if exc.errno == errno.EROFS:
        return Status(
            "4.3.0",
            f"{text} (the path is read-only for {LOCAL_UNIT}: add it to ReadWritePaths= "
            f"with 'systemctl edit {LOCAL_UNIT}')",
        )
    if exc.errno in _SYSTEM_TROUBLE:
        return Status("4.3.0", text)
    return Status("4.2.0", text)


def mbox_action(
    path: str, copy: Copy, policy: LockPolicy, *, size_limit: int, lead: str, success: str
) -> Action:
    """Append COPY to the mbox file PATH; LEAD starts a failure text, SUCCESS is the
    success text."""

    def action() -> Status:
        entry = mbox_entry(copy.sender, copy.file_headers, copy.content, copy.when)
        try:
            append_mbox(path, entry, policy, size_limit=size_limit)
        except MailstoreError as exc:
            return mailstore_status(exc, lead)
        return Status("2.0.0", success)

    return action


def maildir_action(path: str, copy: Copy) -> Action:
    """Deliver COPY into the Maildir PATH."""

    def action() -> Status:
        try:
            deliver_maildir(path, copy.file_headers + copy.content, when=copy.when)
        except MailstoreError as exc:
            return mailstore_status(exc, "maildir delivery failed: ")
        return Status("2.0.0", "delivered to maildir")

    return action


def command_action(
    argv: Sequence[str],
    copy: Copy,
    *,
    env: Mapping[str, str],
    home: str,
    time_limit: float,
    label: str,
) -> Action:
    """Run ARGV with COPY on stdin (the `From ` line, the command headers, the content)."""

    def action() -> Status:
        data = mbox_from_line(copy.sender, copy.when) + copy.command_headers + copy.content
        cwd = home if home and os.access(home, os.X_OK) else "/"
        try:
            result = run_command(argv, data, env=env, cwd=cwd, time_limit=time_limit)
        except OSError as exc:
            return Status("4.3.0", f'cannot execute command "{label}": {exc.strerror or exc}')
        failed = command_status(result, label)
        return failed if failed is not None else Status("2.0.0", f"delivered to command: {label}")

    return action
