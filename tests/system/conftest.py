"""System tests: the built .deb installed in a booted systemd container (tools/sdbox.py).

The package is dist/sdmail_*_all.deb (`make deb` first; `make system-test` does both).
One box serves the whole session: booting and installing take about 20 s.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_sdbox():
    spec = importlib.util.spec_from_file_location("sdbox", REPO / "tools" / "sdbox.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sdbox = _load_sdbox()


@pytest.fixture(scope="session")
def box() -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("booting a systemd container needs root")
    debs = sorted((REPO / "dist").glob("sdmail_*_all.deb"))
    if not debs:
        pytest.fail("no dist/sdmail_*_all.deb: run `make deb` first (make system-test does)")
    the_box = sdbox.Box.boot("sdtest")
    try:
        the_box.install(debs[-1])
        yield the_box
    finally:
        the_box.destroy()


@pytest.fixture
def user(box) -> Iterator[str]:
    """A fresh local account inside the box, removed afterwards."""
    name = "u" + secrets.token_hex(4)
    box.run("useradd", "--create-home", "--shell", "/bin/sh", name)
    yield name
    box.run("userdel", "--remove", "--force", name, check=False)
    box.run("rm", "-f", f"/var/mail/{name}", check=False)
