"""Mailbox writers: mbox entries and quoting, locking, refusal of unsafe files, Maildir."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.mailstore import (
    LockPolicy,
    LockTimeout,
    MailboxFull,
    MailstoreError,
    UnsafeMailbox,
    append_mbox,
    deliver_maildir,
    locked_mbox,
    maildir_name,
    mbox_entry,
    mbox_from_line,
    quote_from_lines,
)

REPO = Path(__file__).resolve().parents[3]
WHEN = 1_700_000_000.0
FAST = LockPolicy.from_styles(["fcntl", "dotlock"], attempts=3, delay=0.05, stale_after=500)
PATIENT = LockPolicy.from_styles(["fcntl", "dotlock"], attempts=200, delay=0.02, stale_after=500)


def run_python(code: str, *, wait: bool = True) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env)
    if wait:
        assert process.wait(60) == 0
    return process


# -- the mbox entry ---------------------------------------------------------------------
def test_from_line_has_sender_two_spaces_and_asctime() -> None:
    line = mbox_from_line("ann@example.org", WHEN)
    assert line == f"From ann@example.org  {time.asctime(time.localtime(WHEN))}\n".encode()


def test_from_line_of_null_sender_is_mailer_daemon() -> None:
    assert mbox_from_line("", WHEN).startswith(b"From MAILER-DAEMON  ")


def test_entry_quotes_from_lines_and_ends_with_empty_line() -> None:
    content = b"Subject: x\n\nFrom here on\n>From stays\nfrom lower\n From indented\nFrom\n"
    entry = mbox_entry("a@b", b"Return-Path: <a@b>\n", content, WHEN)
    lines = entry.split(b"\n")
    assert lines[0].startswith(b"From a@b  ")
    assert lines[1:] == [
        b"Return-Path: <a@b>",
        b"Subject: x",
        b"",
        b">From here on",
        b">From stays",
        b"from lower",
        b" From indented",
        b"From",
        b"",
        b"",
    ]


def test_entry_adds_line_end_to_content_without_one() -> None:
    entry = mbox_entry("a@b", b"", b"Subject: x\n\nno newline", WHEN)
    assert entry.endswith(b"no newline\n\n")


@given(st.lists(st.sampled_from([b"From x", b">From y", b"From", b"text", b"", b"From  z"])))
def test_quoting_prefixes_exactly_the_lines_starting_with_from_space(lines: list[bytes]) -> None:
    quoted = quote_from_lines(b"\n".join(lines)).split(b"\n")
    expected = [b">" + line if line.startswith(b"From ") else line for line in lines]
    assert quoted == (expected or [b""])
    assert not any(line.startswith(b"From ") for line in quoted)


# -- appending ----------------------------------------------------------------------------
def test_append_creates_private_mailbox_and_appends(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    append_mbox(mailbox, b"first\n\n", FAST, size_limit=0)
    append_mbox(mailbox, b"second\n\n", FAST, size_limit=0)
    assert mailbox.read_bytes() == b"first\n\nsecond\n\n"
    assert stat.S_IMODE(mailbox.stat().st_mode) == 0o600
    assert not (tmp_path / "joe.lock").exists()


def test_concurrent_appends_from_several_processes_keep_messages_whole(tmp_path: Path) -> None:
    mailbox = tmp_path / "shared"
    writers, per_writer = 6, 15
    code = f"""
        from sdmail.core.mailstore import LockPolicy, append_mbox, mbox_entry
        import sys
        policy = LockPolicy.from_styles(["fcntl", "dotlock"], 2000, 0.005, 500)
        writer = int(sys.argv[1])
        for n in range({per_writer}):
            body = "".join(f"writer {{writer}} message {{n}} line {{i}}\\n" for i in range(200))
            entry = mbox_entry("w@x", b"", f"Subject: {{writer}}/{{n}}\\n\\n{{body}}".encode(), 0)
            append_mbox({str(mailbox)!r}, entry, policy, size_limit=0)
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(w)], env=env)
        for w in range(writers)
    ]
    assert [p.wait(120) for p in processes] == [0] * writers
    entries = re.split(rb"^From w@x  .*\n", mailbox.read_bytes(), flags=re.MULTILINE)[1:]
    assert len(entries) == writers * per_writer
    seen = set()
    for entry in entries:
        head, _, body = entry.partition(b"\n\n")
        writer, n = head.removeprefix(b"Subject: ").decode().split("/")
        expected = "".join(f"writer {writer} message {n} line {i}\n" for i in range(200))
        assert body == expected.encode() + b"\n"
        seen.add((writer, n))
    assert len(seen) == writers * per_writer


