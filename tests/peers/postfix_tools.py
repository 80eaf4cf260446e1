"""Debian's Postfix programs for tests, unpacked (never installed): smtp-sink as a real peer.

`postfix_root()` finds Debian's postfix package in apt's cache or downloads it with
`apt-get download postfix`, unpacks it once below /var/tmp (dpkg-deb -x: no maintainer
script runs) and returns the unpacked root, or None with the reason in `why_not` when that
cannot be done here (no apt, no network). Its programs run with LD_LIBRARY_PATH at the
unpacked usr/lib/postfix.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path("/var/tmp/sdmail-tests-postfix")
APT_ARCHIVES = Path("/var/cache/apt/archives")
why_not = ""


def postfix_root() -> Path | None:
    global why_not  # noqa: PLW0603 (one answer per test run)
    root = CACHE / "root"
    if (root / "usr/sbin/smtp-sink").exists():
        return root
    try:
        arch = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
        debs = sorted(APT_ARCHIVES.glob(f"postfix_*_{arch}.deb"))
        work = Path(tempfile.mkdtemp(prefix="postfix-", dir="/var/tmp"))
        if not debs:
            subprocess.run(
                ["apt-get", "download", "postfix"], cwd=work, capture_output=True, check=True
            )
            debs = sorted(work.glob("postfix_*.deb"))
        if not debs:
            why_not = "no postfix package"
            return None
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(work / "root")], check=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        if not root.exists():
            os.replace(work / "root", root)
        shutil.rmtree(work, ignore_errors=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        why_not = f"cannot unpack Debian's postfix: {exc}"
        return None
    return root


def postfix_env(root: Path) -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": str(root / "usr/lib/postfix")}


class PostfixSmtpSink:
    """Postfix's smtp-sink on 127.0.0.1:PORT, each transaction dumped into DUMP_DIR."""

    def __init__(self, root: Path, dump_dir: Path, *extra: str, port: int = 0) -> None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(dump_dir, 0o777)
        self.dump_dir = dump_dir
        self.port = port or _free_port()
        command = [
            str(root / "usr/sbin/smtp-sink"),
            "-u",
            "nobody",
            "-d",
            f"{dump_dir}/%M.",
            *extra,
        ]
        self.process = subprocess.Popen(
            [*command, f"127.0.0.1:{self.port}", "100"],
            env=postfix_env(root),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited: {self.process.stderr.read()!r}")
            time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def dumps(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump_dir.rglob("*.*")) if p.is_file()]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> PostfixSmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
