"""postmap: build, query, list and edit lookup tables, with Postfix's options and output.

USAGE
    postmap [-fiprsvw] [-c DIR] [-o name=value] [type:]file...      build (or -i: add from stdin)
    postmap [-f] [-c DIR] -q KEY [type:]table...                   print the first value found
    postmap [-f] [-c DIR] -q - [type:]table...  <keys              print `key<TAB>value` lines
    postmap [-f] [-c DIR] -d KEY|- [type:]table...                 delete KEY (or stdin's keys)
    postmap [-c DIR] -s [type:]table...                            print every `key<TAB>value`

A table without a type is `$default_database_type` (hash): `postmap /etc/x`
reads /etc/x and writes /etc/x.db.  Keys are folded to lower case unless -f.
A key seen twice gives `postmap: warning: FILE, line N: duplicate entry: "key"`
and the first value is kept (-r: the last, silently; -w: the first, silently).
-q does one literal lookup, not the user@domain/@domain search sequence.  -p
gives a new table mode 0644 instead of the source file's group/other read
bits; -o alone (no `name=value` after it) is Postfix's "keep root privileges":
run as root, postmap otherwise gives the new file to the source file's owner.

OWNS nothing but the command line: the table formats, the source syntax and
the atomic writes belong to `sdmail.core.tables`.  postalias is this program
with the alias syntax (`sdmail.postalias` passes its own `Tool`).

Exit status: 0 done (for -q/-d: found), 1 not found or a fatal error, printed
as one line `postmap: fatal: ...` (`open /etc/x: No such file or directory`, a
syntax error with file and line: the old table is left in place), 64 usage.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdmail.core.config import Config, ConfigError, load_config
from sdmail.core.tables import BUILDABLE_TYPES, TABLE_TYPES, open_table, split_spec
from sdmail.core.tables.hash import db_path, read_entries, update_lock, write_table
from sdmail.core.tables.source import (
    Duplicates,
    Entry,
    decode_lines,
    merge_entries,
    parse_table_lines,
    read_table_file,
)
from sdmail.core.tables.table import Table, TableError

EX_USAGE = 64
NEW_TABLE_MODE = 0o644
STDIN_NAME = "stdin"


class Fatal(Exception):
    """Ends the program with `PROGRAM: fatal: TEXT` and exit status 1."""


class UsageError(Exception):
    """A command line the program does not understand."""


@dataclass(frozen=True)
class Tool:
    """What differs between postmap and postalias."""

    program: str
    read_file: Callable[[Path], list[Entry]]
    parse_lines: Callable[[Sequence[str], str], list[Entry]]
    key_suffix: str  # postalias prints `key:<TAB>value`
    extra_entries: tuple[tuple[str, str], ...] = ()  # postalias's `@` -> `@`

    @property
    def usage(self) -> str:
        return (
            f"usage: {self.program} [-Nfinoprsvw] [-c config_dir] [-d key] [-q key] "
            "[map_type:]file..."
        )


POSTMAP = Tool(
    program="postmap",
    read_file=read_table_file,
    parse_lines=parse_table_lines,
    key_suffix="",
)


@dataclass
class Options:
    config_dir: str | None = None
    overrides: list[str] = field(default_factory=list)
    query: str | None = None
    delete: str | None = None
    flags: set[str] = field(default_factory=set)
    tables: list[str] = field(default_factory=list)


def parse_arguments(argv: Sequence[str], usage: str) -> Options:
    """Postfix's getopt string `Nc:d:finopq:rsvw`, except that `-o name=value` is an override."""
    options = Options()
    index = 0
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        arg = argv[index]
        index += 1
        if arg == "--":
            break
        position = 1
        while position < len(arg):
            letter = arg[position]
            position += 1
            if letter in "cdq":
                value = arg[position:]
                if not value:
                    if index >= len(argv):
                        raise UsageError(f"option requires an argument -- '{letter}'\n{usage}")
                    value = argv[index]
                    index += 1
                if letter == "c":
                    options.config_dir = value
                elif letter == "d":
                    options.delete = value
                else:
                    options.query = value
                break
            if letter == "o":
                value = arg[position:]
                if not value and index < len(argv) and "=" in argv[index]:
                    value = argv[index]
                    index += 1
                if value:
                    options.overrides.append(value)
                    break
                options.flags.add("o")
            elif letter in "Nfinprsvw":
                options.flags.add(letter)
            else:
                raise UsageError(f"invalid option -- '{letter}'\n{usage}")
    options.tables = list(argv[index:])
    if not options.tables:
        raise UsageError(usage)
    if sum(x is not None for x in (options.query, options.delete)) + ("s" in options.flags) > 1:
        raise UsageError(f"specify only one of -q, -d and -s\n{usage}")
    return options


