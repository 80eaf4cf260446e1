"""The servers a benchmark starts: a free port, waiting for one to listen, stopping one.

Failure modes: none raise; `wait_until` answers whether the condition came true in time,
and `stop` kills what SIGTERM did not end within its grace time.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def stop(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM, then SIGKILL after GRACE seconds; reaps the process either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
