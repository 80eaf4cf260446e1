"""Alias files (aliases(5)): the source postalias builds and the values local delivery expands.

OWNS the alias source syntax and the splitting of an alias value into targets.
A file is read in logical lines as every table source is (see `source`: `#`
comments, continuation lines that start with white space); each logical line is
`name: value`.  A name with special characters is written `"in quotes"`; an
unquoted name must not hold white space or `@`.  The value is a list separated
by commas: addresses, `|command`, `/file/name`, `:include:/file/name`; an
element in double quotes keeps its commas and white space (`"|cmd -x a,b"`), and
`\\"` / `\\\\` inside quotes stand for a quote and a backslash.  The parser keeps
names as written and values as written (continuation lines joined with one
space); postalias lower-cases names and adds Sendmail's `@` -> `@` entry
(`SENTINEL`).

Failure modes: `parse_alias_lines` / `read_alias_file` raise TableError naming
file and line for a line without `name: value`, an empty name or value, an
unquoted name with white space or `@`, or a value `split_alias_value` refuses;
`read_alias_file` raises TableError `open PATH: <strerror>` for an unreadable
file.  `split_alias_value` raises AliasError for an unbalanced quote, an empty
quoted address, or an empty `|` command or `:include:`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sdmail.core.tables.source import (
    WHITESPACE,
    logical_lines,
    read_source_lines,
    split_quoted,
)
from sdmail.core.tables.table import TableError

#: Sendmail's "the alias database is complete" entry, which postalias adds.
SENTINEL = ("@", "@")
INCLUDE_PREFIX = ":include:"


class AliasError(TableError):
    """An alias value that cannot be split into targets."""


class TargetKind(enum.Enum):
    ADDRESS = "address"
    COMMAND = "command"
    FILE = "file"
    INCLUDE = "include"


@dataclass(frozen=True)
class AliasTarget:
    """One destination of an alias.

    TEXT is the address (unquoted if the whole element was quoted), the command
    without its `|`, the file name, or the path of the `:include:` file.
    """

    kind: TargetKind
    text: str


@dataclass(frozen=True)
class AliasEntry:
    """One `name: value` of an alias file, as written, with the line it starts on."""

    name: str
    value: str
    line: int


def _split_elements(value: str) -> list[str]:
    """VALUE split at commas outside double quotes; elements stripped, empty ones dropped."""
    elements: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(value):
        char = value[index]
        if quoted and char == "\\" and index + 1 < len(value):
            current.append(value[index : index + 2])
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            elements.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    if quoted:
        raise AliasError(f"unbalanced '\"' in alias value: {value}")
    elements.append("".join(current))
    return [stripped for e in elements if (stripped := e.strip(WHITESPACE))]


def _unquote_whole(element: str) -> str:
    """ELEMENT without its quotes when the quotes enclose all of it."""
    if element.startswith('"'):
        inside, rest = split_quoted(element, "alias value", 0)
        if not rest:
            return inside
    return element


def classify_target(element: str) -> AliasTarget:
    """One element of an alias value as a target."""
    text = _unquote_whole(element)
    if not text.strip(WHITESPACE):
        raise AliasError(f"empty address in alias value: {element}")
    if text.startswith("|"):
        if not text[1:].strip(WHITESPACE):
            raise AliasError(f"empty command in alias value: {element}")
        return AliasTarget(TargetKind.COMMAND, text[1:])
    if text.startswith("/"):
        return AliasTarget(TargetKind.FILE, text)
    if text[: len(INCLUDE_PREFIX)].lower() == INCLUDE_PREFIX:
        path = text[len(INCLUDE_PREFIX) :].strip(WHITESPACE)
        if not path:
            raise AliasError(f"empty :include: file name in alias value: {element}")
        return AliasTarget(TargetKind.INCLUDE, path)
    return AliasTarget(TargetKind.ADDRESS, text)


def split_alias_value(value: str) -> list[AliasTarget]:
    """The targets of an alias VALUE, in order."""
    return [classify_target(element) for element in _split_elements(value)]


def _parse_alias(text: str, path: str | Path, line: int) -> AliasEntry:
    if text.startswith('"'):
        name, rest = split_quoted(text, path, line)
        rest = rest.lstrip(WHITESPACE)
        if not rest.startswith(":"):
            raise TableError("need name:value pair", path, line)
        value = rest[1:]
    else:
        name, colon, value = text.partition(":")
        name = name.rstrip(WHITESPACE)
        if not colon:
            raise TableError("need name:value pair", path, line)
        if any(char in WHITESPACE for char in name):
            raise TableError(f'white space in alias name "{name}": quote the name', path, line)
        if "@" in name:
            raise TableError(f'"@" in alias name "{name}": quote the name', path, line)
    value = value.strip(WHITESPACE)
    if not name or not value:
        raise TableError("need name:value pair", path, line)
    try:
        split_alias_value(value)
    except AliasError as exc:
        raise TableError(exc.message, path, line) from None
    return AliasEntry(name, value, line)


def parse_alias_lines(lines: Sequence[str], path: str | Path) -> list[AliasEntry]:
    """Every alias of an alias source, in file order (duplicates included)."""
    return [
        _parse_alias(logical.text, path, logical.line) for logical in logical_lines(lines, path)
    ]


def parse_aliases(text: str, path: str | Path = "-") -> list[AliasEntry]:
    """Every alias of an alias source given as text."""
    return parse_alias_lines(text.split("\n"), path)


def read_alias_file(path: str | Path) -> list[AliasEntry]:
    """Every alias of the alias file PATH."""
    return parse_alias_lines(read_source_lines(path), path)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_target(target: AliasTarget) -> str:
    """TARGET as written in an alias value (quoted when it must be)."""
    text = {
        TargetKind.ADDRESS: target.text,
        TargetKind.COMMAND: "|" + target.text,
        TargetKind.FILE: target.text,
        TargetKind.INCLUDE: INCLUDE_PREFIX + target.text,
    }[target.kind]
    if target.kind is TargetKind.COMMAND or any(c in text for c in ',"' + WHITESPACE):
        return _quote(text)
    return text


def format_alias(name: str, targets: Sequence[AliasTarget]) -> str:
    """One alias line (without newline) that parses back to NAME and TARGETS."""
    if not name or "\n" in name or "\0" in name:
        raise ValueError(f"alias name cannot be written: {name!r}")
    special = ':"@#' + WHITESPACE
    written = _quote(name) if any(c in name for c in special) else name
    return f"{written}: " + ", ".join(format_target(target) for target in targets)
