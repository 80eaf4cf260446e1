"""Debian's Postfix, unpacked and run whole: its master with a private configuration and queue.

`Unpacked(workdir)` unpacks Debian's postfix package below WORKDIR (`_postfix.find_package`:
apt's cache or `apt-get download`; `dpkg-deb -x`, no maintainer script runs) and finds its
programs (`program("smtp-source")`); they run with LD_LIBRARY_PATH at its usr/lib/postfix.

`PostfixMaster(unpacked, root, settings)` writes a Postfix configuration below ROOT whose
queue, data and log file are there too: `mail_owner`, `setgid_group` and `default_privs`
are existing accounts of this machine (`_postfix.pick_accounts`), every service runs without
chroot, LD_LIBRARY_PATH reaches the daemons through import_environment, the log goes to
`maillog_file` (ROOT/maillog) through postlogd. master.cf holds the usual services and an
smtpd on 127.0.0.1:`smtpd_port`; SETTINGS are main.cf lines of the caller's (the relayhost,
the transports). `start()` runs master in the foreground (-d) and waits for the smtpd port;
`stop()` ends it and every daemon with it.

Master must run as root (it changes to mail_owner itself): `PostfixMaster` raises
PostfixUnavailable for anyone else, and when master does not start (its stderr's end says
why). Nothing is installed and nothing outside WORKDIR and ROOT is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from _postfix import PostfixUnavailable, find_package, pick_accounts
from _processes import free_port, listening, stop, wait_until

MASTER_CF = """\
127.0.0.1:{smtpd_port} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
QUEUES = ("incoming", "active", "deferred", "bounce", "defer", "trace", "flush", "hold")
_START_SECONDS = 15


class Unpacked:
    """Debian's postfix package below WORKDIR/postfix-root."""

    def __init__(self, workdir: Path) -> None:
        package = find_package(workdir)
        self.version = subprocess.run(
            ["dpkg-deb", "-f", str(package), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.root = workdir / "postfix-root"
        subprocess.run(["dpkg-deb", "-x", str(package), str(self.root)], check=True)
        self.env = {**os.environ, "LD_LIBRARY_PATH": str(self.root / "usr/lib/postfix")}

    def program(self, name: str) -> str:
        for directory in ("usr/sbin", "usr/lib/postfix/sbin"):
            path = self.root / directory / name
            if path.exists():
                return str(path)
        raise PostfixUnavailable(f"the package holds no {name}")


class PostfixMaster:
    """Postfix's master, unpacked, with its own configuration and queue below ROOT."""

    def __init__(self, postfix: Unpacked, root: Path, settings: str) -> None:
        if os.geteuid() != 0:
            raise PostfixUnavailable("Postfix's master must run as root")
        self.postfix = postfix
        self.root = root
        self.config_dir, self.queue_dir, self.data_dir = root / "etc", root / "queue", root / "data"
        self.accounts = accounts = pick_accounts()
        self.smtpd_port = free_port()
        self.log_path = root / "maillog"
        self.config_dir.mkdir(parents=True)
        library = postfix.root / "usr/lib/postfix"
        (self.config_dir / "main.cf").write_text(
            f"queue_directory = {self.queue_dir}\n"
            f"data_directory = {self.data_dir}\n"
            f"command_directory = {postfix.root / 'usr/sbin'}\n"
            f"daemon_directory = {library / 'sbin'}\n"
            f"meta_directory = {self.config_dir}\n"
            f"shlib_directory = {library}\n"
            f"mail_owner = {accounts.mail_owner}\n"
            f"setgid_group = {accounts.setgid_group}\n"
            f"default_privs = {accounts.default_privs}\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
            f"maillog_file = {self.log_path}\n"
            "import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
            f"LD_LIBRARY_PATH={library}\n"
            "compatibility_level = 3.6\nalias_maps =\nalias_database =\n" + settings
        )
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(smtpd_port=self.smtpd_port))
        (self.config_dir / "dynamicmaps.cf").write_text("")
        owner = accounts.mail_owner
        for name in (*QUEUES, "corrupt", "saved", "private"):
            make_directory(self.queue_dir / name, 0o700, owner)
        make_directory(self.queue_dir / "maildrop", 0o730, owner, accounts.setgid_group)
        make_directory(self.queue_dir / "public", 0o710, owner, accounts.setgid_group)
        make_directory(self.queue_dir / "pid", 0o755)
        make_directory(self.data_dir, 0o700, owner)
        self.master: subprocess.Popen[bytes] | None = None

    def postconf(self, setting: str) -> None:
        """`postconf -e SETTING` on this configuration (master reads it at its next start)."""
        subprocess.run(
            [self.postfix.program("postconf"), "-c", str(self.config_dir), "-e", setting],
            env=self.postfix.env,
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        # -d: in the foreground, so it is ours to stop.
        self.master = subprocess.Popen(
            [self.postfix.program("master"), "-d", "-c", str(self.config_dir)],
            env=self.postfix.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_until(lambda: listening(self.smtpd_port), _START_SECONDS):
            raise PostfixUnavailable(f"its master does not start: {self._master_stderr()}")

    def _master_stderr(self) -> str:
        if self.master is None or self.master.poll() is None or self.master.stderr is None:
            return "(no message)"
        return self.master.stderr.read().decode(errors="replace").strip()[-300:]

    def stop(self) -> None:
        if self.master is not None:
            stop(self.master)
            if self.master.stderr is not None:
                self.master.stderr.close()
            self.master = None

    def count(self, queue: str) -> int:
        """Queue files in QUEUE (its hashed subdirectories included)."""
        return sum(len(files) for _, _, files in os.walk(self.queue_dir / queue))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_directory(
    path: Path, mode: int, owner: str | None = None, group: str | None = None
) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner or group:
        shutil.chown(path, owner, group)
