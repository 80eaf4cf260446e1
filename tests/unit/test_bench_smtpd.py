"""bench/smtpd --quick --json: every figure is there as a positive number (Postfix's, where
its master cannot run here, as a reason), nothing is left.

Not a timed test: it only checks that a quick run measures each figure. Where Debian's
postfix package cannot be had (no apt, no archive), bench/smtpd says so and the test skips.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "smtpd"
SESSIONS = (1, 10, 50)
SDMAIL_FIGURES = {f"sdmail_smtpd_{sessions}_sessions" for sessions in SESSIONS}
POSTFIX_FIGURES = {
    key
    for sessions in SESSIONS
    for key in (f"postfix_smtpd_{sessions}_sessions", f"sdmail_vs_postfix_{sessions}_sessions")
}


def test_quick_json_run_measures_every_figure_and_cleans_up(bench_scratch):
    done = subprocess.run(
        [str(BENCH), "--quick", "--json", "--dir", str(bench_scratch)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 and "smtp-source is not available" in done.stderr:
        # smtp-source comes from Debian's postfix package, fetched with apt: offline, no load.
        pytest.skip(
            f"Postfix's smtp-source, the load generator, cannot be had: {done.stderr.strip()}"
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    figures = report["figures"]
    assert set(figures) == SDMAIL_FIGURES | POSTFIX_FIGURES
    for key in SDMAIL_FIGURES:
        assert math.isfinite(figures[key]["value"]) and figures[key]["value"] > 0, key
    for key in POSTFIX_FIGURES:
        if "not_measured" in figures[key]:
            assert figures[key]["not_measured"].strip(), key
        else:
            assert math.isfinite(figures[key]["value"]) and figures[key]["value"] > 0, key
    assert figures["sdmail_smtpd_1_sessions"]["unit"] == "msgs/s"
    assert list(bench_scratch.iterdir()) == []


def test_a_bad_option_is_a_usage_error():
    done = subprocess.run([str(BENCH), "--fast"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unrecognized arguments: --fast" in done.stderr
