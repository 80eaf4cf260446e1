"""Durable file creation: the file system's own rate, and the queue's through `Spool.create`.

Each round runs for a fixed time in a new directory below the directory it is
given, and removes it afterwards (not timed), so no round starts with a
directory that earlier rounds filled. A round returns files made per second.

- `new_file_round`: open a new file, write 4 KB, fsync, close. What one
  durable write costs on this file system.
- `durable_file_round`: the same under a temporary name, then rename to the
  final name and fsync the directory: the least a durable queue must do per
  message, done the plain way. The ceiling the queue is compared with.
- `spool_create_round`: `Spool.create` of a 4 KB message into `incoming/`, by
  WRITERS threads sharing one Spool (so they share directory fsyncs).

Failure modes: OSError from the file system, SpoolError/QueueWriteError from
the spool; a thread's exception is raised again in the caller after all
threads stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sdmail.core.records import Envelope, QueueName
from sdmail.core.spool import Spool

BLOCK = b"x" * 4096
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_round_numbers = itertools.count(1)


@contextlib.contextmanager
def _round_directory(parent: Path) -> Iterator[Path]:
    directory = parent / f"round-{next(_round_numbers)}"
    directory.mkdir(mode=0o700)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write_new_file(dir_fd: int, name: str) -> None:
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)


def _rate_of(step: Callable[[int], None], seconds: float) -> float:
    """Call STEP(n) for n = 0, 1, ... for SECONDS; how many calls per second."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        step(count)
        count += 1
    return count / (time.perf_counter() - start)


def new_file_round(parent: Path, seconds: float) -> float:
    with _round_directory(parent) as directory:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return _rate_of(lambda n: _write_new_file(dir_fd, f"f{n}"), seconds)
        finally:
            os.close(dir_fd)


def durable_file_round(parent: Path, seconds: float) -> float:
    with _round_directory(parent) as directory:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

        def step(n: int) -> None:
            _write_new_file(dir_fd, f"tmp.{n}")
            os.rename(f"tmp.{n}", f"f{n}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)

        try:
            return _rate_of(step, seconds)
        finally:
            os.close(dir_fd)


def spool_create_round(
    parent: Path, seconds: float, writers: int, envelope: Envelope, content: bytes
) -> float:
    with _round_directory(parent) as directory, Spool(directory) as spool:
        spool.create_directories()
        counts = [0] * writers
        failures: list[BaseException] = []
        times: dict[str, float] = {}

        def start_clock() -> None:
            times["start"] = time.perf_counter()
            times["deadline"] = times["start"] + seconds

        barrier = threading.Barrier(writers, action=start_clock)

        stop = threading.Event()

        def writer(index: int) -> None:
            try:
                barrier.wait()
                while time.perf_counter() < times["deadline"] and not stop.is_set():
                    spool.create(QueueName.INCOMING, envelope, content)
                    counts[index] += 1
            except BaseException as exc:  # re-raised in the caller below
                failures.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            # Interrupted: no writer may go on into a directory that is about to be removed.
            stop.set()
            for thread in threads:
                thread.join()
            raise
        elapsed = time.perf_counter() - times.get("start", 0.0)
        real_failures = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)]
        if real_failures:
            raise real_failures[0]
        return sum(counts) / elapsed
