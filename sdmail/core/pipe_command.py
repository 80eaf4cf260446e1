"""Running a delivery command with a message on its stdin, and what its exit means (Postfix's
pipe_command.c and sys_exits.c).

Shared by the agents that hand mail to programs: local (`|command` in aliases and
.forward, mailbox_command) and pipe. `run_command` starts ARGV in a session of its own with
the message on stdin and stdout and stderr on one pipe, keeps the first `OUTPUT_LIMIT`
octets of that output, and kills the whole session when the time limit passes. It runs in
a process that already has the rights the command must run with: it never changes
privileges itself. Output is collected until the command exits, so a background child
that keeps the pipe open does not hold the delivery up.

`command_status` turns the result into Postfix's delivery status: exit 0 is success;
output that starts with an enhanced status code (`4.2.2 mailbox full`) gives that code and
text; the sysexits codes 64..78 have Postfix's codes and texts (75 EX_TEMPFAIL and 71
EX_OSERR defer, the others bounce); any other status bounces with `Command died with
status N: "cmd"`; death by a signal defers; passing the time limit bounces with `Command
time limit exceeded`. The command's output follows as `. Command output: ...` with line
breaks and tabs made spaces and other unprintable characters `_`.

`filter_value` replaces what `command_expansion_filter` does not allow in a value handed
to a command (environment, `$name` expansion) by `_`.

Failure modes: `run_command` raises OSError when the command cannot be started (no such
program, cannot fork); a command that fails is a result, never an exception.
`command_status` and `filter_value` never raise.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

from sdmail.core.dsn import Status, is_valid_dsn

OUTPUT_LIMIT: Final = 2048
_CHUNK: Final = 65536
_POLL_INTERVAL: Final = 0.2

# sysexits.h codes as Postfix's sys_exits.c reports them: (enhanced code, text).
SYS_EXITS: Final[Mapping[int, tuple[str, str]]] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}
_LEADING_DSN: Final = re.compile(r"([245]\.\d{1,3}\.\d{1,3})\s+(.*)", re.DOTALL)


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: its exit status, or the signal that killed it, or the time
    limit; and the start of what it wrote on stdout and stderr."""

    exit_status: int | None
    signal: int | None
    timed_out: bool
    output: bytes


def run_command(
    argv: Sequence[str],
    data: bytes,
    *,
    env: Mapping[str, str],
    cwd: str | None,
    time_limit: float,
) -> CommandResult:
    """Run ARGV with DATA on stdin; give up (killing its session) after TIME_LIMIT seconds."""
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=out_write,
            stderr=out_write,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(out_read)
        raise
    finally:
        os.close(out_write)
    try:
        output, timed_out = _converse(process, data, out_read, time.monotonic() + time_limit)
    finally:
        os.close(out_read)
    if timed_out:
        _kill_session(process)
    status = process.wait()
    return CommandResult(
        exit_status=status if status >= 0 else None,
        signal=-status if status < 0 else None,
        timed_out=timed_out,
        output=output,
    )


def _converse(
    process: subprocess.Popen[bytes], data: bytes, out_read: int, deadline: float
) -> tuple[bytes, bool]:
    """Feed DATA and collect output until the command exits; True when time ran out."""
    assert process.stdin is not None
    stdin = process.stdin
    os.set_blocking(stdin.fileno(), False)
    os.set_blocking(out_read, False)
    pending = memoryview(data)
    kept = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(out_read, selectors.EVENT_READ)
        if pending:
            selector.register(stdin.fileno(), selectors.EVENT_WRITE)
        else:
            stdin.close()
        output_open = True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _close_quietly(stdin)
                return bytes(kept), True
            for key, _events in selector.select(min(remaining, _POLL_INTERVAL)):
                if key.fd == out_read:
                    output_open = _read_output(out_read, kept)
                    if not output_open:
                        selector.unregister(out_read)
                else:
                    pending = _write_input(stdin, pending)
                    if not pending:
                        selector.unregister(key.fd)
                        _close_quietly(stdin)
            if not output_open or process.poll() is not None:
                if output_open:
                    _read_output(out_read, kept)  # what is left in the pipe
                _close_quietly(stdin)
                return bytes(kept), False


def _read_output(fd: int, kept: bytearray) -> bool:
    """Read what is there; keep up to OUTPUT_LIMIT octets. False at end of file."""
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        if len(kept) < OUTPUT_LIMIT:
            kept += chunk[: OUTPUT_LIMIT - len(kept)]


def _write_input(stdin: IO[bytes], pending: memoryview) -> memoryview:
    """Write what the pipe takes; an empty view when done or the command stopped reading."""
    fd = stdin.fileno()
    try:
        written = os.write(fd, pending[:_CHUNK])
    except BlockingIOError:
        return pending
    except OSError:  # EPIPE: the command does not want the rest
        return pending[:0]
    return pending[written:]


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        stream.close()


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def printable_output(output: bytes) -> str:
    """Command output for a status text: line breaks and tabs as spaces, unprintable
    characters as `_`, surrounding white space removed."""
    text = output.decode("utf-8", "replace")
    shown = "".join(
        " " if char in "\t\r\n" else ("_" if not char.isprintable() else char) for char in text
    )
    return shown.strip()


def command_status(result: CommandResult, label: str) -> Status | None:
    """The delivery status of RESULT (None: delivered), LABEL naming the command."""
    output = printable_output(result.output)
    suffix = f". Command output: {output}" if output else ""
    if result.timed_out:
        return Status("5.3.0", f'Command time limit exceeded: "{label}"{suffix}')
    if result.signal is not None:
        return Status("4.3.0", f'Command died with signal {result.signal}: "{label}"{suffix}')
    if result.exit_status == 0:
        return None
    leading = _LEADING_DSN.fullmatch(output)
    if leading is not None and is_valid_dsn(leading.group(1)):
        return Status(leading.group(1), leading.group(2))
    known = SYS_EXITS.get(result.exit_status or 0)
    if known is not None:
        dsn, text = known
        return Status(dsn, text + suffix)
    return Status("5.3.0", f'Command died with status {result.exit_status}: "{label}"{suffix}')


def filter_value(text: str, allowed: str) -> str:
    """TEXT with every character not in ALLOWED replaced by `_` (command_expansion_filter)."""
    permitted = frozenset(allowed)
    return "".join(char if char in permitted else "_" for char in text)
