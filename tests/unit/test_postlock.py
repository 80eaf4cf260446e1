"""postlock (sdmail/postlock.py): the command runs under local delivery's own mailbox locks,
raced against real appends through core/mailstore from other processes; held locks, stale
dot-locks, unsafe mailboxes and exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# Appends entries to the mbox through core/mailstore, as local delivery does, until the
# file STOP exists, with a policy patient enough to wait out every postlock run; prints
# how many it appended.
APPENDER = textwrap.dedent(
    """
    import os, sys, time
    from sdmail.core.mailstore import LockPolicy, append_mbox, mbox_entry
    path, stop = sys.argv[1], sys.argv[2]
    policy = LockPolicy.from_styles(["fcntl", "dotlock"], 4000, 0.005, 500)
    n = 0
    while not os.path.exists(stop):
        body = b"Subject: %d\\n\\nline one of %d\\nline two of %d\\n" % (n, n, n)
        append_mbox(path, mbox_entry("a@example.org", b"", body, 0), policy, size_limit=0)
        n += 1
        time.sleep(0.005)  # a busy mailbox, but one a 1 s lock retry can get into
    print(n)
    """
)


def write_main_cf(config_dir: Path, extra: str = "") -> Path:
    (config_dir / "main.cf").write_text(extra)
    return config_dir


def postlock(config_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdmail.postlock", "-c", str(config_dir), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def test_no_message_is_appended_while_the_command_holds_the_lock(tmp_path):
    config_dir = write_main_cf(tmp_path)
    mbox, stop = tmp_path / "mbox", tmp_path / "stop"
    appender = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(mbox), str(stop)], env=ENV, stdout=subprocess.PIPE
    )
    edits = 10
    try:
        for _ in range(edits):
            # A slow edit of the mailbox, as a mail reader's: two writes with a pause between.
            script = f"echo BEGIN >> {mbox}; sleep 0.05; echo END >> {mbox}"
            result = postlock(config_dir, str(mbox), "sh", "-c", script)
            assert (result.returncode, result.stderr) == (0, "")
    finally:
        stop.touch()
        out, _ = appender.communicate(timeout=120)
    assert appender.returncode == 0
    count = int(out)
    lines = mbox.read_text().splitlines()
    assert count > edits and lines.count("BEGIN") == lines.count("END") == edits
    for index, line in enumerate(lines):
        if line == "BEGIN":
            assert lines[index + 1] == "END", lines[index - 3 : index + 4]
    for n in range(count):
        start = lines.index(f"Subject: {n}")
        assert lines[start + 1 : start + 4] == ["", f"line one of {n}", f"line two of {n}"]


def test_the_command_s_exit_status_is_postlock_s(tmp_path):
    config_dir = write_main_cf(tmp_path)
    assert postlock(config_dir, str(tmp_path / "mbox"), "sh", "-c", "exit 7").returncode == 7
    assert postlock(config_dir, str(tmp_path / "mbox"), "sh", "-c", "kill -9 $$").returncode == 1


def test_a_missing_mailbox_is_created_private(tmp_path):
    config_dir = write_main_cf(tmp_path)
    assert postlock(config_dir, str(tmp_path / "new"), "true").returncode == 0
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "new.lock").exists()


def test_a_lock_held_elsewhere_fails_with_75_after_the_configured_attempts(tmp_path):
    config_dir = write_main_cf(tmp_path, "deliver_lock_attempts = 3\ndeliver_lock_delay = 1s\n")
    mbox = tmp_path / "mbox"
    holder = subprocess.Popen(
        [sys.executable, "-m", "sdmail.postlock", "-c", str(config_dir), str(mbox), "sleep", "8"],
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "mbox.lock").exists():
            assert time.monotonic() < deadline, "the first postlock never locked"
            time.sleep(0.02)
        started = time.monotonic()
        result = postlock(config_dir, str(mbox), "true")
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 75
    assert result.stderr == (
        f"postlock: fatal: unable to create lock file {mbox}.lock: File exists\n"
    )
    assert waited >= 2  # three attempts, a second apart


def test_a_fcntl_lock_held_elsewhere_is_waited_for_then_taken(tmp_path):
    config_dir = write_main_cf(tmp_path, "deliver_lock_attempts = 50\ndeliver_lock_delay = 1s\n")
    mbox = tmp_path / "mbox"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdmail.postlock",
            "-c",
            str(config_dir),
            "-l",
            "fcntl",
            str(mbox),
            "sh",
            "-c",
            f"touch {tmp_path}/held; sleep 1.5",
        ],
        env=ENV,
    )
    try:
        while not (tmp_path / "held").exists():
            time.sleep(0.02)
        result = postlock(config_dir, "-l", "fcntl", str(mbox), "sh", "-c", f"echo after >> {mbox}")
    finally:
        holder.wait(timeout=30)
    assert result.returncode == 0 and mbox.read_text() == "after\n"


def test_a_stale_dot_lock_is_removed(tmp_path):
    config_dir = write_main_cf(tmp_path, "stale_lock_time = 10s\ndeliver_lock_delay = 1s\n")
    lock = tmp_path / "mbox.lock"
    lock.write_text("12345\n")
    os.utime(lock, (time.time() - 60,) * 2)
    assert postlock(config_dir, str(tmp_path / "mbox"), "true").returncode == 0
    assert not lock.exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_an_unsafe_mailbox_is_refused_with_75_and_the_command_never_runs(tmp_path, kind):
    config_dir = write_main_cf(tmp_path)
    target, mbox = tmp_path / "target", tmp_path / "mbox"
    target.write_text("x\n")
    if kind == "symlink":
        mbox.symlink_to(target)
    elif kind == "hardlink":
        os.link(target, mbox)
    else:
        os.mkfifo(mbox)
    result = postlock(config_dir, str(mbox), "touch", str(tmp_path / "ran"))
    assert result.returncode == 75
    assert result.stderr.startswith("postlock: fatal: ") and f"{mbox}:" in result.stderr
    assert not (tmp_path / "ran").exists() and target.read_text() == "x\n"


@pytest.mark.parametrize(
    ("args", "status", "error"),
    [
        (["-l", "posix", "MBOX", "true"], 75, "unknown mailbox lock style: posix"),
        (["MBOX", "no-such-command-here"], 75, "execvp no-such-command-here: No such file"),
        (["MBOX"], 64, "a command to run is required"),
    ],
)
def test_bad_input_is_one_fatal_line(tmp_path, args, status, error):
    config_dir = write_main_cf(tmp_path)
    args = [str(tmp_path / "mbox") if a == "MBOX" else a for a in args]
    result = postlock(config_dir, *args)
    assert result.returncode == status
    assert result.stderr.startswith(f"postlock: fatal: {error}") and result.stderr.count("\n") == 1


def test_help_exits_0():
    result = subprocess.run(
        [sys.executable, "-m", "sdmail.postlock", "--help"], capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 0 and result.stdout.startswith("postlock: ")
