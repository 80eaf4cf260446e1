"""bench/core's run: which figures, in which order, in which directory, and how they print.

USAGE
    bench/core [--quick] [--json] [--dir DIR]

Every figure is taken in the same run, in a new directory below DIR (default:
/var/tmp when it is on the file system of /var/spool, else /var/spool itself
if it is writable),
removed at the end, also after an error or a SIGINT/SIGTERM. The figures and
why they are taken this way are in bench/README.md.

Exit status: 0 with the table (or, with --json, one JSON object) on stdout;
1 with one line `bench/core: fatal: ...` on stderr when a figure of sdmail's
could not be taken (Postfix's figures and cleanup's, until it lands, are rows
that say `not measured: <why>` instead); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _durable_writes import durable_file_round, new_file_round, spool_create_round
from _figures import Figure, NotMeasured, Spec, measure, ratio, render_table
from _postfix import PostfixUnavailable, unpack_postfix
from _run import run_in_scratch
from _submission import CleanupBench, CleanupNotLanded, message
from _tables import (
    REPOSITORY,
    TABLE_KEYS,
    Postmap,
    build_seconds,
    lookup_round,
    query_rate,
    sample_keys,
    sdmail_postmap,
    write_source,
)

from sdmail.core.records import Envelope, Recipient
from sdmail.core.tables import open_table

SPOOL_DIRECTORY = Path("/var/spool")
THREADS = 10


@dataclass(frozen=True)
class Plan:
    """How long to measure: ROUNDS per figure, timed rounds of ROUND_SECONDS each."""

    name: str
    rounds: int
    round_seconds: float
    lookups_per_round: int


FULL = Plan("full run", rounds=5, round_seconds=2.0, lookups_per_round=TABLE_KEYS)
QUICK = Plan("quick run", rounds=1, round_seconds=0.25, lookups_per_round=20_000)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/core",
        description="sdmail's core library beside the file system's limits and Postfix.",
    )
    parser.add_argument("--quick", action="store_true", help="one short round per figure")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--dir", type=Path, help="measure in a new directory below DIR")
    return parser.parse_args(argv)


def default_parent() -> Path:
    """/var/tmp if it shares /var/spool's file system (the queue's), else /var/spool.

    Where /var/spool is elsewhere and not writable (not root), /var/tmp after all:
    the header then says the directory is not on /var/spool's file system.
    """
    var_tmp = Path("/var/tmp")
    if _device(SPOOL_DIRECTORY) in (None, _device(var_tmp)):
        return var_tmp
    return SPOOL_DIRECTORY if os.access(SPOOL_DIRECTORY, os.W_OK) else var_tmp


def file_system_of(path: Path) -> str:
    """`TYPE on SOURCE` for the file system holding PATH, from /proc/self/mountinfo."""
    device = path.stat().st_dev
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return "unknown file system"
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[2] == wanted and " - " in line:
            fs_type, source = line.split(" - ", 1)[1].split()[:2]
            return f"{fs_type} on {source}"
    return "unknown file system"


def revision() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPOSITORY), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def progress(text: str) -> None:
    if sys.stderr.isatty():
        print(f"  measuring: {text}", file=sys.stderr, flush=True)


# -- the figures, in the order they print ------------------------------------------------


def durable_write_figures(plan: Plan, work: Path) -> list[Figure]:
    progress("file system and Spool.create")
    seconds = plan.round_seconds
    envelope = Envelope(
        sender="bench@bench.example.org",
        recipients=(Recipient("alice@bench.example.org"),),
        arrival_sec=int(time.time()),
    )
    content = message()

    def spool_round(writers: int) -> Callable[[], float]:
        return lambda: spool_create_round(work, seconds, writers, envelope, content)

    new_file, durable, one_writer, threads = measure(
        [
            Spec(
                1,
                "fs_new_file",
                "file system: new file, write 4 KB + fsync + close",
                "files/s",
                lambda: new_file_round(work, seconds),
            ),
            Spec(
                1,
                "fs_durable_file",
                "file system: the same + rename + directory fsync",
                "files/s",
                lambda: durable_file_round(work, seconds),
            ),
            Spec(
                2,
                "spool_create_1_writers",
                "Spool.create, 4 KB message, 1 writer",
                "files/s",
                spool_round(1),
            ),
            Spec(
                2,
                f"spool_create_{THREADS}_writers",
                f"Spool.create, 4 KB message, {THREADS} writer threads",
                "files/s",
                spool_round(THREADS),
            ),
        ],
        plan.rounds,
    )
    versus = "÷ file system with rename + directory fsync"
    return [
        new_file,
        durable,
        one_writer,
        ratio(2, "spool_create_1_writers_vs_fs", versus, one_writer, durable),
        threads,
        ratio(2, f"spool_create_{THREADS}_writers_vs_fs", versus, threads, durable),
    ]


def cleanup_figures(plan: Plan, work: Path) -> list[Figure]:
    progress("cleanup")
    key, label = "cleanup_local_4k", "cleanup: local 4 KB message, 1 local recipient"
    try:
        bench = CleanupBench(work / "cleanup")
    except CleanupNotLanded as exc:
        return [NotMeasured(3, key, label, f"cleanup has not landed: {exc}")]
    try:
        return list(
            measure(
                [Spec(3, key, label, "messages/s", lambda: bench.round(plan.round_seconds))],
                plan.rounds,
            )
        )
    finally:
        bench.close()


@dataclass(frozen=True)
class TableFiles:
    """The same 100,000-key source twice (one .db each for sdmail and Postfix), and the keys."""

    sdmail_source: Path
    postfix_source: Path
    keys_file: Path
    sdmail: Postmap


def table_files(work: Path) -> TableFiles:
    directory = work / "tables"
    (directory / "sdmail").mkdir(parents=True)
    (directory / "postfix").mkdir()
    (directory / "sdmail" / "main.cf").write_text(
        "myhostname = bench.example.org\n", encoding="ascii"
    )
    source = directory / "sdmail" / "virtual"
    write_source(source)
    shutil.copyfile(source, directory / "postfix" / "virtual")
    keys_file = directory / "keys"
    keys = sample_keys(TABLE_KEYS, hits=True, seed=1)
    keys_file.write_text("".join(f"{key}\n" for key in keys), encoding="ascii")
    return TableFiles(
        source, directory / "postfix" / "virtual", keys_file, sdmail_postmap(directory / "sdmail")
    )


def lookup_figures(plan: Plan, files: TableFiles) -> list[Figure]:
    """In-process look-ups in the table sdmail's postmap built (it must exist)."""
    progress("hash: look-ups")
    hit_keys = sample_keys(plan.lookups_per_round, hits=True, seed=2)
    miss_keys = sample_keys(plan.lookups_per_round, hits=False, seed=2)
    with open_table(f"hash:{files.sdmail_source}") as table:
        # One untimed pass each warms the page cache and SQLite's.
        lookup_round(table, hit_keys, hits=True)
        lookup_round(table, miss_keys, hits=False)
        return list(
            measure(
                [
                    Spec(
                        4,
                        "hash_lookup_hits",
                        "hash: look-ups in-process, warm, hits",
                        "look-ups/s",
                        lambda: lookup_round(table, hit_keys, hits=True),
                    ),
                    Spec(
                        4,
                        "hash_lookup_misses",
                        "hash: look-ups in-process, warm, misses",
                        "look-ups/s",
                        lambda: lookup_round(table, miss_keys, hits=False),
                    ),
                ],
                plan.rounds,
            )
        )


