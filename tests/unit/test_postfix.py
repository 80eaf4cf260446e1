"""postfix: check, and the subcommands mapped onto systemd units.

systemd cannot run here: a fake `systemctl` first on PATH (the door) records each
call and answers as the test says, and SDMAIL_SYSTEMD_RUNTIME_DIR stands for
/run/systemd/system.
"""

from __future__ import annotations

import os
import pwd
import shlex
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sdmail.core.spool import Spool


def postfix(
    config_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdmail.postfix", "-c", str(config_dir), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SDMAIL_CONFIG_DIR": "/nonexistent", **(env or {})},
        timeout=60,
    )


class FakeSystemd:
    """A `systemctl` that records its arguments and answers from a table of
    argument string -> (exit status, stdout); anything else succeeds silently."""

    def __init__(self, tmp_path: Path, *, booted: bool = True) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.calls_file = tmp_path / "systemctl.calls"
        self.runtime_dir = tmp_path / "run-systemd-system"
        if booted:
            self.runtime_dir.mkdir()
        self.answer({})

    def answer(self, answers: dict[str, tuple[int, str]]) -> None:
        cases = "".join(
            f"  {shlex.quote(args)}) printf %s {shlex.quote(out)}; exit {rc};;\n"
            for args, (rc, out) in answers.items()
        )
        script = self.bin / "systemctl"
        script.write_text(
            f'#!/bin/sh\necho "$*" >> {shlex.quote(str(self.calls_file))}\n'
            f'case "$*" in\n{cases}  *) exit 0;;\nesac\n'
        )
        script.chmod(0o755)

    @property
    def calls(self) -> list[str]:
        if not self.calls_file.exists():
            return []
        return self.calls_file.read_text().splitlines()

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "SDMAIL_SYSTEMD_RUNTIME_DIR": str(self.runtime_dir),
        }


RUNNING = {"is-active --quiet sdmail.service": (0, "")}
STOPPED = {"is-active --quiet sdmail.service": (3, "")}


