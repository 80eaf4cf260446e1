"""postfix: the command administrators type, mapped onto sdmail's systemd units.

USAGE
    postfix [-c DIR] check
    postfix [-c DIR] start | stop | abort | reload | status
    postfix [-c DIR] flush
    postfix [-c DIR] set-permissions
    postfix [-c DIR] upgrade-configuration
    postfix [-c DIR] reload-parts      (sdmail.service's reload; not for people)

There is no master daemon: systemd is the master, and `sdmail.service` is the
whole mail system (its parts name it in PartOf=).  "Running" means that unit is
active.

`check` reads main.cf strictly (a broken file is `postfix: fatal: FILE, line N:
NAME: why` and exit 78) and checks the queue directories: each present, a
directory, mode 0700, owned by `mail_owner` when that user exists.  Problems are
`postfix: warning: ...` lines and exit status 1.  sdmail.service runs it before
starting and before reloading, so a broken configuration stops there, visible
in `systemctl status sdmail`.

`start` runs the same check (so its warnings reach the terminal, not only the
journal) and then `systemctl start sdmail.service`; it refuses with `postfix:
fatal: the sdmail mail system is already running` (exit 1) when the unit is
active.  `stop` is `systemctl stop sdmail.service`, `reload` is `systemctl
reload sdmail.service` (synchronous, see reload-parts), `abort` sends SIGKILL
to every active part (`systemctl kill --signal=KILL`; not sdmail-postdrop,
which stopping sdmail leaves running too) and then stops the unit.  Each of
these refuses with `postfix: fatal: the sdmail mail system is not running`
(exit 1) when the unit is inactive, as Postfix's postfix-script does, and
fails with exit 1 when systemctl does (whose own message is passed through).
`status` says `postfix: the sdmail mail system is running: PID: N` (N is the
main PID of sdmail-qmgr.service, the one long-lived part) and exits 0, or says
`postfix: the sdmail mail system is not running` and exits 1.

Where systemd is not running (no /run/systemd/system) these five fail with
`postfix: fatal: systemd is not running here: sdmail's parts are started by
systemd units` and exit 1.  The environment variable SDMAIL_SYSTEMD_RUNTIME_DIR
names another directory for that test, and is read by nothing else (tests).

`flush` is `postqueue -f` (this process becomes `python3 -m sdmail.postqueue -f`
with the same -c, -o and -v), which talks to qmgr's trigger socket, not to
systemd.  `set-permissions` creates missing queue directories and gives each
mode 0700 and the owner `mail_owner` (a `mail_owner` that is not a user is
fatal, exit 67), then checks again as `check` does.  `upgrade-configuration`
has nothing to do (sdmail has no master.cf, and main.cf needs no conversion)
and says so.

`reload-parts` is the second half of `systemctl reload sdmail` (after `check`):
it sends SIGHUP to every running sdmail-*.service and returns only when each
has confirmed the new main.cf by naming its digest in its systemd STATUS=
(core/skeleton), or has exited (its next start reads the new file).  Parts
that had failed (a broken main.cf at their start) are started again.  A part
that does not confirm within `reload_timeout` fails the reload, naming it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from sdmail.core.config import main_cf_digest
from sdmail.core.records import ALL_QUEUES
from sdmail.core.skeleton import (
    ExitCode,
    Fatal,
    ToolContext,
    UsageError,
    option_parser,
    run_tool,
)
from sdmail.core.spool import QUEUE_DIRECTORY_MODE, Spool

PROGRAM = "postfix"
SYSTEM_UNIT = "sdmail.service"
QMGR_UNIT = "sdmail-qmgr.service"
# Started by sdmail.service but not stopped with it: local submission keeps queueing.
OUTSIDE_THE_SYSTEM = frozenset({"sdmail-postdrop.service"})
SYSTEMD_RUNTIME_DIR = "/run/systemd/system"  # sd_booted()'s test
SYSTEMD_RUNTIME_DIR_ENV = "SDMAIL_SYSTEMD_RUNTIME_DIR"


def check(ctx: ToolContext[None]) -> int:
    cfg = ctx.config
    for warning in cfg.warnings:
        ctx.logger.warning("%s", warning)
    try:
        owner: int | None = pwd.getpwnam(cfg.get("mail_owner")).pw_uid
    except KeyError:
        owner = None
    problems = Spool(cfg.get("queue_directory")).check_directories(owner)
    for problem in problems:
        ctx.logger.warning("%s", problem)
    return 1 if problems else 0


def _mail_owner(ctx: ToolContext[None]) -> pwd.struct_passwd:
    name = ctx.config.get("mail_owner")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise Fatal(f"mail_owner: unknown user: {name}", ExitCode.NOUSER) from None


def set_permissions(ctx: ToolContext[None]) -> int:
    owner = _mail_owner(ctx)
    with Spool(ctx.config.get("queue_directory")) as spool:
        for queue in spool.create_directories():
            ctx.logger.info("created queue directory %s", spool.path / queue.value)
        for queue in ALL_QUEUES:
            path = spool.path / queue.value
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as exc:
                ctx.logger.warning("%s: %s", path, exc.strerror)
                continue
            try:
                os.fchown(fd, owner.pw_uid, owner.pw_gid)
                os.fchmod(fd, QUEUE_DIRECTORY_MODE)
            finally:
                os.close(fd)
    return check(ctx)


def upgrade_configuration(ctx: ToolContext[None]) -> int:
    ctx.logger.info("nothing to upgrade: sdmail has no master.cf, and main.cf needs no conversion")
    return 0


def flush(ctx: ToolContext[None]) -> int:
    invocation = ctx.invocation
    argv = [sys.executable, "-m", "sdmail.postqueue", "-c", str(ctx.config.config_dir)]
    for override in invocation.overrides:
        argv += ["-o", override]
    argv += ["-v"] * invocation.verbose + ["-f"]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)  # noqa: S606 (our own argument list, no shell)
    except OSError as exc:
        raise Fatal(f"cannot run postqueue -f: {exc.strerror}", ExitCode.UNAVAILABLE) from None


def _systemctl(*args: str) -> str:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    return result.stdout


def _systemctl_for_the_admin(*args: str) -> None:
    """Run systemctl with its messages on our terminal; its failure is ours (exit 1)."""
    try:
        status = subprocess.run(["systemctl", *args], check=False).returncode
    except OSError as exc:
        raise Fatal(f"cannot run systemctl: {exc.strerror}", 1) from None
    if status != 0:
        raise Fatal(f"systemctl {' '.join(args)} failed (exit status {status})", 1)


def require_systemd() -> None:
    """Fatal (exit 1) unless this host was booted with systemd as its init."""
    runtime_dir = os.environ.get(SYSTEMD_RUNTIME_DIR_ENV, SYSTEMD_RUNTIME_DIR)
    if not os.path.isdir(runtime_dir):
        raise Fatal("systemd is not running here: sdmail's parts are started by systemd units", 1)


def system_is_running() -> bool:
    result = subprocess.run(
        ["systemctl", "is-active", "--quiet", SYSTEM_UNIT], capture_output=True, check=False
    )
    return result.returncode == 0


def _require_running() -> None:
    if not system_is_running():
        raise Fatal("the sdmail mail system is not running", 1)


def main_pid(unit: str) -> int:
    """UNIT's main PID, 0 when it has none (not running)."""
    pid = _systemctl("show", "--property=MainPID", "--value", unit).strip()
    return int(pid) if pid.isdigit() else 0


