"""Tests for sdmail.core.systemd: sockets passed the systemd way, and sd_notify datagrams."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from sdmail.core.systemd import (
    ListenFd,
    SystemdError,
    listen_fds,
    notify,
    notify_ready,
    notify_reloading,
    notify_status,
    notify_stopping,
    notify_watchdog,
    watchdog_interval,
)

REPO = Path(__file__).resolve().parents[3]

# The service side: take the sockets, report what it saw, answer one client per socket.
CHILD = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys
    from sdmail.core.systemd import listen_fds
    passed = listen_fds()
    report = {
        "fds": [[fd, name] for fd, name in passed],
        "cloexec": [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd, _ in passed],
        "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
        "pid": os.getpid(),
    }
    print(json.dumps(report), flush=True)
    for fd, name in passed:
        with socket.socket(fileno=fd) as listener:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(name.encode())
    """
)

# What systemd does before exec: the sockets become 3, 4, ... and LISTEN_* say so.
LAUNCHER = textwrap.dedent(
    """
    import os, sys
    import fcntl
    given = [int(fd) for fd in sys.argv[1].split(",")]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in given]
    for target, fd in enumerate(high, start=3):
        os.dup2(fd, target)
    os.environ["LISTEN_FDS"] = str(len(given))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = sys.argv[2]
    os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
    """
)


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdsd-", dir="/tmp") as directory:
        yield Path(directory)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def ask(path: Path) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(path))
                client.settimeout(10)
                return client.recv(100).decode()
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_with_socket_activate(smtpd: Path, submission: Path, child: Path):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed")
    process = subprocess.Popen(
        # It gives the child a fresh environment: only what -E names, and LISTEN_*.
        [
            tool,
            "-l",
            str(smtpd),
            "-l",
            str(submission),
            "--fdname=smtpd:submission",
            f"--setenv=PYTHONPATH={REPO}",
            sys.executable,
            str(child),
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return process, []


def start_with_launcher(smtpd: Path, submission: Path, child: Path):
    listeners = []
    for path in (smtpd, submission):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen()
        listeners.append(listener)
    fds = [listener.fileno() for listener in listeners]
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), "smtpd:submission", str(child)],
        env=child_env(),
        pass_fds=fds,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, listeners


@pytest.mark.parametrize("start", [start_with_socket_activate, start_with_launcher])
def test_child_gets_named_listening_sockets_from_fd_3_and_the_variables_are_gone(short_dir, start):
    child = short_dir / "child.py"
    child.write_text(CHILD)
    smtpd, submission = short_dir / "smtpd.sock", short_dir / "submission.sock"
    process, listeners = start(smtpd, submission, child)
    with process:
        try:
            assert ask(smtpd) == "smtpd"
            assert ask(submission) == "submission"
            out, _ = process.communicate(timeout=10)
        finally:
            process.kill()
            for listener in listeners:
                listener.close()
    report = json.loads(out)
    assert report["fds"] == [[3, "smtpd"], [4, "submission"]]
    assert report["cloexec"] == [True, True]
    assert report["env"] == []


def run_child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_variables_for_another_process_give_no_sockets_and_are_removed():
    result = run_child(
        """
        import os
        from sdmail.core.systemd import listen_fds
        print(listen_fds(), sorted(k for k in os.environ if k.startswith("LISTEN_")))
        """,
        LISTEN_PID="1",
        LISTEN_FDS="1",
    )
    assert result.stdout == "[] []\n", result.stderr


