"""bench/delivery --quick --json: both sides' figures are there as positive numbers, or
Postfix's says why it was not measured, and the work directory is gone afterwards.

Benchmarks are not timed tests: this only checks that a quick run produces each figure.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from tests.peers.postfix_tools import postfix_root

BENCH = Path(__file__).resolve().parents[2] / "bench" / "delivery"
SDMAIL_FIGURES = {"sdmail_drain", "sdmail_rate"}
POSTFIX_FIGURES = {"postfix_drain", "postfix_rate", "sdmail_vs_postfix"}


def test_quick_json_run_gives_every_figure_and_cleans_up(bench_scratch) -> None:
    if postfix_root() is None:
        pytest.skip("Debian's postfix package (smtp-sink, the receiving end) cannot be had")
    done = subprocess.run(
        [str(BENCH), "--quick", "--json", "--dir", str(bench_scratch)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    figures = report["figures"]
    assert set(figures) == SDMAIL_FIGURES | POSTFIX_FIGURES
    for key in SDMAIL_FIGURES:
        assert math.isfinite(figures[key]["value"]) and figures[key]["value"] > 0, key
    for key in POSTFIX_FIGURES:
        figure = figures[key]
        if "not_measured" in figure:
            assert figure["not_measured"].strip(), key
        else:
            assert figure["value"] > 0, key
    assert report["run"]["messages"] == 200
    assert list(bench_scratch.iterdir()) == []
