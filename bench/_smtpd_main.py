"""bench/smtpd: messages per second sdmail's smtpd accepts into a durable queue, beside Postfix's.

USAGE
    bench/smtpd [--quick] [--json] [--dir DIR]

The load is Postfix's own `smtp-source` (Debian's postfix package, unpacked into the scratch
directory, never installed: bench/_postfix_master.py): 4 KB messages, one per connection
(HELO, MAIL, RCPT, DATA, QUIT), from 1, 10 and 50 parallel sessions. A round is one
smtp-source run of a fixed number of messages, timed from its start to its exit; the
figure is messages over seconds, the median of the rounds, the two sides' rounds
interleaved (bench/_figures.py), and the ratio sdmail/Postfix for each number of sessions.

sdmail: `python3 -m sdmail.smtpd -l 127.0.0.1:PORT`, one process as systemd would run it,
with a main.cf of its own: a queue below the scratch directory (each accepted message is a
queue file in incoming/, fsynced with its directory before the 250, as always), no reverse
DNS look-up (`smtpd_peername_lookup = no`), no recipient table (`local_recipient_maps =`),
its log lines to a file. Every round checks that every message is in incoming/, then
empties it (not timed). No qmgr runs: the figure is the SMTP server and its durable queue.

Postfix: Debian's Postfix, whole, as bench/delivery runs it: its master as root with a
private configuration and queue below the scratch directory, its smtpd on 127.0.0.1:PORT
(`smtpd_peername_lookup = no` too), configured to discard: every message is queued by
cleanup (fsynced before the 250, as sdmail's) and qmgr hands it to the `discard` transport
(`default_transport = relay_transport = discard`). Postfix's qmgr and discard agent run
while smtp-source sends (sdmail's side has no such work); after each round, not timed, the
queue must empty and the log must show `status=sent` for every message. Postfix's figures
read `not measured: why` where its master cannot run (it needs root) or the package cannot
be had; sdmail's are then still taken.

Exit status: 0 with the table (or --json: one JSON object) on stdout; 1 with one line
`bench/smtpd: fatal: ...` when smtp-source cannot be had (nothing can be measured without
it) or a round loses a message; 2 for a usage error. The scratch directory is removed at
the end, and smtpd and Postfix's master stopped, also after an error or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _figures import BenchError, Figure, NotMeasured, Spec, measure, ratio, render_table
from _postfix import PostfixUnavailable
from _postfix_master import PostfixMaster, Unpacked
from _processes import free_port, listening, stop, wait_until
from _run import run_in_scratch

from sdmail.core.spool import Spool

REPOSITORY = Path(__file__).resolve().parent.parent
SESSIONS = (1, 10, 50)
MESSAGE_BYTES = 4096
SENDER = "bench@client.example"
RECIPIENT = "postmaster@bench.example"
_START_SECONDS = 30
_ROUND_TIMEOUT = 600
_DRAIN_SECONDS = 600


@dataclass(frozen=True)
class Plan:
    name: str
    rounds: int
    messages: dict[int, int]  # messages per round, by parallel sessions


FULL = Plan("full run", rounds=3, messages={1: 300, 10: 1500, 50: 2500})
QUICK = Plan("quick run", rounds=1, messages={1: 10, 10: 40, 50: 100})


@dataclass(frozen=True)
class Target:
    """An SMTP server under test: its port, and what verifies and tidies a round's work."""

    port: int
    check: Callable[[int], None]  # called with the messages the round sent


@contextmanager
def sdmail_smtpd(work: Path) -> Iterator[Target]:
    """sdmail's smtpd on a port of its own, with its queue."""
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
        if not wait_until(lambda: process.poll() is not None or listening(port), _START_SECONDS):
            raise BenchError(f"sdmail's smtpd did not listen within {_START_SECONDS} s")
        if process.poll() is not None:
            raise BenchError(f"sdmail's smtpd exited with status {process.returncode} at start")
        yield Target(port, _queue_check(queue / "incoming"))
    finally:
        stop(process, grace=10)


def _queue_check(incoming: Path) -> Callable[[int], None]:
    def check(messages: int) -> None:
        names = os.listdir(incoming)
        if len(names) != messages:
            raise BenchError(f"sdmail: {messages} messages sent, {len(names)} in incoming/")
        for name in names:
            (incoming / name).unlink()

    return check


