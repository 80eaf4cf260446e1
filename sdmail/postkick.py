"""postkick: send a request to a service's trigger socket, as Postfix's postkick does.

USAGE
    postkick [-v] [-c DIR] class service request

WHAT IT DOES.  Writes REQUEST, as it is, to the trigger socket of SERVICE,
`$socket_directory/SERVICE` (core/trigger), and closes it: `postkick public qmgr W`
wakes the queue manager, `postkick public qmgr IDFA` asks it to scan incoming and
deferred mail, ignore retry times and forget dead destinations (the letters are
core/trigger's, Postfix's).  CLASS is `public` or `private`, as Postfix's command line
has it; sdmail's sockets all live in socket_directory, so it chooses nothing.

BAD INPUT.  A CLASS other than public or private, or a SERVICE that is not a plain
name (a `/`, a leading dot), is `postkick: fatal: ...` before anything is sent.  When
nothing listens there: `postkick: warning: Cannot contact class CLASS service SERVICE
- perhaps the mail system is down`.

Exit status: 0 sent; 1 not sent; 64 usage; 78 main.cf.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sdmail.core.skeleton import Fatal, ToolContext, option_parser, run_tool
from sdmail.core.trigger import trigger
from sdmail.manpages import add_help_option

PROGRAM = "postkick"
USAGE = "postkick [-c config_dir] [-v] class service request"
EXIT_FAILURE = 1
CLASSES = ("public", "private")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PostkickSettings:
    socket_directory: str


def postkick(ctx: ToolContext[PostkickSettings]) -> int:
    options = ctx.options
    if options.service_class not in CLASSES:
        raise Fatal(f"bad class: {_shown(options.service_class)}", EXIT_FAILURE)
    if not _SERVICE_NAME.fullmatch(options.service):
        raise Fatal(f"bad service name: {_shown(options.service)}", EXIT_FAILURE)
    path = Path(ctx.settings.socket_directory) / options.service
    request = options.request.encode("utf-8", "surrogateescape")
    if not trigger(str(path), request):
        ctx.logger.warning(
            "Cannot contact class %s service %s - perhaps the mail system is down",
            options.service_class,
            options.service,
        )
        return EXIT_FAILURE
    ctx.logger.debug("sent %r to %s", request, path)
    return 0


def _shown(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "send a request to a service's trigger socket")
    parser.usage = USAGE
    parser.add_argument("service_class", metavar="class")
    parser.add_argument("service")
    parser.add_argument("request")
    add_help_option(parser, __doc__)
    return run_tool(
        PROGRAM, argv, postkick, settings=PostkickSettings, parser=parser, unexpected_exit=1
    )


if __name__ == "__main__":
    sys.exit(main())
