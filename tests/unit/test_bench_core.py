"""bench/core --quick --json: every figure is there as a positive number, and nothing is left behind.

Benchmarks are not timed tests: this only checks that a quick run produces
each figure (Postfix's may be `not measured` with a reason where its package
cannot be had, and cleanup's until sdmail.cleanup.api exists).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "core"

SDMAIL_FIGURES = {
    "fs_new_file",
    "fs_durable_file",
    "spool_create_1_writers",
    "spool_create_1_writers_vs_fs",
    "spool_create_10_writers",
    "spool_create_10_writers_vs_fs",
    "hash_lookup_hits",
    "hash_lookup_misses",
    "postmap_build_100k",
    "postmap_query_100k",
}
CLEANUP_FIGURES = {"cleanup_local_4k"}
POSTFIX_FIGURES = {
    "postfix_postmap_build_100k",
    "postmap_build_vs_postfix",
    "postfix_postmap_query_100k",
    "postmap_query_vs_postfix",
}


def quick_run(parent: Path) -> dict:
    done = subprocess.run(
        [str(BENCH), "--quick", "--json", "--dir", str(parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_quick_json_run_gives_every_figure_as_a_positive_number_and_cleans_up(tmp_path):
    report = quick_run(tmp_path)
    figures = report["figures"]

    assert set(figures) == SDMAIL_FIGURES | CLEANUP_FIGURES | POSTFIX_FIGURES
    may_be_missing = set(POSTFIX_FIGURES)
    if importlib.util.find_spec("sdmail.cleanup.api") is None:
        may_be_missing |= CLEANUP_FIGURES
    for key, figure in figures.items():
        if "not_measured" in figure and key in may_be_missing:
            assert figure["not_measured"].strip(), key
            continue
        value = figure.get("value")
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, figure)
        if figure["unit"] != "ratio":
            assert figure["rounds"] == 1
            assert figure["min"] <= value <= figure["max"]
    assert report["run"]["directory"].startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
