"""Fixtures the unit tests share: a scratch directory for the benchmarks' smoke tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def bench_scratch() -> Iterator[Path]:
    """A directory below /var/tmp with a short path (UNIX-domain socket paths are short)
    that other users may enter (Postfix's daemons and smtp-sink run as other users)."""
    directory = Path(tempfile.mkdtemp(prefix="bench-", dir="/var/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
