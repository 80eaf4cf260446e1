"""hash: tables of 100,000 keys: building them with a postmap, and looking keys up.

The table source has one `key value` line per address (`user000042@domain042.example
mailbox42@example.net`, as a virtual alias table looks), written by
`write_source`. Look-ups are timed two ways:

- in-process (`lookup_round`): `open_table("hash:...").lookup(key)` for a list of
  keys, after the caller warmed the table with one pass; hits and misses apart;
- as a process (`query_rate`): `postmap -q - hash:FILE` with the keys on
  stdin, from the start of the process to its exit, as an admin or a script
  sees it; the same for sdmail's postmap and Postfix's, for a fair comparison.

`build_seconds` times `postmap hash:FILE` from start to exit, after removing
FILE.db so that every round builds from nothing.

Failure modes: `BenchError` when a postmap exits non-zero (with its last error
line), times out, leaves no FILE.db, or finds a different number of keys
than it was asked for; TableError from the in-process table.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from _figures import BenchError

from sdmail.core.tables import Table

TABLE_KEYS = 100_000
_PROCESS_TIMEOUT = 600
REPOSITORY = Path(__file__).resolve().parent.parent


def hit_key(number: int) -> str:
    return f"user{number:06d}@domain{number % 1000:03d}.example"


def miss_key(number: int) -> str:
    return f"nobody{number:06d}@domain{number % 1000:03d}.example"


def write_source(path: Path, count: int = TABLE_KEYS) -> None:
    """A table source of COUNT `key value` lines at PATH."""
    with path.open("w", encoding="ascii") as out:
        for number in range(count):
            out.write(f"{hit_key(number)}  mailbox{number}@example.net\n")


def sample_keys(count: int, *, hits: bool, seed: int) -> list[str]:
    """COUNT keys in a shuffled order: present in the table if HITS, absent otherwise."""
    make = hit_key if hits else miss_key
    numbers = list(range(TABLE_KEYS))
    random.Random(seed).shuffle(numbers)
    return [make(numbers[i % TABLE_KEYS]) for i in range(count)]


def lookup_round(table: Table, keys: Sequence[str], *, hits: bool) -> float:
    """Look every key up once; look-ups per second. Checks each was found (or not) as expected."""
    start = time.perf_counter()
    found = sum(1 for key in keys if table.lookup(key) is not None)
    elapsed = time.perf_counter() - start
    expected = len(keys) if hits else 0
    if found != expected:
        raise BenchError(f"{table.spec}: {found} of {len(keys)} keys found, expected {expected}")
    return len(keys) / elapsed


@dataclass(frozen=True)
class Postmap:
    """How to run one postmap program: its argv up to the table arguments, and its environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]


def sdmail_postmap(config_dir: Path) -> Postmap:
    """This checkout's postmap, run as the admin runs it, reading CONFIG_DIR/main.cf."""
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    argv = (sys.executable, "-m", "sdmail.postmap", "-c", str(config_dir))
    return Postmap("sdmail postmap", argv, env)


def _run(postmap: Postmap, args: Sequence[str], stdin_path: Path | None) -> tuple[float, bytes]:
    """Run POSTMAP with ARGS; (seconds from start to exit, stdout)."""
    command = [*postmap.argv, *args]
    with open(stdin_path or os.devnull, "rb") as stdin:
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                stdin=stdin,
                capture_output=True,
                env=dict(postmap.env),
                timeout=_PROCESS_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"{postmap.name} {' '.join(args)}: still running after {_PROCESS_TIMEOUT} s"
            ) from None
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"]
        raise BenchError(f"{postmap.name} {' '.join(args)}: exit {done.returncode}: {lines[-1]}")
    return elapsed, done.stdout


def build_seconds(postmap: Postmap, source: Path) -> float:
    """Seconds POSTMAP takes to build hash:SOURCE from nothing."""
    database = source.with_name(source.name + ".db")
    database.unlink(missing_ok=True)
    elapsed, _ = _run(postmap, [f"hash:{source}"], None)
    if not database.exists():
        raise BenchError(f"{postmap.name} hash:{source}: exit 0 but no {database}")
    return elapsed


def query_rate(postmap: Postmap, source: Path, keys_file: Path, count: int) -> float:
    """Look-ups per second of `postmap -q - hash:SOURCE < KEYS_FILE` (COUNT keys, all present)."""
    elapsed, out = _run(postmap, ["-q", "-", f"hash:{source}"], keys_file)
    answered = out.count(b"\n")
    if answered != count:
        raise BenchError(f"{postmap.name} -q - hash:{source}: {answered} of {count} keys found")
    return count / elapsed
