"""postlog (sdmail/postlog.py): records into a journal socket (a datagram socket standing in
for journald's, the door core/log writes to), the stderr fallback, and a terminal."""

from __future__ import annotations

import io
import os
import pty
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmail.postlog import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text("")
    return tmp_path


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "journal.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield path, sock


def entries(sock: socket.socket) -> list[dict[str, str]]:
    """Every datagram waiting on SOCK, as journal fields (values without line breaks)."""
    found = []
    sock.settimeout(0.2)
    while True:
        try:
            datagram = sock.recv(65536)
        except TimeoutError:
            return found
        fields = dict(
            line.split("=", 1) for line in datagram.decode("utf-8", "surrogateescape").splitlines()
        )
        found.append(fields)


def postlog(config_dir: Path, journal_path: Path, *args: str, stdin: bytes = b"") -> int:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        return main(["-c", str(config_dir), *args], journal_socket=journal_path)
    finally:
        sys.stdin = saved


def test_the_text_becomes_one_journal_entry_with_sdmails_fields(config_dir, journal, capsys):
    path, sock = journal
    assert postlog(config_dir, path, "backup", "of", "the", "queue", "done") == 0
    (entry,) = entries(sock)
    assert entry["MESSAGE"] == "backup of the queue done"
    assert entry["SYSLOG_IDENTIFIER"] == "sdmail/postlog"
    assert (entry["PRIORITY"], entry["SYSLOG_FACILITY"]) == ("6", "2")
    assert entry["SDMAIL_COMPONENT"] == "postlog"
    assert int(entry["SYSLOG_PID"]) == os.getpid()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("priority", "journal_priority", "prefix"),
    [
        ("info", "6", ""),
        ("warn", "4", "warning: "),
        ("WARNING", "4", "warning: "),
        ("error", "3", "error: "),
        ("err", "3", "error: "),
        ("fatal", "2", "fatal: "),
        ("crit", "2", "fatal: "),
        ("panic", "2", "panic: "),
    ],
)
def test_priorities_are_postfixs(config_dir, journal, priority, journal_priority, prefix):
    path, sock = journal
    assert postlog(config_dir, path, "-p", priority, "text") == 0
    (entry,) = entries(sock)
    assert (entry["PRIORITY"], entry["MESSAGE"]) == (journal_priority, prefix + "text")


def test_the_tag_names_the_entry_and_syslog_name_the_default_one(config_dir, journal):
    path, sock = journal
    assert postlog(config_dir, path, "-t", "nightly-backup", "-i", "x") == 0
    (config_dir / "main.cf").write_text("syslog_name = mx2\n")
    assert postlog(config_dir, path, "y") == 0
    assert [e["SYSLOG_IDENTIFIER"] for e in entries(sock)] == ["nightly-backup", "mx2/postlog"]


def test_each_line_of_stdin_is_one_entry_when_there_is_no_text(config_dir, journal):
    path, sock = journal
    assert postlog(config_dir, path, "-t", "t", stdin=b"first\n\nthird \xff\n") == 0
    messages = [e["MESSAGE"] for e in entries(sock)]
    assert messages == ["first", "", "third \udcff"]  # the byte as it came


def test_a_bad_severity_is_fatal_and_logs_nothing(config_dir, journal, capsys):
    path, sock = journal
    assert postlog(config_dir, path, "-p", "loud", "x") == 1
    assert capsys.readouterr().err == 'postlog: fatal: bad severity: "loud"\n'
    assert [e["MESSAGE"] for e in entries(sock)] == ['fatal: bad severity: "loud"']


def test_without_a_journal_the_lines_go_to_stderr(config_dir, tmp_path, capsys):
    assert postlog(config_dir, tmp_path / "no-journal", "-t", "t", "-p", "warn", "x") == 0
    assert capsys.readouterr().err == f"t[{os.getpid()}]: warning: x\n"


def test_on_a_terminal_the_line_is_shown_there_too(config_dir, tmp_path):
    controller, terminal = pty.openpty()
    with os.fdopen(controller, "rb", buffering=0) as screen:
        result = subprocess.run(
            [sys.executable, "-m", "sdmail.postlog", "-c", str(config_dir), "-p", "error", "x"],
            stderr=terminal,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        os.close(terminal)
        shown = screen.read(200)
    assert result.returncode == 0
    assert shown == b"sdmail/postlog: error: x\r\n"


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("postlog: ")
