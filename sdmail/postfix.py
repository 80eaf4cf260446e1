"""postfix: the command administrators type — for now `postfix check`.

USAGE
    postfix [-c DIR] check
    postfix [-c DIR] reload-parts      (sdmail.service's reload; not for people)

`check` reads main.cf strictly (a broken file is `postfix: fatal: FILE, line N:
NAME: why` and exit 78) and checks the queue directories: each present, a
directory, mode 0700, owned by `mail_owner` when that user exists.  Problems are
`postfix: warning: ...` lines and exit status 1.  sdmail.service runs it before
starting and before reloading, so a broken configuration stops there, visible
in `systemctl status sdmail`.

`reload-parts` is the second half of `systemctl reload sdmail` (after `check`):
it sends SIGHUP to every running sdmail-*.service and returns only when each
has confirmed the new main.cf by naming its digest in its systemd STATUS=
(core/skeleton), or has exited (its next start reads the new file).  Parts
that had failed (a broken main.cf at their start) are started again.  A part
that does not confirm within `reload_timeout` fails the reload, naming it.

The other commands (start, stop, reload, status, flush, ...) map onto the
systemd units and come with the administrator's tools.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from sdmail.core.config import main_cf_digest
from sdmail.core.skeleton import ToolContext, UsageError, option_parser, run_tool
from sdmail.core.spool import Spool

PROGRAM = "postfix"


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


def _systemctl(*args: str) -> str:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    return result.stdout


def running_parts() -> dict[str, int]:
    """The active sdmail-*.service units and their main PIDs."""
    listing = _systemctl(
        "list-units", "--type=service", "--state=active", "--plain", "--no-legend", "sdmail-*"
    )
    parts = {}
    for line in listing.splitlines():
        unit = line.split(maxsplit=1)[0] if line.strip() else ""
        if unit.startswith("sdmail-") and unit.endswith(".service"):
            pid = _systemctl("show", "--property=MainPID", "--value", unit).strip()
            if pid.isdigit() and int(pid) > 0:
                parts[unit] = int(pid)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "control the sdmail mail system")
    parser.add_argument("command", help="check")

    def tool(ctx: ToolContext[None]) -> int:
        command = ctx.invocation.options.command
        if command == "check":
            return check(ctx)
        if command == "reload-parts":
            return reload_parts(ctx)
        raise UsageError(f"unknown command: {command!r} (supported: check)")

    return run_tool(PROGRAM, argv, tool, parser=parser)


if __name__ == "__main__":
    sys.exit(main())
