"""Debian's Dovecot as a real LMTP server for tests, with a private configuration.

`Dovecot(directory)` writes a dovecot.conf below DIRECTORY (its own base_dir, state and
log), LMTP on a UNIX-domain socket (`socket_path`) and on 127.0.0.1 (`port`), users from a
passwd-file (`alice`, `bob`, and `full` whose quota is one byte, so Dovecot refuses its
mail after DATA), user names without their domain, Maildirs under `mail/USER/Maildir`
owned by nobody. It runs `dovecot -F` (as root; it drops to its own users) and stops it at
`close()`. `messages(user)` reads back what Dovecot stored.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
LMTP_BINARY = Path("/usr/lib/dovecot/lmtp")


def available() -> str | None:
    """Why Dovecot's LMTP cannot run here, or None."""
    if not Path(DOVECOT).exists():
        return "dovecot-core is not installed"
    if not LMTP_BINARY.exists():
        return "dovecot-lmtpd is not installed"
    return None


class Dovecot:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        for sub in ("run", "state", "mail"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / "mail").chmod(0o1777)
        self.socket_path = directory / "lmtp"
        self.log_path = directory / "dovecot.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        (directory / "users").write_text(
            "alice:::::::\nbob:::::::\nfull:::::::userdb_quota_rule=*:storage=1B\n"
        )
        d = directory
        (directory / "dovecot.conf").write_text(
            f"base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {self.log_path}\n"
            "protocols = lmtp\nssl = no\nlisten = 127.0.0.1\nauth_username_format = %Ln\n"
            f"mail_location = maildir:{d}/mail/%n/Maildir\n"
            "passdb {\n  driver = static\n  args = nopassword=y\n}\n"
            f"userdb {{\n  driver = passwd-file\n  args = {d}/users\n"
            f"  default_fields = uid=65534 gid=65534 home={d}/mail/%n\n}}\n"
            "protocol lmtp {\n  mail_plugins = quota\n}\n"
            "plugin {\n  quota = maildir:User quota\n}\n"
            f"service lmtp {{\n  unix_listener {self.socket_path} {{\n    mode = 0666\n  }}\n"
            f"  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {self.port}\n  }}\n}}\n"
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(directory / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.socket_path.exists() and _listening(self.port):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.process.stderr.read()!r}")
            time.sleep(0.05)
        raise RuntimeError("dovecot did not start")

    def messages(self, user: str) -> list[bytes]:
        new = self.directory / "mail" / user / "Maildir" / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> Dovecot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
