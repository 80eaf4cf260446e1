"""What one `sendmail` call loads: it runs for every message, so what it imports is its cost.

A submission reads main.cf and talks to postdrop over a blocking socket; the
modules that only daemons need (asyncio above all, about a quarter of a call;
hashlib, which loads OpenSSL for the digest daemons name in STATUS=) must stay
unloaded.  The call runs in a fresh interpreter against a postdrop
played at its socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmail.core.ipc import recv_frame, send_frame
from sdmail.core.mail_stream import accepted

REPO = Path(__file__).resolve().parents[2]
NOT_FOR_SENDMAIL = ("asyncio", "hashlib")

# Runs sendmail's main() as its script does, then says which modules the call loaded.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules))))
from sdmail.sendmail import main
sys.exit(main())
"""


class Postdrop:
    """Accepts every submission at DIRECTORY/postdrop, as the postdrop service would."""

    def __init__(self, directory: Path) -> None:
        self.submissions = 0
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(directory / "postdrop"))
        self._listener.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                recv_frame(reader)
                self.submissions += 1
                send_frame(conn, accepted("4jSTARTUPz1"))

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def config_dir() -> Iterator[Path]:
    # Not tmp_path: a UNIX socket path must stay short.
    with tempfile.TemporaryDirectory(prefix="sdmail-") as directory:
        root = Path(directory)
        (root / "main.cf").write_text(
            f"myhostname = mail.example.test\nsocket_directory = {root}\n"
            f"queue_directory = {root}/spool\n"
        )
        yield root


def test_a_submission_does_not_load_asyncio(config_dir: Path) -> None:
    postdrop = Postdrop(config_dir)
    try:
        call = subprocess.run(
            [sys.executable, "-c", PROBE, "joe@example.org"],
            input=b"Subject: startup\n\nhello\n",
            capture_output=True,
            env={**os.environ, "SDMAIL_CONFIG_DIR": str(config_dir), "PYTHONPATH": str(REPO)},
            timeout=60,
            check=False,
        )
    finally:
        postdrop.close()
    assert (call.returncode, call.stderr) == (0, b"")
    assert postdrop.submissions == 1
    loaded = set(json.loads(call.stdout))
    assert "sdmail.core.mail_stream" in loaded  # the call did submit through core/ipc
    assert [name for name in NOT_FOR_SENDMAIL if name in loaded] == []
