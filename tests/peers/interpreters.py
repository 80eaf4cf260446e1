"""The Python interpreters a process test runs a component under: this one (its packages
from PyPI) and Debian's /usr/bin/python3 (Debian's python3-* packages, as the .deb runs
it), the latter skipped where Debian's python lacks a module the component needs."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

DEBIAN_PYTHON = "/usr/bin/python3"


@functools.cache
def debian_has(*modules: str) -> bool:
    """Whether Debian's python3 exists and imports every one of MODULES."""
    if not Path(DEBIAN_PYTHON).exists():
        return False
    imports = "; ".join(f"import {module}" for module in modules)
    return subprocess.run([DEBIAN_PYTHON, "-c", imports], capture_output=True).returncode == 0


def interpreters(*modules: str) -> list:
    """pytest parameters: this python (id `pypi`) and Debian's (id `debian`), which is
    skipped when it cannot import MODULES."""
    missing = not debian_has(*modules)
    return [
        pytest.param(sys.executable, id="pypi"),
        pytest.param(
            DEBIAN_PYTHON,
            id="debian",
            marks=pytest.mark.skipif(
                missing, reason=f"Debian's python3 cannot import {', '.join(modules)}"
            ),
        ),
    ]
