"""The service name of a program that serves transports of several names: `-n NAME` on its
command line, as Postfix's master passes each daemon the master.cf service name.

The pipe agent serves every admin-defined pipe transport (`sdmail-pipe@NAME.service` runs
`python3 -m sdmail.pipe -n NAME`), and the error agent serves both `error` and `retry`; the
name says which transport a process is, which socket systemd passes it
(`FileDescriptorName=NAME`), and which per-transport files and parameters apply. Because a
name becomes part of file names (`$socket_directory/NAME`, a definition file), it is
limited to letters, digits, `_`, `.` and `-`, starting with a letter or digit.

Failure modes: `take_service_name` raises ServiceNameError (a usage error, exit 64) for a
missing, repeated or malformed name; it never changes the other arguments.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Final

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class ServiceNameError(Exception):
    """The command line names no usable service name; the text says why."""


def is_service_name(text: str) -> bool:
    """True when TEXT may name a service (see the module docstring)."""
    return _NAME.fullmatch(text) is not None


def take_service_name(argv: Sequence[str] | None, default: str | None) -> tuple[str, list[str]]:
    """The `-n NAME` (or `-nNAME`) of ARGV (sys.argv[1:] when None), and the arguments
    without it; DEFAULT when there is none (None: the name is required)."""
    args = list(sys.argv[1:] if argv is None else argv)
    found: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "-n":
            if index + 1 == len(args):
                raise ServiceNameError("option -n requires a service name")
            found.append(args[index + 1])
            index += 2
            continue
        if arg.startswith("-n") and not arg.startswith("--"):
            found.append(arg[2:])
        else:
            rest.append(arg)
        index += 1
    if len(found) > 1:
        raise ServiceNameError("option -n given more than once")
    if not found:
        if default is None:
            raise ServiceNameError("a service name is required: -n NAME")
        return default, rest
    if not is_service_name(found[0]):
        raise ServiceNameError(
            f"bad service name {found[0]!r}: letters, digits, '_', '.' and '-' only, "
            "starting with a letter or digit"
        )
    return found[0], rest
