"""postlog: put a line, or each line of standard input, into the mail log, as Postfix's postlog.

USAGE
    postlog [-iv] [-c DIR] [-p priority] [-t tag] [text...]

WHAT IT DOES.  Logs TEXT (the arguments joined with spaces) as one record, or each line
of standard input as one record when there is no TEXT, through core/log into the
journal with sdmail's fields: SYSLOG_IDENTIFIER the tag (`$syslog_name/postlog`
unless -t), SYSLOG_FACILITY mail (so rsyslog's mail.log has it), SYSLOG_PID (so -i,
Postfix's "include the process ID", is what happens anyway), PRIORITY, and
SDMAIL_COMPONENT=postlog.  -p sets the severity as Postfix's postlog names it:
`info` (the default), `warn` or `warning`, `error` or `err`, `fatal` or `crit`,
`panic`; the text then starts with Postfix's `warning: `, `error: `, `fatal: ` or
`panic: `.  Logging a fatal or panic line does not make postlog fail.  When standard
error is a terminal the lines are shown there too (`tag: warning: text`); when no
journal answers they go to standard error as `tag[PID]: text`, so none is lost.

BAD INPUT.  An unknown priority is `postlog: fatal: bad severity: "NAME"`, exit 1.

Exit status: 0 logged; 1 bad severity; 64 usage; 78 main.cf.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sdmail.core.log import (
    FATAL,
    JOURNAL_SOCKET,
    LOGGER_NAME,
    PANIC,
    JournalHandler,
    ToolStderrHandler,
)
from sdmail.core.skeleton import Fatal, ToolContext, option_parser, run_tool
from sdmail.manpages import add_help_option

PROGRAM = "postlog"
USAGE = "postlog [-c config_dir] [-i] [-p priority] [-t tag] [-v] [text]"
EXIT_FAILURE = 1

# Postfix's postlog.c level_table.
LEVELS: Final = {
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "fatal": FATAL,
    "crit": FATAL,
    "panic": PANIC,
}


@dataclass(frozen=True)
class PostlogSettings:
    syslog_name: str


def severity(name: str) -> int:
    """The logging level of a -p NAME (any case); Fatal for a name Postfix does not know."""
    level = LEVELS.get(name.lower())
    if level is None:
        raise Fatal(f'bad severity: "{name}"', EXIT_FAILURE)
    return level


def log_as(tag: str, journal_socket: str | Path) -> logging.Logger:
    """Send this process's records to the journal under TAG (to stderr too on a terminal,
    and instead of the journal when none answers)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, JournalHandler | ToolStderrHandler)]:
        root.removeHandler(old)
        old.close()
    on_terminal = sys.stderr.isatty()
    root.addHandler(
        JournalHandler(
            tag, PROGRAM, socket_path=journal_socket, fallback=None if on_terminal else sys.stderr
        )
    )
    if on_terminal:
        root.addHandler(ToolStderrHandler(tag))
    return logging.getLogger(LOGGER_NAME)


def stdin_lines(stream: Iterable[bytes]) -> Iterable[str]:
    for raw in stream:
        yield raw.decode("utf-8", "surrogateescape").removesuffix("\n")


def main(argv: Sequence[str] | None = None, *, journal_socket: str | Path = JOURNAL_SOCKET) -> int:
    parser = option_parser(PROGRAM, "log a line the way sdmail does")
    parser.usage = USAGE
    parser.add_argument("-i", dest="include_pid", action="store_true")
    parser.add_argument("-p", dest="priority", default="info")
    parser.add_argument("-t", dest="tag")
    parser.add_argument("text", nargs="*")
    add_help_option(parser, __doc__)

    def postlog(ctx: ToolContext[PostlogSettings]) -> int:
        level = severity(ctx.options.priority)
        tag = ctx.options.tag or f"{ctx.settings.syslog_name}/{PROGRAM}"
        logger = log_as(tag, journal_socket)
        lines = [" ".join(ctx.options.text)] if ctx.options.text else stdin_lines(sys.stdin.buffer)
        for line in lines:
            logger.log(level, "%s", line)
        return 0

    return run_tool(
        PROGRAM,
        argv,
        postlog,
        settings=PostlogSettings,
        parser=parser,
        journal_socket=journal_socket,
        unexpected_exit=EXIT_FAILURE,
    )


if __name__ == "__main__":
    sys.exit(main())