def postfix_build_label(postmap_name: str) -> str:
    return f"{postmap_name}: build hash: table of {TABLE_KEYS:,} keys"


def postfix_query_label(postmap_name: str) -> str:
    return f"{postmap_name} -q - of {TABLE_KEYS:,} keys (process)"


def postmap_figures(plan: Plan, files: TableFiles, work: Path) -> list[Figure]:
    """sdmail's postmap building and querying the table, beside Postfix's where it runs."""
    progress("postmap, sdmail's and Postfix's")
    sdmail = files.sdmail
    build = Spec(
        4,
        "postmap_build_100k",
        f"sdmail postmap: build hash: table of {TABLE_KEYS:,} keys",
        "s",
        lambda: build_seconds(sdmail, files.sdmail_source),
    )
    query = Spec(
        5,
        "postmap_query_100k",
        f"sdmail postmap -q - of {TABLE_KEYS:,} keys (process)",
        "look-ups/s",
        lambda: query_rate(sdmail, files.sdmail_source, files.keys_file, TABLE_KEYS),
    )
    try:
        postfix, _ = unpack_postfix(work / "postfix")
    except PostfixUnavailable as exc:
        sdmail_build, sdmail_query = measure([build, query], plan.rounds)
        why = str(exc)
        postfix_build: Figure = NotMeasured(
            5, "postfix_postmap_build_100k", postfix_build_label("Postfix postmap"), why
        )
        postfix_query: Figure = NotMeasured(
            5, "postfix_postmap_query_100k", postfix_query_label("Postfix postmap"), why
        )
    else:
        sdmail_build, postfix_build, sdmail_query, postfix_query = measure(
            [
                build,
                Spec(
                    5,
                    "postfix_postmap_build_100k",
                    postfix_build_label(postfix.name),
                    "s",
                    lambda: build_seconds(postfix, files.postfix_source),
                ),
                query,
                Spec(
                    5,
                    "postfix_postmap_query_100k",
                    postfix_query_label(postfix.name),
                    "look-ups/s",
                    lambda: query_rate(postfix, files.postfix_source, files.keys_file, TABLE_KEYS),
                ),
            ],
            plan.rounds,
        )
    return [
        sdmail_build,
        postfix_build,
        ratio(
            5,
            "postmap_build_vs_postfix",
            "sdmail build time ÷ Postfix's",
            sdmail_build,
            postfix_build,
        ),
        sdmail_query,
        postfix_query,
        ratio(
            5, "postmap_query_vs_postfix", "sdmail rate ÷ Postfix's", sdmail_query, postfix_query
        ),
    ]


