"""postfix: the command administrators type — for now `postfix check`.

USAGE
    postfix [-c DIR] check

`check` reads main.cf strictly (a broken file is `postfix: fatal: FILE, line N:
NAME: why` and exit 78) and checks the queue directories: each present, a
directory, mode 0700, owned by `mail_owner` when that user exists.  Problems are
`postfix: warning: ...` lines and exit status 1.  sdmail.service runs it before
starting and before reloading, so a broken configuration stops there, visible
in `systemctl status sdmail`.

The other commands (start, stop, reload, status, flush, ...) map onto the
systemd units and come with the administrator's tools.
"""

from __future__ import annotations

import pwd
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "control the sdmail mail system")
    parser.add_argument("command", help="check")

    def tool(ctx: ToolContext[None]) -> int:
        command = ctx.invocation.options.command
        if command == "check":
            return check(ctx)
        raise UsageError(f"unknown command: {command!r} (supported: check)")

    return run_tool(PROGRAM, argv, tool, parser=parser)


if __name__ == "__main__":
    sys.exit(main())
