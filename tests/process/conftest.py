"""Process tests: the real sdmail programs on a queue in a temporary directory.

`mailsys` gives a `MailSystem`: a configuration directory whose main.cf points
queue_directory, socket_directory and mail_spool_directory into a temporary
directory, the queue directories made, and `start()` to run a component the way
systemd runs it — its listening sockets bound here and passed as LISTEN_FDS /
LISTEN_FDNAMES / LISTEN_PID (fds 3, 4, ...) — and `run()` for the command-line
tools.  Every process started is stopped at the end of the test.

`make_user` creates real local accounts (root only) and removes them afterwards.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.peers.certs import make_server_cert

if TYPE_CHECKING:
    from sdmail.core.records import Envelope

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, the interpreter the package runs on


def python_for_users() -> str:
    """The interpreter a test's local user can run: this one, unless it lives where other
    users cannot reach it (a pyenv under /root), then Debian's."""
    path = Path(sys.executable)
    reachable = all(os.stat(p).st_mode & 0o001 for p in [*path.parents, path.resolve()])
    return sys.executable if reachable else SYSTEM_PYTHON


class MailSystem:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.socket_dir = root / "run"
        self.mail_dir = root / "mail"
        for directory in (self.config_dir, self.queue_dir, self.socket_dir, self.mail_dir):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.mail_dir.chmod(0o1777)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tcp_ports: dict[str, int] = {}
        self.write_main_cf()
        from sdmail.core.spool import Spool

        with Spool(self.queue_dir) as spool:
            spool.create_directories()

    # -- configuration ------------------------------------------------------------------
    def write_main_cf(self, extra: str = "") -> None:
        (self.config_dir / "main.cf").write_text(
            "myhostname = mail.example.test\n"
            f"queue_directory = {self.queue_dir}\n"
            f"socket_directory = {self.socket_dir}\n"
            f"mail_spool_directory = {self.mail_dir}\n"
            f"alias_maps = hash:{self.config_dir}/aliases\n"
            f"alias_database = hash:{self.config_dir}/aliases\n"
            "max_idle = 30s\n" + extra
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SDMAIL_CONFIG_DIR": str(self.config_dir),
            "PYTHONPATH": str(REPO),
        }

    def socket_path(self, name: str) -> Path:
        return self.socket_dir / name

    @property
    def user_python(self) -> str:
        """The interpreter for commands run as a test's local user (see python_for_users)."""
        return python_for_users()

    # -- processes ----------------------------------------------------------------------
    def start(
        self,
        component: str,
        sockets: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
        *,
        mode: int = 0o666,
        tcp: tuple[str, ...] = (),
        interpreter: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run `python3 -m sdmail.COMPONENT -c CONFIG_DIR ARGS` with SOCKETS passed as LISTEN_FDS.

        SOCKETS are UNIX sockets in socket_dir; TCP names listeners bound on 127.0.0.1 at a
        free port each (after the UNIX ones, named in LISTEN_FDNAMES the same way), whose
        ports are in `tcp_ports[name]` once this returns.  INTERPRETER runs the component
        instead of the test's own python (`/usr/bin/python3`: Debian's, with Debian's
        python3-* packages).
        """
        listeners = []
        for name in sockets:
            path = self.socket_path(name)
            path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            path.chmod(mode)
            listener.listen(128)
            listeners.append(listener)
        for name in tcp:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.tcp_ports[name] = listener.getsockname()[1]
            listeners.append(listener)
        names = (*sockets, *tcp)
        fds = [listener.fileno() for listener in listeners]
        env = {**self.env, **(environment or {})}
        if names:
            env.update(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=":".join(names))

        def place_fds() -> None:
            for index, fd in enumerate(fds):
                os.dup2(fd, 100 + index)
            for index in range(len(fds)):
                os.dup2(100 + index, 3 + index)
                os.close(100 + index)

        python = interpreter or sys.executable
        command = [python, "-m", f"sdmail.{component}", "-c", str(self.config_dir), *args]
        launcher = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] if names else []
        # Not pass_fds: Popen closes every descriptor it was not told to keep AFTER
        # preexec_fn ran, which would close the sockets just placed at 3, 4, ...  The
        # descriptors dup2() makes are inheritable; every other one Python opened is not.
        with open(self.root / f"{component}.log", "ab") as log:
            process = subprocess.Popen(
                launcher + command,
                env=env,
                close_fds=False,
                preexec_fn=place_fds if fds else None,  # noqa: PLW1509 (single-threaded test)
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        for listener in listeners:
            listener.close()
        self.processes.append(process)
        return process

    def queued(self) -> list[tuple[str, Envelope, bytes]]:
        """Every queue file in incoming/, by name: (queue ID, envelope, message content)."""
        from sdmail.core.qfile import decode

        folder = self.queue_dir / "incoming"
        found = []
        for name in sorted(os.listdir(folder)):
            data = (folder / name).read_bytes()
            queue_file = decode(data)
            found.append((name, queue_file.envelope, queue_file.content_from(data)))
        return found

    def start_ready(
        self, component: str, sockets: tuple[str, ...] = (), args: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        """`start`, then wait until the daemon said READY=1 on its NOTIFY_SOCKET, as systemd
        would: its signal handlers are in place, so a signal the test sends is handled."""
        path = self.root / f"notify-{component}-{len(self.processes)}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(path))
            receiver.settimeout(1)
            process = self.start(component, sockets, args, environment={"NOTIFY_SOCKET": str(path)})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    datagram = receiver.recv(4096)
                except TimeoutError:
                    if process.poll() is not None:
                        break
                    continue
                if b"READY=1" in datagram.splitlines():
                    path.unlink()
                    return process
        raise AssertionError(f"{component} never said READY=1: {self.log(component)[-2000:]}")

    def log(self, component: str) -> str:
        path = self.root / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(
        self,
        tool: str,
        *args: str,
        input: bytes | None = None,
        user: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `python3 -m sdmail.TOOL ARGS` (as USER when given) and return the result."""
        command = [sys.executable, "-m", f"sdmail.{tool}", *args]
        if user is not None:
            command = [self.user_python, *command[1:]]
            command = [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                f"PYTHONPATH={REPO}",
                f"SDMAIL_CONFIG_DIR={self.config_dir}",
                *command,
            ]
        return subprocess.run(
            command, input=input, capture_output=True, env=self.env, timeout=timeout
        )

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- waiting ------------------------------------------------------------------------
    @staticmethod
    def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def queue_files(self, *queues: str) -> list[str]:
        names = queues or ("maildrop", "incoming", "active", "deferred", "hold")
        return [f"{q}/{n}" for q in names for n in os.listdir(self.queue_dir / q)]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and its key for mail.example.test."""
    files = make_server_cert(tmp_path_factory.mktemp("tls"), ["mail.example.test"])
    return files.cert, files.key


@pytest.fixture
def mailsys() -> Iterator[MailSystem]:
    # Not pytest's tmp_path: its parents are 0700, and the tests' local users must reach
    # the sockets and mail spool inside.
    root = Path(tempfile.mkdtemp(prefix="sdmail-test-", dir="/var/tmp"))
    root.chmod(0o755)
    system = MailSystem(root)
    try:
        yield system
    finally:
        system.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_user() -> Iterator[Callable[[], pwd.struct_passwd]]:
    if os.geteuid() != 0:
        pytest.skip("creating local accounts needs root")
    made: list[str] = []

    def create() -> pwd.struct_passwd:
        name = "sdt" + secrets.token_hex(4)
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
        made.append(name)
        return pwd.getpwnam(name)

    yield create
    for name in made:
        home = pwd.getpwnam(name).pw_dir
        subprocess.run(["userdel", "--force", name], check=False)
        shutil.rmtree(home, ignore_errors=True)
