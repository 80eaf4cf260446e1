"""A benchmark's frame: its scratch directory, SIGTERM, one-line failures, the output.

`run_in_scratch(name, parent, measure, render, as_json_output)` makes a new directory below
PARENT, calls MEASURE(directory) for `(run description, figures)`, removes the directory
(also after an error, Ctrl-C or SIGTERM), and prints the figures: RENDER's table, or with
AS_JSON_OUTPUT `{"run": ..., "figures": {KEY: ...}}`. It returns the exit status: 0, 1 with
one line `NAME: fatal: ...` on stderr for any failure, 130 after Ctrl-C.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from _figures import Figure, as_json

Measure = Callable[[Path], tuple[dict[str, Any], Sequence[Figure]]]
Render = Callable[[dict[str, Any], Sequence[Figure]], str]


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_in_scratch(
    name: str,
    parent: Path,
    measure: Measure,
    render: Render,
    as_json_output: bool,
    *,
    mode: int = 0o700,
) -> int:
    """See the module docstring; MODE is the scratch directory's (0o755 where other users'
    processes, a Postfix daemon, must reach below it)."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        work = Path(tempfile.mkdtemp(prefix=f"sdmail-{name.replace('/', '-')}-", dir=parent))
        work.chmod(mode)
    except OSError as exc:
        print(
            f"{name}: fatal: cannot make a directory in {parent}: {exc.strerror}", file=sys.stderr
        )
        return 1
    try:
        run_info, figures = measure(work)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure is one line, and the directory still goes
        print(f"{name}: fatal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if as_json_output:
        report = {"run": run_info, "figures": {f.key: as_json(f) for f in figures}}
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(run_info, figures))
    return 0