class Runner:
    """One run of postmap or postalias over the tables named on the command line."""

    def __init__(self, tool: Tool, options: Options, cfg: Config) -> None:
        self.tool = tool
        self.options = options
        self.cfg = cfg
        self.fold_keys = "f" not in options.flags
        if "r" in options.flags:
            self.duplicates = Duplicates.REPLACE
        elif "w" in options.flags:
            self.duplicates = Duplicates.IGNORE
        else:
            self.duplicates = Duplicates.WARN

    def warn(self, text: str) -> None:
        print(f"{self.tool.program}: warning: {text}", file=sys.stderr)

    def spec(self, argument: str) -> tuple[str, str]:
        """(type, name) of a command-line table, the default type filled in."""
        if ":" in argument:
            table_type, name = split_spec(argument)
        else:
            table_type, name = self.cfg.get("default_database_type"), argument
        if table_type not in TABLE_TYPES:
            raise Fatal(f"unsupported dictionary type: {table_type}")
        return table_type, name

    def run(self) -> int:
        if self.options.query is not None:
            return self.query(self.options.query)
        if self.options.delete is not None:
            return self.delete(self.options.delete)
        if "s" in self.options.flags:
            return self.dump()
        for argument in self.options.tables:
            self.build(*self.spec(argument), incremental="i" in self.options.flags)
        return 0

    # -- queries -------------------------------------------------------------------
    def _open_all(self) -> list[Table]:
        tables = []
        for argument in self.options.tables:
            table_type, name = self.spec(argument)
            tables.append(open_table(f"{table_type}:{name}", fold_keys=self.fold_keys))
        return tables

    def query(self, key: str) -> int:
        tables = self._open_all()
        keys = stdin_lines() if key == "-" else [key]
        found = False
        for each in keys:
            for table in tables:
                value = table.lookup(each)
                if value is not None:
                    found = True
                    if key == "-":
                        print(f"{each}{self.tool.key_suffix}\t{value}")
                    else:
                        print(value)
                    break
        return 0 if found else 1

    def dump(self) -> int:
        for table in self._open_all():
            for key, value in table.items():
                print(f"{key}{self.tool.key_suffix}\t{value}")
        return 0

    # -- changes -------------------------------------------------------------------
    def _buildable(self, table_type: str, name: str) -> None:
        if table_type not in BUILDABLE_TYPES:
            raise Fatal(
                f"{table_type}:{name}: {self.tool.program} cannot update a {table_type} table "
                "(it is read as written)"
            )

    def build(self, table_type: str, name: str, *, incremental: bool) -> None:
        self._buildable(table_type, name)
        if not incremental:
            entries = self.tool.read_file(Path(name))
            table = merge_entries(
                entries,
                name,
                fold_keys=self.fold_keys,
                duplicates=self.duplicates,
                warn=self.warn,
            )
            self._add_extra(table)
            mode, owner = self.new_file_attributes(name)
            write_table(name, table.items(), mode=mode, owner=owner)
            return
        entries = self.tool.parse_lines(
            decode_lines(sys.stdin.buffer.read(), STDIN_NAME), STDIN_NAME
        )
        with update_lock(name):
            existing = read_entries(name)
            table = merge_entries(
                entries,
                STDIN_NAME,
                fold_keys=self.fold_keys,
                duplicates=self.duplicates,
                warn=self.warn,
                existing=existing,
            )
            self._add_extra(table)
            mode, owner = self.updated_file_attributes(name)
            write_table(name, table.items(), mode=mode, owner=owner)

    def _add_extra(self, table: dict[str, str]) -> None:
        for key, value in self.tool.extra_entries:
            table.setdefault(key, value)

    def delete(self, key: str) -> int:
        keys = stdin_lines() if key == "-" else [key]
        if self.fold_keys:
            keys = [each.lower() for each in keys]
        found = False
        for argument in self.options.tables:
            table_type, name = self.spec(argument)
            self._buildable(table_type, name)
            if not db_path(name).exists():
                raise Fatal(f"open database {db_path(name)}: No such file or directory")
            with update_lock(name):
                table = read_entries(name)
                removed = [each for each in keys if table.pop(each, None) is not None]
                if removed:
                    found = True
                    mode, owner = self.updated_file_attributes(name)
                    write_table(name, table.items(), mode=mode, owner=owner)
        return 0 if found else 1

    # -- file attributes -------------------------------------------------------------
    def new_file_attributes(self, name: str) -> tuple[int, tuple[int, int] | None]:
        """Mode and owner of a table built from source file NAME."""
        source = os.stat(name)
        mode = NEW_TABLE_MODE if "p" in self.options.flags else 0o600 | (source.st_mode & 0o044)
        return mode, self._owner(source)

    def updated_file_attributes(self, name: str) -> tuple[int, tuple[int, int] | None]:
        """Mode and owner of a table rewritten by -i or -d: those of the table it replaces."""
        try:
            current = os.stat(db_path(name))
        except FileNotFoundError:
            try:
                return self.new_file_attributes(name)
            except FileNotFoundError:
                return NEW_TABLE_MODE, None
        return stat.S_IMODE(current.st_mode), self._owner(current)

    def _owner(self, reference: os.stat_result) -> tuple[int, int] | None:
        # As root, a table belongs to its source's owner (Postfix drops privileges to
        # that owner; local delivery runs alias commands as the alias table's owner).
        if os.geteuid() != 0 or "o" in self.options.flags:
            return None
        return reference.st_uid, reference.st_gid


def stdin_lines() -> Iterable[str]:
    """Keys from standard input, one a line, without the newline."""
    for raw in sys.stdin.buffer:
        yield raw.rstrip(b"\n").decode("utf-8", errors="surrogateescape")


def run(tool: Tool, argv: Sequence[str]) -> int:
    """Run TOOL with command-line ARGV; every failure becomes a message and a status."""
    logging.basicConfig(format=f"{tool.program}: warning: %(message)s", level=logging.WARNING)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Keys read from stdin that are not UTF-8 are printed back byte for byte.
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        options = parse_arguments(argv, tool.usage)
        cfg = load_config(options.config_dir, options.overrides, strict=False)
        return Runner(tool, options, cfg).run()
    except UsageError as exc:
        print(f"{tool.program}: fatal: {exc}", file=sys.stderr)
        return EX_USAGE
    except (ConfigError, TableError, Fatal) as exc:
        print(f"{tool.program}: fatal: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"{tool.program}: fatal: open {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{tool.program}: fatal: {where.strip() or 'I/O'}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(POSTMAP, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
