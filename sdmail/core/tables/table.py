"""The contract every lookup table keeps, and the one error type tables raise.

A table answers `lookup(key)` with the value stored for KEY or None.  A *fixed*
table (hash, texthash, inline, static) answers exact keys and folds them to
lower case unless it was opened with `fold_keys=False` (postmap -f); a pattern
table (regexp, pcre) sees the key exactly as given and is asked only for whole
addresses by the search order in `addr_find`, as Postfix asks only tables with
DICT_FLAG_FIXED for partial keys.

Failure modes: every problem is a `TableError` (or a subclass) whose text names
the table, and the file and line when there is one.  Opening a table raises it
for a missing or unreadable file or a syntax error; `lookup` raises it only
when the table cannot be read any more (a corrupt file), never for a missing key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path


class TableError(Exception):
    """A table that cannot be opened, parsed or read; the text says which and where."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self._text())

    def _text(self) -> str:
        if self.path is None:
            return self.message
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}, line {self.line}: {self.message}"


class Table(ABC):
    """One open lookup table, named by its `type:name` spec."""

    #: True for tables that answer exact keys; False for pattern tables.
    fixed: bool = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abstractmethod
    def lookup(self, key: str) -> str | None:
        """The value for KEY, or None.  Raises TableError when the table cannot be read."""

    def items(self) -> Iterator[tuple[str, str]]:
        """Every (key, value), for postmap -s.  Pattern tables cannot list themselves."""
        raise TableError(f"table {self.spec}: sequence operation is not supported")

    def close(self) -> None:  # noqa: B027  (most tables hold nothing to release)
        """Release what the table holds open; lookups after close are an error."""

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"