def test_held_dotlock_delays_then_times_out_leaving_mailbox_alone(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    mailbox.write_bytes(b"old\n")
    (tmp_path / "joe.lock").write_text("12345\n")
    with pytest.raises(LockTimeout, match=r"unable to create lock file .*joe\.lock"):
        append_mbox(mailbox, b"new\n", FAST, size_limit=0)
    assert mailbox.read_bytes() == b"old\n"
    assert (tmp_path / "joe.lock").read_text() == "12345\n"  # not ours: left alone


def test_dotlock_released_by_its_holder_lets_the_append_through(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    lock = tmp_path / "joe.lock"
    lock.write_text("12345\n")
    threading.Timer(0.3, lock.unlink).start()
    append_mbox(mailbox, b"new\n", PATIENT, size_limit=0)
    assert mailbox.read_bytes() == b"new\n"
    assert not lock.exists()


def test_stale_dotlock_is_removed(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    lock = tmp_path / "joe.lock"
    lock.write_text("12345\n")
    os.utime(lock, (time.time() - 1000, time.time() - 1000))
    append_mbox(mailbox, b"new\n", FAST, size_limit=0)
    assert mailbox.read_bytes() == b"new\n"
    assert not lock.exists()


def hold_fcntl_lock(mailbox: Path, seconds: float, ready: Path) -> subprocess.Popen[bytes]:
    code = f"""
        import fcntl, os, time
        fd = os.open({str(mailbox)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        open({str(ready)!r}, "w").close()
        time.sleep({seconds})
    """
    process = run_python(code, wait=False)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "lock holder did not start"
        time.sleep(0.01)
    return process


def test_held_fcntl_lock_times_out_with_dotlock_taken_meanwhile(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    holder = hold_fcntl_lock(mailbox, 5, tmp_path / "ready")
    seen_dotlock: list[bool] = []

    def look() -> None:
        seen_dotlock.append((tmp_path / "joe.lock").exists())

    slow = LockPolicy.from_styles(["fcntl", "dotlock"], attempts=10, delay=0.05, stale_after=500)
    threading.Timer(0.2, look).start()
    try:
        with pytest.raises(LockTimeout, match="unable to lock for exclusive access"):
            append_mbox(mailbox, b"new\n", slow, size_limit=0)
    finally:
        holder.kill()
        holder.wait()
    assert seen_dotlock == [True]
    assert not (tmp_path / "joe.lock").exists()
    assert mailbox.read_bytes() == b""


def test_fcntl_lock_is_released_after_the_append(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    append_mbox(mailbox, b"new\n", FAST, size_limit=0)
    run_python(
        f"""
        import fcntl, os
        fd = os.open({str(mailbox)!r}, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        """
    )


def test_symlinked_mailbox_is_refused_and_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"precious\n")
    (tmp_path / "joe").symlink_to(target)
    with pytest.raises(UnsafeMailbox, match="is a symbolic link"):
        append_mbox(tmp_path / "joe", b"evil\n", FAST, size_limit=0)
    assert target.read_bytes() == b"precious\n"


def test_dangling_symlink_is_refused_without_creating_its_target(tmp_path: Path) -> None:
    (tmp_path / "joe").symlink_to(tmp_path / "created-by-attacker")
    with pytest.raises(UnsafeMailbox):
        append_mbox(tmp_path / "joe", b"evil\n", FAST, size_limit=0)
    assert not (tmp_path / "created-by-attacker").exists()


def test_hard_linked_mailbox_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"precious\n")
    os.link(target, tmp_path / "joe")
    with pytest.raises(UnsafeMailbox, match="2 hard links"):
        append_mbox(tmp_path / "joe", b"evil\n", FAST, size_limit=0)
    assert target.read_bytes() == b"precious\n"


def test_directory_and_fifo_are_refused_without_hanging(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(MailstoreError):
        append_mbox(tmp_path / "dir", b"x\n", FAST, size_limit=0)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(MailstoreError):
        append_mbox(tmp_path / "fifo", b"x\n", FAST, size_limit=0)


def test_size_limit_refuses_the_entry_and_keeps_the_mailbox(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    mailbox.write_bytes(b"x" * 90)
    with pytest.raises(MailboxFull) as caught:
        append_mbox(mailbox, b"y" * 20, FAST, size_limit=100)
    assert caught.value.errno == errno.EFBIG
    assert mailbox.read_bytes() == b"x" * 90


def test_write_error_truncates_back_to_the_old_size(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    mailbox.write_bytes(b"old message\n\n")
    result = tmp_path / "result"
    run_python(
        f"""
        import resource, signal
        from sdmail.core.mailstore import LockPolicy, MailstoreError, append_mbox
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        policy = LockPolicy.from_styles(["fcntl", "dotlock"], 3, 0.01, 500)
        try:
            append_mbox({str(mailbox)!r}, b"z" * 100000, policy, size_limit=0)
        except MailstoreError as exc:
            outcome = f"{{exc.errno}} {{exc}}"
        else:
            outcome = "no error"
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        open({str(result)!r}, "w").write(outcome)
        """
    )
    assert result.read_text().startswith(f"{errno.EFBIG} ")
    assert "error writing message" in result.read_text()
    assert mailbox.read_bytes() == b"old message\n\n"
    assert not (tmp_path / "joe.lock").exists()


def test_unknown_lock_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mailbox lock style: posix"):
        LockPolicy.from_styles(["fcntl", "posix"], 1, 1, 1)


# -- Maildir ------------------------------------------------------------------------------
def test_maildir_delivery_lands_whole_in_new_only(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    data = b"Subject: hi\n\nbody\n"
    path = deliver_maildir(maildir, data, hostname="mail.example.test", when=WHEN)
    assert path.parent == maildir / "new"
    assert path.read_bytes() == data
    assert path.name.endswith(f".mail.example.test,S={len(data)}")
    assert os.listdir(maildir / "tmp") == []
    assert os.listdir(maildir / "cur") == []
    for sub in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE((maildir / sub).stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_nlink == 1


def test_maildir_names_are_unique_within_and_across_processes(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for _ in range(50):
        deliver_maildir(maildir, b"x\n", hostname="h", when=WHEN)
    code = f"""
        from sdmail.core.mailstore import deliver_maildir
        for _ in range(50):
            deliver_maildir({str(maildir)!r}, b"x\\n", hostname="h", when={WHEN})
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env) for _ in range(3)
    ]
    assert [p.wait(60) for p in processes] == [0, 0, 0]
    assert len(os.listdir(maildir / "new")) == 200
    assert os.listdir(maildir / "tmp") == []


def test_maildir_name_shape_and_host_escapes() -> None:
    name = maildir_name(1234, WHEN, "odd/host:name")
    assert re.fullmatch(
        rf"{int(WHEN)}\.M{os.getpid()}_\d+R[0-9a-f]{{16}}\.odd\\057host\\072name,S=1234", name
    )


def test_symlinked_maildir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "Maildir").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeMailbox, match="is a symbolic link"):
        deliver_maildir(tmp_path / "Maildir", b"x\n", hostname="h")
    assert os.listdir(tmp_path / "elsewhere") == []


def test_symlinked_maildir_subdirectory_is_refused(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    maildir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (maildir / "new").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeMailbox, match=r"new: is a symbolic link"):
        deliver_maildir(maildir, b"x\n", hostname="h")
    assert os.listdir(tmp_path / "elsewhere") == []


def test_locked_mbox_holds_both_locks_for_its_block(tmp_path: Path) -> None:
    mailbox = tmp_path / "joe"
    with locked_mbox(mailbox, FAST) as fd:
        assert (tmp_path / "joe.lock").exists()
        with pytest.raises(LockTimeout):
            append_mbox(mailbox, b"other\n", FAST, size_limit=0)
        os.write(fd, b"mine\n")
    assert not (tmp_path / "joe.lock").exists()
    append_mbox(mailbox, b"other\n", FAST, size_limit=0)
    assert mailbox.read_bytes() == b"mine\nother\n"
