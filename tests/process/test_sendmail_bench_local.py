"""bench/local in a short run: every row is there, and nothing is left behind.

A benchmark is not a timed test: this checks that a small run measures sendmail
(and Postfix's, or says why not), that the Maildir row is a rate or a reason, and
that its directory and processes are gone afterwards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "local"


def test_a_short_run_prints_every_row_and_cleans_up() -> None:
    # Not pytest's tmp_path: socket paths must stay short, and nobody must reach the Maildir.
    parent = Path(tempfile.mkdtemp(prefix="sdmail-bench-test-", dir="/var/tmp"))
    try:
        check_short_run(parent)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def check_short_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BENCH), "--calls", "3", "--maildir-messages", "5", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^sdmail sendmail -> postdrop\s+\d+\.\d\s", out, re.MULTILINE)
    assert re.search(r"^Postfix \S+ sendmail\s+(\d+\.\d\s|not measured: )", out, re.MULTILINE)
    assert re.search(
        r"^messages per second, sendmail -> Maildir\s+(\d+\.\d\s|not (yet|measured): )",
        out,
        re.MULTILINE,
    )
    imports = out.split("10 slowest imports", 1)[1].splitlines()[2:]
    assert len(imports) == 10
    assert any(line.startswith("sdmail.") for line in imports)
    assert list(tmp_path.iterdir()) == []
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout == ""