def test_unnamed_sockets_are_called_unknown_and_variables_can_be_kept():
    result = run_child(
        """
        import os
        from sdmail.core.systemd import listen_fds
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"
        r, w = os.pipe()
        os.dup2(r, 3)
        print(listen_fds(unset_environment=False), os.environ["LISTEN_FDS"])
        """
    )
    assert result.stdout == "[ListenFd(fd=3, name='unknown')] 1\n", result.stderr


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"LISTEN_FDS": "two"}, "LISTEN_FDS='two' is not a number"),
        ({"LISTEN_FDS": "-1"}, "LISTEN_FDS='-1' is not a number"),
        ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "smtpd"}, "LISTEN_FDNAMES names 1 sockets but"),
        ({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}, "descriptor 3 is not open"),
    ],
)
def test_malformed_variables_are_refused_naming_the_variable(variables, message):
    assignments = "".join(f"os.environ[{k!r}] = {v!r}\n" for k, v in variables.items())
    result = run_child(
        "import os\n"
        "from sdmail.core.systemd import listen_fds, SystemdError\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.closerange(3, 10)\n" + assignments + "try:\n"
        "    listen_fds()\n"
        "except SystemdError as exc:\n"
        "    print(exc, sorted(k for k in os.environ if k.startswith('LISTEN_')))\n"
    )
    assert message in result.stdout, result.stderr
    assert result.stdout.endswith(" []\n")


def test_no_variables_no_sockets(monkeypatch):
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert listen_fds() == []
    assert ListenFd(3, "smtpd").name == "smtpd"


# --------------------------------------------------------------------------------------
# sd_notify
# --------------------------------------------------------------------------------------
class NotifySocket:
    def __init__(self, address) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def receive(self) -> tuple[str, int]:
        """The next notification and the sender's pid (as systemd learns it)."""
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, payload in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid, _uid, _gid = struct.unpack("3i", payload[:12])
        return data.decode(), pid


@pytest.fixture
def notify_socket(short_dir, monkeypatch):
    path = short_dir / "notify"
    listener = NotifySocket(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield listener
    listener.sock.close()


def test_ready_status_stopping_and_watchdog_arrive_as_key_value_lines(notify_socket):
    assert notify_ready() is True
    assert notify_socket.receive() == ("READY=1\n", os.getpid())
    notify_ready("serving")
    assert notify_socket.receive()[0] == "READY=1\nSTATUS=serving\n"
    notify_status("3 sessions")
    assert notify_socket.receive()[0] == "STATUS=3 sessions\n"
    notify_stopping()
    assert notify_socket.receive()[0] == "STOPPING=1\n"
    notify_watchdog()
    assert notify_socket.receive()[0] == "WATCHDOG=1\n"
    notify(EXTEND_TIMEOUT_USEC=5000000)
    assert notify_socket.receive()[0] == "EXTEND_TIMEOUT_USEC=5000000\n"


def test_reloading_carries_the_current_monotonic_time(notify_socket):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify_reloading("reloading configuration")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = notify_socket.receive()[0].splitlines()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=")[1]) <= after
    assert lines[2] == "STATUS=reloading configuration"


def test_abstract_notify_socket(monkeypatch):
    name = f"sdmail-test-{uuid.uuid4().hex}"
    listener = NotifySocket(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify_ready()
        assert listener.receive()[0] == "READY=1\n"
    finally:
        listener.sock.close()


def test_notification_from_a_child_process_comes_from_its_pid(notify_socket):
    result = run_child(
        """
        import os
        from sdmail.core.systemd import notify_ready
        notify_ready("child up")
        print(os.getpid())
        """,
        NOTIFY_SOCKET=os.environ["NOTIFY_SOCKET"],
    )
    assert notify_socket.receive() == ("READY=1\nSTATUS=child up\n", int(result.stdout))


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_ready() is False
    assert notify_reloading() is False


def test_unreachable_or_malformed_notify_socket_is_an_error(short_dir, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "nobody"))
    with pytest.raises(SystemdError, match=r"cannot notify systemd at NOTIFY_SOCKET=.*nobody"):
        notify_ready()
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    with pytest.raises(SystemdError, match="neither an absolute path nor an abstract socket"):
        notify_ready()


def test_bad_field_names_and_values_are_refused(notify_socket):
    with pytest.raises(ValueError, match="bad notification field name 'ready'"):
        notify(ready=1)
    with pytest.raises(ValueError, match="STATUS holds a line break"):
        notify_status("two\nlines")


def test_watchdog_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    with pytest.raises(SystemdError, match="WATCHDOG_USEC='soon' is not a positive number"):
        watchdog_interval()