@contextmanager
def postfix_smtpd(postfix: Unpacked, work: Path) -> Iterator[Target]:
    """Postfix's master with its smtpd, every message queued and then discarded."""
    master = PostfixMaster(
        postfix,
        work / "postfix",
        "myhostname = bench.example\nmydestination =\nsmtpd_peername_lookup = no\n"
        "default_transport = discard\nrelay_transport = discard\n",
    )
    discarded = 0

    def check(messages: int) -> None:
        nonlocal discarded
        discarded += messages
        queues = ("incoming", "active", "deferred", "hold")
        if not wait_until(
            lambda: (
                not sum(master.count(q) for q in queues)
                and master.log().count("status=sent") >= discarded
            ),
            _DRAIN_SECONDS,
        ):
            left = sum(master.count(q) for q in queues)
            raise BenchError(f"Postfix: {left} messages still queued after the round")
        logged = master.log().count("status=sent")
        if logged != discarded:
            raise BenchError(f"Postfix: {logged} of {discarded} messages logged discarded")

    master.start()
    try:
        yield Target(master.smtpd_port, check)
    finally:
        master.stop()


def source_round(postfix: Unpacked, target: Target, sessions: int, messages: int) -> float:
    """Messages per second of one smtp-source run; the target then checks its work."""
    command = [
        postfix.program("smtp-source"), "-s", str(sessions), "-m", str(messages),
        "-l", str(MESSAGE_BYTES), "-f", SENDER, "-t", RECIPIENT, "-M", "client.example",
        f"127.0.0.1:{target.port}",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command,
        env=postfix.env,
        capture_output=True,
        text=True,
        timeout=_ROUND_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"smtp-source exited {done.returncode}: {done.stderr.strip()[-300:]}")
    target.check(messages)
    return messages / seconds


def run(plan: Plan, work: Path) -> list[Figure]:
    try:
        postfix = Unpacked(work)
        postfix.program("smtp-source")
    except (PostfixUnavailable, OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"Postfix's smtp-source is not available: {exc}") from None
    with ExitStack() as running:
        sdmail = running.enter_context(sdmail_smtpd(work))
        try:
            reference: Target | str = running.enter_context(postfix_smtpd(postfix, work))
        except PostfixUnavailable as exc:
            reference = str(exc)
        specs = []
        for sessions in SESSIONS:
            count = plan.messages[sessions]
            specs.append(
                Spec(
                    1,
                    f"sdmail_smtpd_{sessions}_sessions",
                    f"sdmail smtpd, durable queue, {sessions} parallel sessions",
                    "msgs/s",
                    _round(postfix, sdmail, sessions, count),
                )
            )
            if isinstance(reference, Target):
                specs.append(
                    Spec(
                        2,
                        f"postfix_smtpd_{sessions}_sessions",
                        f"Postfix {postfix.version} smtpd, queued and discarded, {sessions}"
                        " sessions",
                        "msgs/s",
                        _round(postfix, reference, sessions, count),
                    )
                )
        measured = {figure.key: figure for figure in measure(specs, plan.rounds)}
    figures: list[Figure] = []
    for sessions in SESSIONS:
        ours = measured[f"sdmail_smtpd_{sessions}_sessions"]
        key = f"postfix_smtpd_{sessions}_sessions"
        theirs = measured.get(key) or NotMeasured(
            2, key, f"Postfix smtpd, {sessions} sessions", str(reference)
        )
        figures += [
            ours,
            theirs,
            ratio(2, f"sdmail_vs_postfix_{sessions}_sessions", "sdmail ÷ Postfix", ours, theirs),
        ]
    return figures


def _round(postfix: Unpacked, target: Target, sessions: int, messages: int) -> Callable[[], float]:
    return lambda: source_round(postfix, target, sessions, messages)


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
        description="Messages per second sdmail's smtpd queues, beside Postfix's smtpd.",
    )
    parser.add_argument("--quick", action="store_true", help="one short round per figure")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="scratch below DIR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    plan = QUICK if options.quick else FULL

    def take(work: Path) -> tuple[dict[str, Any], list[Figure]]:
        return describe_run(plan, work), run(plan, work)

    # 0755: Postfix's daemons run as its mail_owner and must reach their queue below it.
    return run_in_scratch("bench/smtpd", options.dir, take, render, options.json, mode=0o755)
