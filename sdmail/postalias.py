"""postalias and newaliases: build and query alias tables (aliases(5)).

USAGE
    postalias [-fiprsvw] [-c DIR] [-o name=value] [type:]file...   build (or -i: add from stdin)
    postalias [-f] [-c DIR] -q KEY|- [type:]table...               query (`key:<TAB>value` for -)
    postalias [-f] [-c DIR] -d KEY|- [type:]table...               delete
    postalias [-c DIR] -s [type:]table...                          print every `key:<TAB>value`
    newaliases [-v] [-c DIR] [-o name=value]                       build every `$alias_database`

postalias is postmap (see `sdmail.postmap` for the options, the output and the
exit status) with the alias source syntax, `name: value` (see
`sdmail.core.tables.aliases`), and Sendmail's `@` -> `@` entry added to every
table it writes.  A syntax error names the file and line, exits 1 and leaves
the old `.db` in place, so local delivery keeps the aliases it had.

newaliases builds each table of `alias_database` (default hash:/etc/aliases), as
Postfix's `sendmail -bi` runs postalias on them; its messages say `postalias:`
as Postfix's do.

OWNS nothing but the command lines.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from sdmail.core.config import ConfigError, load_config
from sdmail.core.tables.aliases import SENTINEL, AliasEntry, parse_alias_lines, read_alias_file
from sdmail.core.tables.source import Entry
from sdmail.postmap import EX_USAGE, Tool, run

PROGRAM = "postalias"


def _entries(aliases: list[AliasEntry]) -> list[Entry]:
    return [Entry(alias.name, alias.value, alias.line) for alias in aliases]


def read_alias_entries(path: Path) -> list[Entry]:
    """The aliases of file PATH as table entries."""
    return _entries(read_alias_file(path))


def parse_alias_entries(lines: Sequence[str], path: str) -> list[Entry]:
    """The aliases of LINES as table entries."""
    return _entries(parse_alias_lines(lines, path))


POSTALIAS = Tool(
    program=PROGRAM,
    read_file=read_alias_entries,
    parse_lines=parse_alias_entries,
    key_suffix=":",
    extra_entries=(SENTINEL,),
)


def main(argv: Sequence[str] | None = None) -> int:
    return run(POSTALIAS, sys.argv[1:] if argv is None else argv)


def newaliases_main(argv: Sequence[str] | None = None) -> int:
    """newaliases: postalias on every table of $alias_database."""
    args = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    config_dir: str | None = None
    overrides: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "-v":
            passed.append(arg)
        elif arg in ("-c", "-o") and args:
            value = args.pop(0)
            passed += [arg, value]
            if arg == "-c":
                config_dir = value
            else:
                overrides.append(value)
        else:
            print(
                "newaliases: fatal: usage: newaliases [-v] [-c config_dir] [-o name=value]",
                file=sys.stderr,
            )
            return EX_USAGE
    try:
        tables = load_config(config_dir, overrides, strict=False).get_list("alias_database")
    except ConfigError as exc:
        print(f"{PROGRAM}: fatal: {exc}", file=sys.stderr)
        return 1
    if not tables:
        return 0
    return run(POSTALIAS, [*passed, *tables])


if __name__ == "__main__":
    sys.exit(main())
