"""The child's work: walking to the mailbox without following links, and the writes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sdmail.core.mailstore import LockPolicy
from sdmail.virtual.mailbox import Delivery, mailbox_action
from sdmail.virtual.maps import mailbox_place

LOCK = LockPolicy.from_styles(("fcntl", "dotlock"), 2, 0.01, 500)
HEADERS = b"Return-Path: <ann@example.org>\nDelivered-To: joe@x.test\n"
CONTENT = b"Subject: hi\n\nFrom here on\nbody\n"


def delivery(base: Path, result: str, *, size_limit: int = 0) -> Delivery:
    return Delivery(
        place=mailbox_place(str(base), result),
        sender="ann@example.org",
        headers=HEADERS,
        content=CONTENT,
        when=1_700_000_000.0,
        size_limit=size_limit,
        lock=LOCK,
    )


def maildir_files(path: Path) -> list[Path]:
    return sorted((path / "new").iterdir())


def test_a_maildir_and_the_directories_to_it_are_created(tmp_path: Path) -> None:
    status = mailbox_action(delivery(tmp_path, "x.test/joe/"))()
    assert (status.dsn, status.text) == ("2.0.0", "delivered to maildir")
    (written,) = maildir_files(tmp_path / "x.test" / "joe")
    assert written.read_bytes() == HEADERS + CONTENT
    assert (tmp_path / "x.test").stat().st_mode & 0o777 == 0o700


def test_an_mbox_gets_the_from_line_quoting_and_empty_line(tmp_path: Path) -> None:
    (tmp_path / "x.test").mkdir()
    status = mailbox_action(delivery(tmp_path, "x.test/joe"))()
    assert (status.dsn, status.text) == ("2.0.0", "delivered to mailbox")
    text = (tmp_path / "x.test" / "joe").read_bytes()
    first, rest = text.split(b"\n", 1)
    assert re.fullmatch(rb"From ann@example\.org  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", first)
    assert rest == HEADERS + b"Subject: hi\n\n>From here on\nbody\n\n"


def test_an_mbox_whose_directory_is_missing_is_deferred_naming_the_real_path(
    tmp_path: Path,
) -> None:
    status = mailbox_action(delivery(tmp_path, "nowhere/joe"))()
    assert status.dsn == "4.2.0"
    assert f"{tmp_path}/nowhere" in status.text and "/proc" not in status.text
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("result", ["evil/joe/", "evil/joe", "evil/sub/joe/"])
def test_a_symbolic_link_below_the_base_is_never_followed(tmp_path: Path, result: str) -> None:
    base, elsewhere = tmp_path / "base", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    (elsewhere / "sub").mkdir()
    (base / "evil").symlink_to(elsewhere)
    status = mailbox_action(delivery(base, result))()
    assert status.dsn == "4.2.0"
    assert status.text == f"{base}/evil: is a symbolic link"
    assert sorted(p.name for p in elsewhere.rglob("*")) == ["sub"]


def test_a_base_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    status = mailbox_action(delivery(tmp_path / "link", "joe/"))()
    assert (status.dsn, status.text) == ("4.2.0", f"{tmp_path}/link: is a symbolic link")
    assert list(real.iterdir()) == []


def test_a_symbolic_link_as_the_mbox_itself_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    (tmp_path / "joe").symlink_to(target)
    status = mailbox_action(delivery(tmp_path, "joe"))()
    assert status.dsn == "4.2.0" and "symbolic link" in status.text
    assert target.read_bytes() == b""
    assert str(tmp_path / "joe") in status.text


def test_a_maildir_message_over_the_limit_bounces(tmp_path: Path) -> None:
    status = mailbox_action(delivery(tmp_path, "joe/", size_limit=10))()
    assert status.dsn == "5.2.2"
    assert "virtual_mailbox_limit" in status.text
    assert not (tmp_path / "joe" / "new").exists() or maildir_files(tmp_path / "joe") == []


def test_an_mbox_over_the_limit_bounces_and_stays_as_it_was(tmp_path: Path) -> None:
    mbox = tmp_path / "joe"
    mbox.write_bytes(b"x" * 50)
    status = mailbox_action(delivery(tmp_path, "joe", size_limit=60))()
    assert status.dsn == "5.2.2"
    assert mbox.read_bytes() == b"x" * 50


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_an_unwritable_directory_defers(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    status = mailbox_action(delivery(tmp_path, "locked/joe/"))()
    assert status.dsn == "4.2.0"
