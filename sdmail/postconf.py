"""postconf: show and edit main.cf, with Postfix's flags and output.

USAGE
    postconf [-c DIR] [-dhnxH] [NAME...]
    postconf [-c DIR] -e NAME=VALUE...     (also: postconf NAME=VALUE...)
    postconf [-c DIR] -X NAME...           remove NAME from main.cf
    postconf [-c DIR] -# NAME...           comment NAME out in main.cf
    postconf -m                            the lookup table types

OUTPUT is `name = value` per line (`name =` when the value is empty), sorted by
name: every parameter, or with -n only those main.cf sets, or with -d the
built-in defaults; -h prints values alone, -H names alone, -x expands `$name`.
An unknown NAME gives `postconf: warning: NAME: unknown parameter` and exit 0.

OWNS editing main.cf.  An edit keeps every other line, comment and blank line as
it was; a parameter's whole logical line (with its continuation lines) is
replaced by `name = value`, later duplicates are removed, new names are
appended.  The new file is written beside the old one, fsynced and renamed over
it while an exclusive lock on main.cf keeps two editors from losing each
other's change; its owner and mode are kept.

Errors are one line `postconf: fatal: ...` on stderr and exit status 1, as
Postfix's.  Values are not checked when shown or edited (so a broken value can
be seen and fixed); the daemons check them when they load the file.
"""

from __future__ import annotations

import fcntl
import getopt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sdmail.core.config import (
    MAIN_CF,
    Config,
    ConfigError,
    config_directory,
    load_config,
    logical_lines,
    parse_override,
    read_main_cf,
)
from sdmail.core.params import PARAMS

PROGRAM = "postconf"
EX_USAGE = 64
USAGE = (
    "usage: postconf [-c config_dir] [-dhHnx] [name...]\n"
    "       postconf [-c config_dir] -e name=value...\n"
    "       postconf [-c config_dir] -X name...\n"
    "       postconf [-c config_dir] -# name...\n"
    "       postconf -m"
)


class Fatal(Exception):
    """Ends postconf with `postconf: fatal: TEXT` and exit status 1."""


def warn(text: str) -> None:
    print(f"{PROGRAM}: warning: {text}", file=sys.stderr)


def format_entry(name: str, value: str, *, value_only: bool, name_only: bool) -> str:
    if name_only:
        return name
    if value_only:
        return value
    return f"{name} = {value}" if value else f"{name} ="


# --------------------------------------------------------------------------------------
# Showing
# --------------------------------------------------------------------------------------
def shown_value(cfg: Config, name: str, *, defaults: bool, expand: bool) -> str | None:
    if defaults:
        text = cfg.default(name)
        return cfg.expand(text) if expand and text is not None else text
    if not cfg.known(name):
        return None
    return cfg.get(name) if expand else cfg.raw(name)


def names_to_show(cfg: Config, *, defaults: bool, explicit: bool) -> list[str]:
    if explicit:
        return sorted(cfg.explicit())
    if defaults:
        return sorted(PARAMS)
    return sorted(set(PARAMS) | set(cfg.explicit()))


def show(cfg: Config, names: Sequence[str], flags: set[str]) -> None:
    defaults, explicit, expand = "d" in flags, "n" in flags, "x" in flags
    chosen = list(names) or names_to_show(cfg, defaults=defaults, explicit=explicit)
    out = []
    for name in chosen:
        if names and name not in PARAMS and name not in cfg.explicit():
            warn(f"{name}: unknown parameter")
            continue
        if explicit and name not in cfg.explicit():
            continue
        value = shown_value(cfg, name, defaults=defaults, expand=expand)
        if value is None:
            warn(f"{name}: unknown parameter")
            continue
        out.append(format_entry(name, value, value_only="h" in flags, name_only="H" in flags))
    if out:
        sys.stdout.write("\n".join(out) + "\n")


def warn_unused(cfg: Config) -> None:
    """Postfix's hint for a main.cf name nothing reads (a typo, most often)."""
    referenced = " ".join(s.value for s in cfg.explicit().values())
    for name, setting in sorted(cfg.explicit().items()):
        if name not in PARAMS and f"${name}" not in referenced and f"{{{name}" not in referenced:
            warn(f"{setting.path}: unused parameter: {name}={setting.value}")