def configured(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/q\n{extra}")
    (tmp_path / "q").mkdir(exist_ok=True)
    with Spool(tmp_path / "q") as spool:
        spool.create_directories()
    return tmp_path


def test_check_passes_on_a_good_configuration_and_queue(tmp_path):
    result = postfix(configured(tmp_path), "check")
    assert (result.returncode, result.stderr) == (0, "")


def test_check_names_file_line_and_parameter_of_a_broken_main_cf(tmp_path):
    configured(tmp_path, "max_use = plenty\n")
    result = postfix(tmp_path, "check")
    assert result.returncode == 78
    assert result.stderr == (
        f'postfix: fatal: {tmp_path}/main.cf, line 2: max_use: bad numerical value: "plenty"\n'
    )


def test_check_reports_a_broken_queue(tmp_path):
    configured(tmp_path)
    (tmp_path / "q" / "deferred").rmdir()
    (tmp_path / "q" / "hold").chmod(0o755)
    result = postfix(tmp_path, "check")
    assert result.returncode == 1
    assert f"postfix: warning: {tmp_path}/q/deferred: No such file or directory" in result.stderr
    assert f"postfix: warning: {tmp_path}/q/hold: mode 0755, should be 0700" in result.stderr


def test_unknown_command_is_a_usage_error(tmp_path):
    result = postfix(configured(tmp_path), "explode")
    assert result.returncode == 64
    assert "unknown command" in result.stderr


# -- the subcommands mapped onto systemd ------------------------------------------------


def test_start_starts_sdmail_service(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(STOPPED)
    result = postfix(configured(tmp_path), "start", env=systemd.env)
    assert (result.returncode, result.stderr) == (0, "postfix: starting the sdmail mail system\n")
    assert systemd.calls == ["is-active --quiet sdmail.service", "start sdmail.service"]


def test_start_refuses_when_already_running(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(RUNNING)
    result = postfix(configured(tmp_path), "start", env=systemd.env)
    assert result.returncode == 1
    assert result.stderr == "postfix: fatal: the sdmail mail system is already running\n"
    assert "start sdmail.service" not in systemd.calls


def test_start_refuses_a_broken_queue_before_asking_systemd(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(STOPPED)
    configured(tmp_path)
    (tmp_path / "q" / "active").rmdir()
    result = postfix(tmp_path, "start", env=systemd.env)
    assert result.returncode == 1
    assert f"postfix: warning: {tmp_path}/q/active: No such file or directory" in result.stderr
    assert "run postfix set-permissions" in result.stderr
    assert "start sdmail.service" not in systemd.calls


def test_start_fails_when_systemctl_fails_and_passes_its_message_on(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer({**STOPPED, "start sdmail.service": (1, "Job for sdmail.service failed.")})
    result = postfix(configured(tmp_path), "start", env=systemd.env)
    assert result.returncode == 1
    assert "Job for sdmail.service failed." in result.stdout
    assert "postfix: fatal: systemctl start sdmail.service failed (exit status 1)" in result.stderr


@pytest.mark.parametrize(
    ("command", "verb", "call"),
    [
        ("stop", "stopping", "stop sdmail.service"),
        ("reload", "refreshing", "reload sdmail.service"),
    ],
)
def test_stop_and_reload_ask_systemctl(tmp_path, command, verb, call):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(RUNNING)
    result = postfix(configured(tmp_path), command, env=systemd.env)
    assert (result.returncode, result.stderr) == (0, f"postfix: {verb} the sdmail mail system\n")
    assert systemd.calls == ["is-active --quiet sdmail.service", call]


@pytest.mark.parametrize("command", ["stop", "reload", "abort"])
def test_commands_for_a_running_system_refuse_when_it_is_not(tmp_path, command):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(STOPPED)
    result = postfix(configured(tmp_path), command, env=systemd.env)
    assert result.returncode == 1
    assert result.stderr == "postfix: fatal: the sdmail mail system is not running\n"
    assert systemd.calls == ["is-active --quiet sdmail.service"]


def test_abort_kills_the_parts_of_the_system_then_stops_it(tmp_path):
    systemd = FakeSystemd(tmp_path)
    listing = (
        "sdmail-qmgr.service loaded active running sdmail queue manager\n"
        "sdmail-postdrop.service loaded active running sdmail postdrop\n"
        "sdmail-smtpd.service loaded active running sdmail SMTP server\n"
    )
    systemd.answer(
        {
            **RUNNING,
            "list-units --type=service --state=active --plain --no-legend sdmail-*": (0, listing),
        }
    )
    result = postfix(configured(tmp_path), "abort", env=systemd.env)
    assert (result.returncode, result.stderr) == (0, "postfix: aborting the sdmail mail system\n")
    assert systemd.calls[-2:] == [
        "kill --signal=KILL sdmail-qmgr.service sdmail-smtpd.service",
        "stop sdmail.service",
    ]


def test_status_of_a_running_system_names_qmgrs_pid(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(
        {**RUNNING, "show --property=MainPID --value sdmail-qmgr.service": (0, "4242\n")}
    )
    result = postfix(configured(tmp_path), "status", env=systemd.env)
    assert (result.returncode, result.stderr) == (
        0,
        "postfix: the sdmail mail system is running: PID: 4242\n",
    )


def test_status_of_a_stopped_system_exits_1(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer(STOPPED)
    result = postfix(configured(tmp_path), "status", env=systemd.env)
    assert (result.returncode, result.stderr) == (
        1,
        "postfix: the sdmail mail system is not running\n",
    )


def test_status_warns_when_the_system_runs_without_qmgr(tmp_path):
    systemd = FakeSystemd(tmp_path)
    systemd.answer({**RUNNING, "show --property=MainPID --value sdmail-qmgr.service": (0, "0\n")})
    result = postfix(configured(tmp_path), "status", env=systemd.env)
    assert result.returncode == 0
    assert "warning: the sdmail mail system is running, but sdmail-qmgr.service is not" in (
        result.stderr
    )


@pytest.mark.parametrize("command", ["start", "stop", "abort", "reload", "status"])
def test_without_systemd_the_commands_that_need_it_say_so(tmp_path, command):
    systemd = FakeSystemd(tmp_path, booted=False)
    result = postfix(configured(tmp_path), command, env=systemd.env)
    assert result.returncode == 1
    assert result.stderr == (
        "postfix: fatal: systemd is not running here: sdmail's parts are started by systemd units\n"
    )
    assert systemd.calls == []


def test_check_works_without_systemd(tmp_path):
    systemd = FakeSystemd(tmp_path, booted=False)
    result = postfix(configured(tmp_path), "check", env=systemd.env)
    assert (result.returncode, result.stderr) == (0, "")


def test_flush_sends_postqueue_f_to_qmgrs_trigger_socket(tmp_path):
    sockets = tmp_path / "run"
    sockets.mkdir()
    configured(tmp_path, f"socket_directory = {sockets}\n")
    received = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sockets / "qmgr"))
        listener.listen(1)
        listener.settimeout(30)

        def take_one() -> None:
            conn, _ = listener.accept()
            with conn:
                received.append(conn.recv(100))

        taker = threading.Thread(target=take_one)
        taker.start()
        result = postfix(tmp_path, "flush")
        taker.join(30)
    assert (result.returncode, result.stderr) == (0, "")
    assert received == [b"FADI"]


def test_flush_with_nobody_listening_gives_postqueues_answer(tmp_path):
    sockets = tmp_path / "run"
    sockets.mkdir()
    result = postfix(configured(tmp_path, f"socket_directory = {sockets}\n"), "flush")
    assert result.returncode == 69
    assert result.stderr.startswith(
        "postqueue: fatal: Cannot flush mail queue - mail system is down"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_set_permissions_creates_and_repairs_queue_directories_for_mail_owner(tmp_path):
    owner = pwd.getpwnam("nobody")
    configured(tmp_path, "mail_owner = nobody\n")
    (tmp_path / "q" / "deferred").rmdir()
    (tmp_path / "q" / "hold").chmod(0o755)
    systemd = FakeSystemd(tmp_path, booted=False)
    result = postfix(tmp_path, "set-permissions", env=systemd.env)
    assert result.returncode == 0, result.stderr
    assert f"postfix: created queue directory {tmp_path}/q/deferred" in result.stderr
    for name in ("deferred", "hold", "active"):
        st = (tmp_path / "q" / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            0o700,
            owner.pw_uid,
            owner.pw_gid,
        )
    assert postfix(tmp_path, "check", "-o", "mail_owner=nobody").returncode == 0


def test_set_permissions_with_an_unknown_mail_owner_changes_nothing(tmp_path):
    configured(tmp_path, "mail_owner = no-such-user-here\n")
    (tmp_path / "q" / "hold").chmod(0o755)
    result = postfix(tmp_path, "set-permissions")
    assert result.returncode == 67
    assert result.stderr == "postfix: fatal: mail_owner: unknown user: no-such-user-here\n"
    assert stat.S_IMODE((tmp_path / "q" / "hold").stat().st_mode) == 0o755


def test_upgrade_configuration_has_nothing_to_do(tmp_path):
    result = postfix(configured(tmp_path), "upgrade-configuration")
    assert result.returncode == 0
    assert result.stderr.startswith("postfix: nothing to upgrade")