def start(ctx: ToolContext[None]) -> int:
    require_systemd()
    if system_is_running():
        raise Fatal("the sdmail mail system is already running", 1)
    if check(ctx) != 0:
        raise Fatal("the queue is not in order (see above): run postfix set-permissions", 1)
    ctx.logger.info("starting the sdmail mail system")
    _systemctl_for_the_admin("start", SYSTEM_UNIT)
    return 0


def stop(ctx: ToolContext[None]) -> int:
    require_systemd()
    _require_running()
    ctx.logger.info("stopping the sdmail mail system")
    _systemctl_for_the_admin("stop", SYSTEM_UNIT)
    return 0


def abort(ctx: ToolContext[None]) -> int:
    require_systemd()
    _require_running()
    ctx.logger.info("aborting the sdmail mail system")
    parts = [unit for unit in active_parts() if unit not in OUTSIDE_THE_SYSTEM]
    if parts:
        _systemctl_for_the_admin("kill", "--signal=KILL", *parts)
    _systemctl_for_the_admin("stop", SYSTEM_UNIT)
    return 0


def reload(ctx: ToolContext[None]) -> int:
    require_systemd()
    _require_running()
    ctx.logger.info("refreshing the sdmail mail system")
    _systemctl_for_the_admin("reload", SYSTEM_UNIT)
    return 0


