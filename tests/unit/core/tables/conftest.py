"""Fixtures the table tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).parents[4]

PostmapRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_postmap(tmp_path: Path) -> PostmapRunner:
    """Runs `postmap ARGS...` as a process, with an empty main.cf of its own."""
    confdir = tmp_path / "postmap-etc"
    confdir.mkdir()
    (confdir / "main.cf").write_text("")
    env = {**os.environ, "SDMAIL_CONFIG_DIR": str(confdir), "PYTHONPATH": str(REPO)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sdmail.postmap", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    return run
