"""bench/smtpd: messages per second sdmail's smtpd accepts into a durable queue, beside Postfix.

USAGE
    bench/smtpd [--quick] [--json] [--dir DIR]

The load is Postfix's own `smtp-source` (Debian's postfix package, unpacked into the scratch
directory as bench/_postfix.py does, never installed): 4 KB messages, one per connection
(HELO, MAIL, RCPT, DATA, QUIT), from 1, 10 and 50 parallel sessions. A round is one
smtp-source run of a fixed number of messages, timed from its start to its exit; the
figure is messages over seconds, the median of the rounds (interleaved, bench/_figures.py).

sdmail: `python3 -m sdmail.smtpd -l 127.0.0.1:PORT`, one process as systemd would run it,
with a main.cf of its own: a queue below the scratch directory (each accepted message is a
queue file in incoming/, fsynced with its directory before the 250, as always), no reverse
DNS look-up (`smtpd_peername_lookup = no`), no recipient table (`local_recipient_maps =`),
its log lines to a file. Every round checks that every message is in incoming/, then
empties it (not timed).

Postfix: its `smtp-sink` from the same package, which answers SMTP and throws every message
away: the fast reference, not a Postfix smtpd configured to discard. Postfix's smtpd cannot
run without its master, its queue and its users (postfix, postdrop) in place, which an
unpacked package does not give; smtp-sink is what Postfix's own documentation uses to
measure a client, and it does no queue writes, so the ratio sdmail/smtp-sink is a floor of
what sdmail/Postfix-smtpd would be. sdmail's figures are the claim; the ratio says how far
from "the network and SMTP alone" they are.

Exit status: 0 with the table (or --json: one JSON object) on stdout; 1 with one line
`bench/smtpd: fatal: ...` when smtp-source cannot be had (sdmail cannot be measured without
it) or a round loses a message; 2 for a usage error. The scratch directory is removed at
the end, and the smtpd and smtp-sink processes stopped, also after an error or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from _figures import BenchError, Figure, Spec, as_json, measure, ratio, render_table
from _postfix import PostfixUnavailable, find_package

from sdmail.core.spool import Spool

REPOSITORY = Path(__file__).resolve().parent.parent
SESSIONS = (1, 10, 50)
MESSAGE_BYTES = 4096
SENDER = "bench@client.example"
RECIPIENT = "postmaster@bench.example"
_START_SECONDS = 30
_ROUND_TIMEOUT = 600


@dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    messages: dict[int, int]  # sdmail's messages per round, by parallel sessions
    sink_factor: int  # smtp-sink's rounds send this many times more (it is much faster)


FULL = Plan("full run", rounds=3, messages={1: 300, 10: 1500, 50: 2500}, sink_factor=5)
QUICK = Plan("quick run", rounds=1, messages={1: 10, 10: 40, 50: 100}, sink_factor=2)


@dataclass(frozen=True)
class PostfixTools:
    source: Path
    sink: Path
    env: dict[str, str]
    version: str


def unpack_tools(workdir: Path) -> PostfixTools:
    """smtp-source and smtp-sink from Debian's postfix package, unpacked below WORKDIR."""
    workdir.mkdir()
    package = find_package(workdir)
    root = workdir / "root"
    for command in (["dpkg-deb", "-x", str(package), str(root)],):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PostfixUnavailable(f"{' '.join(command)}: {done.stderr.strip()}")
    version = subprocess.run(
        ["dpkg-deb", "-f", str(package), "Version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    libraries = str(root / "usr" / "lib" / "postfix")
    env = dict(os.environ, LD_LIBRARY_PATH=libraries)
    tools = PostfixTools(
        root / "usr" / "sbin" / "smtp-source", root / "usr" / "sbin" / "smtp-sink", env, version
    )
    for tool in (tools.source, tools.sink):
        if not tool.is_file():
            raise PostfixUnavailable(f"{package.name} holds no {tool.name}")
    return tools


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with status {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on port {port} within {_START_SECONDS} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def sdmail_smtpd(work: Path) -> Iterator[tuple[int, Path]]:
    """sdmail's smtpd on a port of its own, with its queue; (port, incoming/)."""
    queue, config = work / "spool", work / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        "myhostname = bench.example\n"
        f"queue_directory = {queue}\nsocket_directory = {work / 'run'}\n"
        "local_recipient_maps =\nsmtpd_peername_lookup = no\n"
        "max_idle = 3600s\nmax_use = 100000000\n",
        encoding="ascii",
    )
    queue.mkdir()
    with Spool(queue) as spool:
        spool.create_directories()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    command = [sys.executable, "-m", "sdmail.smtpd", "-c", str(config), "-l", f"127.0.0.1:{port}"]
    with open(work / "smtpd.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for_port(port, process, "sdmail's smtpd")
        yield port, queue / "incoming"
    finally:
        stop(process)


@contextmanager
def smtp_sink(tools: PostfixTools) -> Iterator[int]:
    port = free_port()
    command = [str(tools.sink)]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to run as root
    command += [f"127.0.0.1:{port}", "256"]
    process = subprocess.Popen(
        command, env=tools.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process, "smtp-sink")
        yield port
    finally:
        stop(process)


def source_round(
    tools: PostfixTools, port: int, sessions: int, messages: int, check: Callable[[], None]
) -> float:
    """Messages per second of one smtp-source run; CHECK then verifies and tidies up."""
    command = [
        str(tools.source), "-s", str(sessions), "-m", str(messages), "-l", str(MESSAGE_BYTES),
        "-f", SENDER, "-t", RECIPIENT, "-M", "client.example", f"127.0.0.1:{port}",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command, env=tools.env, capture_output=True, text=True, timeout=_ROUND_TIMEOUT, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"smtp-source exited {done.returncode}: {done.stderr.strip()[-300:]}")
    check()
    return messages / seconds


def queue_check(incoming: Path, messages: int) -> Callable[[], None]:
    def check() -> None:
        names = os.listdir(incoming)
        if len(names) != messages:
            raise BenchError(f"{messages} messages sent, {len(names)} queue files in incoming/")
        for name in names:
            (incoming / name).unlink()

    return check


def run(plan: Plan, work: Path) -> list[Figure]:
    try:
        tools = unpack_tools(work / "postfix")
    except PostfixUnavailable as exc:
        raise BenchError(f"Postfix's smtp-source is not available: {exc}") from None
    figures: list[Figure] = []
    with sdmail_smtpd(work) as (sdmail_port, incoming), smtp_sink(tools) as sink_port:
        specs = []
        for sessions in SESSIONS:
            count = plan.messages[sessions]
            sink_count = count * plan.sink_factor
            specs += [
                Spec(
                    1,
                    f"sdmail_smtpd_{sessions}_sessions",
                    f"sdmail smtpd, durable queue, {sessions} parallel sessions",
                    "msgs/s",
                    _round(tools, sdmail_port, sessions, count, queue_check(incoming, count)),
                ),
                Spec(
                    2,
                    f"postfix_smtp_sink_{sessions}_sessions",
                    f"Postfix {tools.version} smtp-sink (discards), {sessions} sessions",
                    "msgs/s",
                    _round(tools, sink_port, sessions, sink_count, lambda: None),
                ),
            ]
        measured = measure(specs, plan.rounds)
    by_key = {figure.key: figure for figure in measured}
    for sessions in SESSIONS:
        sdmail = by_key[f"sdmail_smtpd_{sessions}_sessions"]
        sink = by_key[f"postfix_smtp_sink_{sessions}_sessions"]
        figures += [
            sdmail,
            sink,
            ratio(
                2, f"sdmail_vs_smtp_sink_{sessions}_sessions", "sdmail ÷ smtp-sink", sdmail, sink
            ),
        ]
    return figures


def _round(
    tools: PostfixTools, port: int, sessions: int, messages: int, check: Callable[[], None]
) -> Callable[[], float]:
    return lambda: source_round(tools, port, sessions, messages, check)


def describe_run(plan: Plan, work: Path) -> dict[str, Any]:
    return {
        "plan": plan.name,
        "rounds": plan.rounds,
        "messages_per_round": {str(k): v for k, v in plan.messages.items()},
        "message_bytes": MESSAGE_BYTES,
        "directory": str(work),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def render(run_info: dict[str, Any], figures: Sequence[Figure]) -> str:
    header = [
        f"sdmail smtpd benchmark, {run_info['plan']}: smtp-source, {MESSAGE_BYTES}-byte messages,"
        " one per connection; each figure the median of its rounds",
        f"  directory: {run_info['directory']}",
        f"  machine:   {run_info['cpus']} CPUs, Python {run_info['python']}",
        "",
    ]
    return "\n".join(header) + render_table(figures)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/smtpd",
        description="Messages per second sdmail's smtpd queues, beside Postfix's smtp-sink.",
    )
    parser.add_argument("--quick", action="store_true", help="one short round per figure")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="scratch below DIR")
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    plan = QUICK if options.quick else FULL
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        work = Path(tempfile.mkdtemp(prefix="sdmail-bench-smtpd-", dir=options.dir))
    except OSError as exc:
        print(f"bench/smtpd: fatal: cannot make a directory in {options.dir}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        run_info = describe_run(plan, work)
        figures = run(plan, work)
    except KeyboardInterrupt:
        print("bench/smtpd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure is one line, and the directory still goes
        print(f"bench/smtpd: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if options.json:
        report = {"run": run_info, "figures": {f.key: as_json(f) for f in figures}}
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(run_info, figures))
    return 0
