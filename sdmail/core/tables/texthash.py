"""texthash: tables, a table source file read directly, without postmap.

OWNS nothing on disk: the file is read once when the table is opened, in
postmap's source syntax (see `source`), and kept in memory.  As in Postfix there
is no change detection: a process sees edits when it opens the table again.
Duplicate keys keep the first value, with a logged warning.

Failure modes: TableError `open PATH: <strerror>` for a file that cannot be
read, or naming file and line for a syntax error; lookups never fail.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sdmail.core.tables.source import Duplicates, merge_entries, read_table_file
from sdmail.core.tables.table import Table

log = logging.getLogger(__name__)


class TextHashTable(Table):
    """The entries of a table source file, in memory."""

    def __init__(self, spec: str, path: str, *, fold_keys: bool = True) -> None:
        super().__init__(spec)
        self._fold_keys = fold_keys
        self._entries = merge_entries(
            read_table_file(path),
            path,
            fold_keys=fold_keys,
            duplicates=Duplicates.WARN,
            warn=log.warning,
        )

    def lookup(self, key: str) -> str | None:
        return self._entries.get(key.lower() if self._fold_keys else key)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._entries.items()))


def open_texthash(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `texthash:PATH`."""
    return TextHashTable(spec, name, fold_keys=fold_keys)
