"""inline: tables, whose entries are written in the table name itself.

`inline:{ key1=value1, key2=value2 }`: entries are separated by commas or white
space; an entry that holds white space is written in braces,
`{ key = value with spaces }`, where white space around `=` and inside the
braces is ignored.  Postfix's syntax, with one addition: a value that is itself
a brace group, `key = { value with spaces }` or `key={value with spaces}`, is
the text inside the braces.  A key may be quoted (`"key with spaces" = value`).
Keys are folded to lower case unless the table is opened with fold_keys=False;
a later entry replaces an earlier one with the same key, as in Postfix.

`split_brace_list` is also how `regexp:{ {rule}, {rule} }` is read, and
`read_rules` gives the rules of any table that may be written either way, in a
file or in its name (regexp, pcre, cidr).

Failure modes: TableError `bad syntax: "inline:..."; need "inline:{name=value...}"`
(with the reason) for a name without braces, unbalanced braces, an entry
without `=`, an empty key, or no entry at all.  `read_rules` raises TableError
for unbalanced braces in the name (`need "{ {rule}, {rule} }"`), or for a file
it cannot read.
"""

from __future__ import annotations

from collections.abc import Iterator

from sdmail.core.tables.source import WHITESPACE, read_source_lines, split_quoted
from sdmail.core.tables.table import Table, TableError

SEPARATORS = "," + WHITESPACE


class BraceError(ValueError):
    """Text whose braces do not balance."""


def strip_braces(text: str) -> str:
    """The text inside `{ ... }` (which must enclose all of TEXT), white space stripped."""
    text = text.strip(WHITESPACE)
    if not text.startswith("{"):
        raise BraceError("missing '{'")
    if _group_end(text, 0) != len(text) - 1:
        raise BraceError("text after the closing '}'")
    return text[1:-1].strip(WHITESPACE)


def _group_end(text: str, start: int) -> int:
    """The index of the `}` that closes the `{` at START."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise BraceError("missing '}'")


def split_brace_list(text: str) -> list[str]:
    """The elements of TEXT separated by commas or white space; braces protect both."""
    elements: list[str] = []
    index = 0
    while index < len(text):
        if text[index] in SEPARATORS:
            index += 1
            continue
        start = index
        while index < len(text) and text[index] not in SEPARATORS:
            if text[index] == "{":
                index = _group_end(text, index)
            elif text[index] == "}":
                raise BraceError("unexpected '}'")
            index += 1
        elements.append(text[start:index])
    return elements


def read_rules(spec: str, name: str) -> tuple[list[str], str]:
    """The rule lines of a table, and where they come from for error messages.

    NAME `{ {rule}, {rule} }` holds the rules itself (the spec is then where they
    come from); any other NAME is the file that holds them, one rule a line.
    """
    if not name.startswith("{"):
        return read_source_lines(name), name
    try:
        return [strip_braces(rule) for rule in split_brace_list(strip_braces(name))], spec
    except BraceError as exc:
        raise TableError(f'{exc}: "{spec}"; need "{{ {{rule}}, {{rule}} }}"') from None


def split_key_value(element: str) -> tuple[str, str]:
    """`key = value` (white space around `=` optional) as (key, value)."""
    element = element.strip(WHITESPACE)
    if element.startswith('"'):
        try:
            key, rest = split_quoted(element, "inline", 0)
        except TableError:
            raise BraceError("unbalanced '\"'") from None
    else:
        end = next((i for i, c in enumerate(element) if c in WHITESPACE + "="), len(element))
        key, rest = element[:end], element[end:]
    rest = rest.lstrip(WHITESPACE)
    if not key:
        raise BraceError("no key found; expected format: key = value")
    if not rest.startswith("="):
        raise BraceError(f"missing '=' after attribute name: \"{key}\"")
    value = rest[1:].strip(WHITESPACE)
    if value.startswith("{"):
        value = strip_braces(value)
    return key, value


def parse_inline(spec: str, name: str) -> list[tuple[str, str]]:
    """The (key, value) entries of `inline:NAME`, in order."""
    try:
        elements = split_brace_list(strip_braces(name))
        entries = [split_key_value(strip_braces(e) if e.startswith("{") else e) for e in elements]
        if not entries:
            raise BraceError("empty table")
    except BraceError as exc:
        raise TableError(f'{exc}: "{spec}"; need "inline:{{name=value...}}"') from None
    return entries


class InlineTable(Table):
    """The entries written in the table's name."""

    def __init__(self, spec: str, name: str, *, fold_keys: bool = True) -> None:
        super().__init__(spec)
        self._fold_keys = fold_keys
        self._entries = {
            (key.lower() if fold_keys else key): value for key, value in parse_inline(spec, name)
        }

    def lookup(self, key: str) -> str | None:
        return self._entries.get(key.lower() if self._fold_keys else key)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._entries.items()))


def open_inline(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `inline:{...}`."""
    return InlineTable(spec, name, fold_keys=fold_keys)