# --------------------------------------------------------------------------------------
# Editing
# --------------------------------------------------------------------------------------
def edited_text(
    text: str, path: Path, assign: dict[str, str], remove: set[str], comment: set[str]
) -> str:
    """main.cf's TEXT with ASSIGN set, REMOVE deleted and COMMENT commented out."""
    lines = text.splitlines(keepends=True)
    replaced: dict[int, list[str]] = {}
    seen: set[str] = set()
    for entry in logical_lines(text, path):
        span = lines[entry.first : entry.end]
        if entry.name in assign:
            new = [] if entry.name in seen else [_assignment(entry.name, assign[entry.name])]
            seen.add(entry.name)
            replaced[entry.first] = new
        elif entry.name in remove:
            replaced[entry.first] = []
        elif entry.name in comment:
            replaced[entry.first] = [
                line if line.lstrip().startswith("#") else "#" + line for line in span
            ]
        else:
            continue
        for index in range(entry.first + 1, entry.end):
            replaced[index] = []
    out: list[str] = []
    for index, line in enumerate(lines):
        out.extend(replaced.get(index, [line]))
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.extend(_assignment(name, value) for name, value in assign.items() if name not in seen)
    return "".join(out)


def _assignment(name: str, value: str) -> str:
    return f"{name} = {value}\n" if value else f"{name} =\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace PATH by TEXT: temporary file beside it, fsync, rename, fsync the directory."""
    data = text.encode("utf-8", "surrogateescape")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        if old is not None:
            os.fchmod(fd, old.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.fchown(fd, old.st_uid, old.st_gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def edit_main_cf(
    path: Path,
    assign: dict[str, str] | None = None,
    remove: set[str] | None = None,
    comment: set[str] | None = None,
) -> None:
    """Apply edits to main.cf at PATH under an exclusive lock; ConfigError on bad syntax."""
    with open(path, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = read_main_cf(path)
        new = edited_text(text, path, assign or {}, remove or set(), comment or set())
        if new != text:
            write_atomically(path, new)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def table_types() -> list[str]:
    from sdmail.core import tables  # noqa: PLC0415  (only -m needs the table registry)

    return sorted(tables.TABLE_TYPES)


def run(argv: Sequence[str]) -> int:
    try:
        options, args = getopt.getopt(list(argv), "c:dehHmno:xX#v")
    except getopt.GetoptError as exc:
        print(f"{PROGRAM}: {exc}\n{USAGE}", file=sys.stderr)
        return EX_USAGE
    flags: set[str] = set()
    config_dir: str | None = None
    overrides: list[str] = []
    for option, value in options:
        if option == "-c":
            config_dir = value
        elif option == "-o":
            overrides.append(value)
        else:
            flags.add(option[1])
    if "m" in flags:
        print("\n".join(table_types()))
        return 0
    directory = config_directory(config_dir)
    edits = flags & {"e", "X", "#"}
    if not edits and args and all("=" in arg for arg in args):
        edits = {"e"}
    if len(edits) > 1:
        raise Fatal("specify only one of -e, -X and -#")
    if edits:
        return run_edit(directory / MAIN_CF, edits.pop(), args)
    cfg = load_config(directory, overrides, strict=False)
    if "d" not in flags:
        for problem in cfg.warnings:
            warn(problem if problem.startswith("/") else f"{directory / MAIN_CF}: {problem}")
    if "n" in flags or not args:
        warn_unused(cfg)
    show(cfg, args, flags)
    return 0


def run_edit(path: Path, mode: str, args: Sequence[str]) -> int:
    if not args:
        raise Fatal(f"-{mode} needs at least one parameter")
    if mode == "e":
        assign: dict[str, str] = {}
        for arg in args:
            setting = parse_override(arg)
            assign[setting.name] = setting.value
        edit_main_cf(path, assign=assign)
    elif mode == "X":
        edit_main_cf(path, remove=set(args))
    else:
        edit_main_cf(path, comment=set(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (ConfigError, Fatal) as exc:
        print(f"{PROGRAM}: fatal: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{PROGRAM}: fatal: open{where}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
