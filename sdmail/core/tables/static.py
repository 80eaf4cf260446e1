"""static: tables, which answer every key with the same value.

`static:value` answers VALUE; `static:{ value with spaces }` answers the text
between the braces with surrounding white space removed (the form for values
that hold spaces).  The empty `static:` answers the empty string.

Failure modes: TableError for a `{` without its closing `}`.
"""

from __future__ import annotations

from sdmail.core.tables.source import WHITESPACE
from sdmail.core.tables.table import Table, TableError


def static_value(spec: str, name: str) -> str:
    """The value of `static:NAME`: NAME, or the text inside `{ ... }`."""
    if not name.startswith("{"):
        return name
    if not name.endswith("}"):
        raise TableError(f'bad syntax: "{spec}"; need "static:{{value}}"')
    return name[1:-1].strip(WHITESPACE)


class StaticTable(Table):
    """A table whose every lookup finds the same value."""

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        self.value = static_value(spec, name)

    def lookup(self, key: str) -> str | None:
        return self.value


def open_static(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `static:VALUE`."""
    return StaticTable(spec, name)