def run(plan: Plan, work: Path) -> list[Figure]:
    figures = durable_write_figures(plan, work)
    figures += cleanup_figures(plan, work)
    files = table_files(work)
    postmaps = postmap_figures(plan, files, work)  # builds the table the look-ups use
    return figures + lookup_figures(plan, files) + postmaps


# -- output -----------------------------------------------------------------------------


def describe_run(plan: Plan, work: Path) -> dict[str, Any]:
    return {
        "plan": plan.name,
        "rounds": plan.rounds,
        "round_seconds": plan.round_seconds,
        "directory": str(work),
        "file_system": file_system_of(work),
        "same_file_system_as_var_spool": work.stat().st_dev == _device(SPOOL_DIRECTORY),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sdmail": revision(),
    }


def _device(path: Path) -> int | None:
    try:
        return path.stat().st_dev
    except OSError:
        return None


def render(run_info: dict[str, Any], figures: Sequence[Figure]) -> str:
    same = "the file system of" if run_info["same_file_system_as_var_spool"] else "NOT on"
    header = [
        f"sdmail core benchmark, {run_info['plan']}: each figure the median of its rounds"
        f" (timed rounds of {run_info['round_seconds']} s; builds and -q - are whole processes)",
        f"  directory: {run_info['directory']} ({run_info['file_system']}, {same} /var/spool)",
        f"  machine:   {run_info['cpus']} CPUs, Python {run_info['python']},"
        f" sdmail {run_info['sdmail']}",
        "",
    ]
    return "\n".join(header) + render_table(figures)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    plan = QUICK if options.quick else FULL
    parent: Path = options.dir or default_parent()

    def take(work: Path) -> tuple[dict[str, Any], list[Figure]]:
        return describe_run(plan, work), run(plan, work)

    return run_in_scratch("bench/core", parent, take, render, options.json)
