"""Delivery commands: stdin, output, time limit, and Postfix's reading of exit statuses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.pipe_command import (
    OUTPUT_LIMIT,
    SYS_EXITS,
    CommandResult,
    command_status,
    filter_value,
    printable_output,
    run_command,
)

ENV = {"PATH": "/usr/bin:/bin"}


def sh(script: str, data: bytes = b"", time_limit: float = 30) -> CommandResult:
    return run_command(["/bin/sh", "-c", script], data, env=ENV, cwd="/", time_limit=time_limit)


def test_command_reads_the_message_on_stdin(tmp_path: Path) -> None:
    message = b"Subject: x\n\n" + b"line\n" * 50000
    result = sh(f"cat > {tmp_path}/out", message)
    assert result == CommandResult(0, None, False, b"")
    assert (tmp_path / "out").read_bytes() == message


def test_command_that_ignores_stdin_still_succeeds() -> None:
    assert sh("exit 0", b"x" * 1_000_000).exit_status == 0


def test_environment_and_directory_are_the_given_ones(tmp_path: Path) -> None:
    result = run_command(
        ["/bin/sh", "-c", 'echo "$SENDER $PWD"'],
        b"",
        env={**ENV, "SENDER": "ann@example.org"},
        cwd=str(tmp_path),
        time_limit=30,
    )
    assert result.output == f"ann@example.org {tmp_path}\n".encode()


def test_output_is_kept_up_to_the_limit() -> None:
    result = sh("head -c 100000 /dev/zero | tr '\\0' a; exit 3")
    assert result.exit_status == 3
    assert result.output == b"a" * OUTPUT_LIMIT


def test_time_limit_kills_the_whole_session() -> None:
    started = time.monotonic()
    result = sh("sleep 60 & sleep 60", time_limit=0.5)
    assert result.timed_out
    assert time.monotonic() - started < 10


def test_background_child_holding_the_output_does_not_hold_up_delivery() -> None:
    started = time.monotonic()
    result = sh("echo hi; sleep 30 &", time_limit=20)
    assert result.exit_status == 0
    assert not result.timed_out
    assert time.monotonic() - started < 10


def test_killed_command_reports_its_signal() -> None:
    result = sh("kill -TERM $$")
    assert result.signal == 15


def test_missing_program_raises_oserror() -> None:
    with pytest.raises(OSError):
        run_command(["/nonexistent/program"], b"", env=ENV, cwd="/", time_limit=5)


# -- statuses -----------------------------------------------------------------------------
def test_success_has_no_status() -> None:
    assert command_status(CommandResult(0, None, False, b"whatever"), "cmd") is None


def test_tempfail_defers_with_postfix_text_and_output() -> None:
    status = command_status(CommandResult(75, None, False, b"try later\n"), "cmd")
    assert status is not None
    assert (status.dsn, status.text) == ("4.3.0", "temporary failure. Command output: try later")


def test_other_status_bounces_naming_command_and_output() -> None:
    status = command_status(CommandResult(1, None, False, b"no\tway\n\x01"), "/bin/false -x")
    assert status is not None
    assert status.dsn == "5.3.0"
    assert status.text == 'Command died with status 1: "/bin/false -x". Command output: no way _'


def test_output_with_enhanced_code_sets_the_status() -> None:
    status = command_status(CommandResult(1, None, False, b"4.2.2 mailbox full\n"), "cmd")
    assert status is not None
    assert (status.dsn, status.text) == ("4.2.2", "mailbox full")


def test_time_limit_bounces_and_signal_defers() -> None:
    timed = command_status(CommandResult(None, 9, True, b""), "cmd")
    killed = command_status(CommandResult(None, 9, False, b""), "cmd")
    assert timed is not None and killed is not None
    assert (timed.dsn, timed.text) == ("5.3.0", 'Command time limit exceeded: "cmd"')
    assert (killed.dsn, killed.text) == ("4.3.0", 'Command died with signal 9: "cmd"')


@pytest.mark.parametrize("code", sorted(SYS_EXITS))
def test_every_sysexit_has_its_class(code: int) -> None:
    status = command_status(CommandResult(code, None, False, b""), "cmd")
    assert status is not None
    assert status.is_temporary == (code in (71, 75))
    assert status.text == SYS_EXITS[code][1]


@given(st.binary(max_size=300))
def test_printable_output_is_one_printable_line(output: bytes) -> None:
    shown = printable_output(output)
    assert "\n" not in shown and "\t" not in shown
    assert all(char.isprintable() for char in shown)


def test_filter_value_replaces_unsafe_characters() -> None:
    assert filter_value("joe+x;rm -rf $HOME`", "abcdefghijklmnopqrstuvwxyz+") == (
        "joe+x_rm__rf_______"
    )


def test_run_command_leaves_no_descriptor_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        sh("echo x", b"y")
    assert len(os.listdir("/proc/self/fd")) == before