def status(ctx: ToolContext[None]) -> int:
    require_systemd()
    if not system_is_running():
        ctx.logger.info("the sdmail mail system is not running")
        return 1
    pid = main_pid(QMGR_UNIT)
    if pid == 0:
        ctx.logger.warning("the sdmail mail system is running, but %s is not", QMGR_UNIT)
        return 0
    ctx.logger.info("the sdmail mail system is running: PID: %d", pid)
    return 0


def active_parts() -> list[str]:
    """The active sdmail-*.service units."""
    listing = _systemctl(
        "list-units", "--type=service", "--state=active", "--plain", "--no-legend", "sdmail-*"
    )
    parts = []
    for line in listing.splitlines():
        unit = line.split(maxsplit=1)[0] if line.strip() else ""
        if unit.startswith("sdmail-") and unit.endswith(".service"):
            parts.append(unit)
    return parts


def running_parts() -> dict[str, int]:
    """The active sdmail-*.service units and their main PIDs."""
    parts = {}
    for unit in active_parts():
        pid = main_pid(unit)
        if pid > 0:
            parts[unit] = pid
    return parts


def confirmed(unit: str, pid: int, digest: str) -> bool:
    """UNIT runs the main.cf of DIGEST, or the process we signalled is gone."""
    shown = _systemctl("show", "--property=MainPID,StatusText,ActiveState", unit)
    fields = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    if fields.get("ActiveState") != "active" or fields.get("MainPID") != str(pid):
        return True
    return f"config {digest}" in fields.get("StatusText", "")


def restart_failed_parts() -> None:
    """Parts that could not start (a broken main.cf: exit 78) get another chance."""
    listing = _systemctl("list-units", "--state=failed", "--plain", "--no-legend", "sdmail-*")
    failed = [line.split()[0] for line in listing.splitlines() if line.strip()]
    if failed:
        _systemctl("reset-failed", *failed)
        _systemctl("start", "--no-block", *failed)


def reload_parts(ctx: ToolContext[None]) -> int:
    digest = main_cf_digest(ctx.config.config_dir)
    restart_failed_parts()
    parts = running_parts()
    for pid in parts.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + ctx.config.get_time("reload_timeout")
    waiting = dict(parts)
    while waiting and time.monotonic() < deadline:
        waiting = {unit: pid for unit, pid in waiting.items() if not confirmed(unit, pid, digest)}
        if waiting:
            time.sleep(0.1)
    for unit in waiting:
        ctx.logger.error("%s did not confirm the new configuration", unit)
    return 1 if waiting else 0


COMMANDS: dict[str, Callable[[ToolContext[None]], int]] = {
    "check": check,
    "start": start,
    "stop": stop,
    "abort": abort,
    "reload": reload,
    "status": status,
    "flush": flush,
    "set-permissions": set_permissions,
    "upgrade-configuration": upgrade_configuration,
    "reload-parts": reload_parts,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "control the sdmail mail system")
    parser.add_argument("command", help=", ".join(COMMANDS))

    def tool(ctx: ToolContext[None]) -> int:
        command = ctx.invocation.options.command
        if command not in COMMANDS:
            raise UsageError(f"unknown command: {command!r} (supported: {', '.join(COMMANDS)})")
        return COMMANDS[command](ctx)

    return run_tool(PROGRAM, argv, tool, parser=parser)


if __name__ == "__main__":
    sys.exit(main())
