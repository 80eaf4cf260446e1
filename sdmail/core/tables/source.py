"""The text form of lookup tables: what postmap reads and what texthash: serves.

OWNS Postfix's table source syntax.  A file is split into logical lines: blank
lines and lines whose first non-white character is `#` are skipped (a `#`
later in a line is data); a line that starts with white space continues the
previous logical line (its text is joined with one space).  Each logical line
is `key whitespace value`; the key may be written `"with spaces"`, where `\\"`
and `\\\\` stand for a quote and a backslash (Postfix 3.2).  Surrounding white
space is stripped from key and value; the value is otherwise kept as written.
"White space" is ASCII white space, as in Postfix's C code, never Unicode's.

The logical-line reader is shared with the alias and pattern table parsers.
Files are read as UTF-8 line by line; a comment line that is not UTF-8 (an old
Latin-1 aliases file) is skipped like any comment.

Failure modes: `read_source_lines` raises TableError `open PATH: <strerror>`
for a file it cannot read; every parser raises TableError naming file and line
for a continuation line with nothing to continue, a NUL character, bytes that
are not UTF-8 outside a comment, a key without a value, an empty or unclosed
quoted key.  `merge_entries` never raises; it reports duplicates through WARN.
`format_entry` raises ValueError for a key or value the syntax cannot hold.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdmail.core.tables.table import TableError

WHITESPACE = " \t\n\v\f\r"
_FIRST_WHITESPACE = re.compile(r"[ \t\n\v\f\r]")


@dataclass(frozen=True)
class LogicalLine:
    """One logical line: the number of its first physical line, and its joined text."""

    line: int
    text: str


@dataclass(frozen=True)
class Entry:
    """One `key value` of a table source, with the line it starts on."""

    key: str
    value: str
    line: int


class Duplicates(enum.Enum):
    """What a build does with a key seen before: postmap's default, -r and -w."""

    WARN = "warn"  # keep the first, warn
    REPLACE = "replace"  # -r: keep the last, silently
    IGNORE = "ignore"  # -w: keep the first, silently


def read_source_lines(path: str | Path) -> list[str]:
    """The physical lines of PATH, decoded; see the module text for comments that are not UTF-8."""
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as exc:
        raise TableError(f"open {path}: {exc.strerror}") from exc
    return decode_lines(data, path)


def decode_lines(data: bytes, path: str | Path) -> list[str]:
    """DATA split at newlines and decoded as UTF-8; undecodable comments become `#`."""
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            stripped = raw.strip(WHITESPACE.encode())
            if stripped.startswith(b"#"):
                lines.append("#")
            else:
                raise TableError("text is not valid UTF-8", path, number) from None
    return lines


def is_skipped(line: str) -> bool:
    """True for blank and comment lines."""
    stripped = line.strip(WHITESPACE)
    return not stripped or stripped.startswith("#")


def logical_lines(lines: Sequence[str], path: str | Path) -> Iterator[LogicalLine]:
    """The logical lines of LINES (physical lines without their newlines)."""
    first = 0
    parts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if is_skipped(line):
            continue
        if "\0" in line:
            raise TableError("NUL character in text", path, number)
        if line[0] in WHITESPACE:
            if not parts:
                raise TableError("logical line must not start with whitespace", path, number)
            parts.append(line.strip(WHITESPACE))
            continue
        if parts:
            yield LogicalLine(first, " ".join(parts))
        first, parts = number, [line.strip(WHITESPACE)]
    if parts:
        yield LogicalLine(first, " ".join(parts))


def split_quoted(text: str, path: str | Path, line: int) -> tuple[str, str]:
    """TEXT starts with `"`: the unquoted string and the text after the closing quote."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in '"\\':
            chars.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(chars), text[index + 1 :]
        chars.append(char)
        index += 1
    raise TableError("missing closing '\"' in quoted text", path, line)


def parse_entry(logical: LogicalLine, path: str | Path) -> Entry:
    """One `key whitespace value` logical line."""
    text = logical.text
    if text.startswith('"'):
        key, rest = split_quoted(text, path, logical.line)
        if not key:
            raise TableError("empty quoted key", path, logical.line)
        if rest and rest[0] not in WHITESPACE:
            raise TableError("quoted key must be followed by whitespace", path, logical.line)
    else:
        space = _FIRST_WHITESPACE.search(text)
        end = len(text) if space is None else space.start()
        key, rest = text[:end], text[end:]
    value = rest.strip(WHITESPACE)
    if not value:
        raise TableError("expected format: key whitespace value", path, logical.line)
    return Entry(key, value, logical.line)


def parse_table_lines(lines: Sequence[str], path: str | Path) -> list[Entry]:
    """Every entry of a table source, in file order (duplicates included)."""
    return [parse_entry(logical, path) for logical in logical_lines(lines, path)]


def parse_table_text(text: str, path: str | Path = "-") -> list[Entry]:
    """Every entry of a table source given as text."""
    return parse_table_lines(text.split("\n"), path)


def read_table_file(path: str | Path) -> list[Entry]:
    """Every entry of the table source file PATH."""
    return parse_table_lines(read_source_lines(path), path)


def merge_entries(
    entries: Iterable[Entry],
    path: str | Path,
    *,
    fold_keys: bool,
    duplicates: Duplicates,
    warn: Callable[[str], None],
    existing: dict[str, str] | None = None,
) -> dict[str, str]:
    """Keys to values as a build stores them: keys folded, duplicates per DUPLICATES.

    EXISTING (postmap -i) holds what the table had; its keys count as seen first.
    WARN receives `PATH, line N: duplicate entry: "key"`.
    """
    table = {} if existing is None else existing
    for entry in entries:
        key = entry.key.lower() if fold_keys else entry.key
        if key in table and duplicates is not Duplicates.REPLACE:
            if duplicates is Duplicates.WARN:
                warn(f'{path}, line {entry.line}: duplicate entry: "{key}"')
            continue
        table[key] = entry.value
    return table


def needs_quotes(key: str) -> bool:
    """True when KEY cannot be written bare as the first word of a line."""
    return key.startswith(('"', "#")) or any(char in WHITESPACE for char in key)


def format_key(key: str) -> str:
    """KEY as it is written in a source file, quoted when it must be."""
    if not key or "\n" in key or "\0" in key:
        raise ValueError(f"key cannot be written in a table source: {key!r}")
    if not needs_quotes(key):
        return key
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_entry(key: str, value: str) -> str:
    """One source line (without newline) that parses back to KEY and VALUE."""
    if value != value.strip(WHITESPACE) or not value or "\n" in value or "\0" in value:
        raise ValueError(f"value cannot be written in a table source: {value!r}")
    return f"{format_key(key)} {value}"
