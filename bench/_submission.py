"""A local submission through cleanup: what `sendmail alice < message` costs the gate.

`CleanupBench` writes a config directory (main.cf with myhostname and
queue_directory) below the directory it is given, builds the cleanup library
from it as pickup does, and submits a message of a few headers and a 4 KB
body from a local user to one local recipient, one after the other, for a
fixed time per round. `incoming/` is emptied after each round (not timed).
Log lines are not written anywhere (no handler is installed), so the figure is
cleanup's own work, without the journal's.

`message(host)` is the 4 KB message the spool figures write too.

Failure modes: `CleanupNotLanded` when `sdmail.cleanup.api` cannot be imported
(its text says why); `CleanupError` from a submission that cleanup refuses
and `ConfigError` for a main.cf it cannot read pass on as they are;
`BenchError` if fewer queue files than accepted messages are found.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from _figures import BenchError

from sdmail.core.config import load_config
from sdmail.core.records import Recipient

HOST = "bench.example.org"
MESSAGE_SIZE = 4096
_BODY_LINE = b"The quick brown fox jumps over the lazy dog, and the dog sleeps on.\n"


def message(host: str = HOST) -> bytes:
    """A plain local message: From, To, Subject, and a body that brings it to 4 KB."""
    headers = (
        f"From: Bench Sender <bench@{host}>\n"
        f"To: Alice <alice@{host}>\n"
        "Subject: queue benchmark message\n"
        "\n"
    ).encode()
    body_size = MESSAGE_SIZE - len(headers)
    lines = _BODY_LINE * (body_size // len(_BODY_LINE) + 1)
    return headers + lines[: body_size - 1] + b"\n"


class CleanupNotLanded(Exception):
    """sdmail.cleanup's library is not in this tree (or does not import)."""


class CleanupBench:
    """A cleanup library on a queue below DIRECTORY, ready to take local submissions."""

    def __init__(self, directory: Path) -> None:
        try:
            from sdmail.cleanup import api  # noqa: PLC0415  (absent until cleanup lands)
        except ImportError as exc:
            raise CleanupNotLanded(f"sdmail.cleanup.api does not import ({exc})") from None
        self.queue = directory / "queue"
        self.queue.mkdir(mode=0o700, parents=True)
        (directory / "main.cf").write_text(
            f"myhostname = {HOST}\nqueue_directory = {self.queue}\n", encoding="utf-8"
        )
        self.cleanup: Any = api.Cleanup(load_config(directory))
        self.cleanup.spool.create_directories()
        self.submission = api.Submission(
            "bench", (Recipient("alice"),), api.Origin.LOCAL, uid=os.getuid()
        )
        self.content = message(HOST)

    def round(self, seconds: float) -> float:
        """Submit for SECONDS; messages queued per second."""
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            self.cleanup.submit(self.submission, self.content)
            count += 1
        elapsed = time.perf_counter() - start
        queued = self._empty_incoming()
        if queued != count:
            raise BenchError(f"cleanup accepted {count} messages but queued {queued}")
        return count / elapsed

    def _empty_incoming(self) -> int:
        incoming = self.queue / "incoming"
        names = os.listdir(incoming)
        for name in names:
            os.unlink(incoming / name)
        return len(names)

    def close(self) -> None:
        self.cleanup.spool.close()
