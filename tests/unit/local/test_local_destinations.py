"""What a failed mailbox write means, and the headers local delivery prepends."""

from __future__ import annotations

import errno

import pytest

from sdmail.core.mailstore import LockTimeout, MailboxFull, MailstoreError, UnsafeMailbox
from sdmail.local.destinations import mailstore_status, prepended_headers

LEAD = "cannot update mailbox /var/mail/joe for user joe. "


@pytest.mark.parametrize(
    ("failure", "dsn"),
    [
        (
            MailstoreError("cannot open file /var/mail/joe: Permission denied", errno.EACCES),
            "4.2.0",
        ),
        (UnsafeMailbox("/var/mail/joe: is a symbolic link", errno.ELOOP), "4.2.0"),
        (LockTimeout("unable to create lock file /var/mail/joe.lock: File exists"), "4.2.0"),
        (MailstoreError("/var/mail/joe: error writing message: No space", errno.ENOSPC), "4.3.0"),
        (MailboxFull("/var/mail/joe: error writing message: File too large", errno.EFBIG), "5.2.2"),
        (MailstoreError("/var/mail/joe: error writing message: quota", errno.EDQUOT), "5.2.2"),
    ],
)
def test_unwritable_mailboxes_defer_and_only_full_ones_bounce(
    failure: MailstoreError, dsn: str
) -> None:
    status = mailstore_status(failure, LEAD)
    assert status.dsn == dsn
    assert status.text == LEAD + failure.message


def test_read_only_path_names_the_drop_in_to_edit() -> None:
    status = mailstore_status(MailstoreError("x: Read-only file system", errno.EROFS), LEAD)
    assert status.dsn == "4.3.0"
    assert "ReadWritePaths=" in status.text and "systemctl edit sdmail-local.service" in status.text


def test_prepended_headers_in_postfix_order() -> None:
    assert prepended_headers("a@b", "list@x", "joe@x", True) == (
        b"Return-Path: <a@b>\nX-Original-To: list@x\nDelivered-To: joe@x\n"
    )
    assert prepended_headers("", "list@x", None, False) == b"Return-Path: <>\n"
