"""The virtual lookups: a recipient's mailbox path, owner uid and group gid, and the rules a
mailbox path must keep.

`VirtualMaps` opens `virtual_mailbox_maps`, `virtual_uid_maps` and `virtual_gid_maps` on
first use and searches each with Postfix's virtual(8) keys: `user+ext@domain`,
`user@domain`, `@domain` (pattern tables see the whole address only; an extension is
never copied into a result). `mailbox_place(base, result)` turns `virtual_mailbox_base`
and a table result into the directories below the base and the mailbox name, refusing
what would leave the base.

Failure modes: `VirtualMaps.mailbox` returns None for an unknown recipient and raises
TableError when a table cannot be opened or read; `owner` raises MapsError for an owner
that is not found or out of range, TableError likewise. `mailbox_place` raises MapsError
naming what is wrong (a relative base, a `..` component, an empty result, a NUL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sdmail.core.tables import open_table
from sdmail.core.tables.addr_find import LookupSettings, address_keys, search
from sdmail.core.tables.table import Table
from sdmail.virtual.settings import VirtualSettings

_NUMBER: Final = re.compile(r"[0-9]{1,10}")


class MapsError(Exception):
    """A table value or setting virtual delivery cannot use; the text says which."""


@dataclass(frozen=True)
class MailboxPlace:
    """Where a mailbox is: the base, the directories below it, the mailbox's own name."""

    base: str
    directories: tuple[str, ...]
    name: str
    maildir: bool

    @property
    def parent(self) -> str:
        """The directory that holds the mailbox."""
        return "/".join((self.base, *self.directories)) if self.directories else self.base

    @property
    def path(self) -> str:
        return f"{self.parent}/{self.name}" + ("/" if self.maildir else "")


def mailbox_place(base: str, result: str) -> MailboxPlace:
    """The mailbox `BASE/RESULT` (a Maildir when RESULT ends in `/`); see the module doc."""
    if not base.startswith("/"):
        raise MapsError(f"virtual_mailbox_base must be an absolute path, not {base!r}")
    if "\0" in base or ".." in base.split("/"):
        raise MapsError(f"virtual_mailbox_base {base!r} must not hold '..' or NUL")
    if "\0" in result:
        raise MapsError("mailbox path holds a NUL character")
    parts = [part for part in result.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise MapsError(f"mailbox path {result!r} leads out of virtual_mailbox_base")
    if not parts:
        raise MapsError(f"mailbox path {result!r} names no mailbox")
    return MailboxPlace(
        base=base.rstrip("/") or "/",
        directories=tuple(parts[:-1]),
        name=parts[-1],
        maildir=result.endswith("/"),
    )


class VirtualMaps:
    """The three virtual tables of one configuration; one per worker process."""

    def __init__(self, settings: VirtualSettings) -> None:
        self.settings = settings
        self._lookup = LookupSettings(
            recipient_delimiter=settings.recipient_delimiter,
            owner_request_special=settings.owner_request_special,
            double_bounce_sender=settings.double_bounce_sender,
            propagate_unmatched_extensions=(),
        )
        self._open: dict[str, list[Table]] = {}

    def close(self) -> None:
        for tables in self._open.values():
            for table in tables:
                table.close()
        self._open.clear()

    def _tables(self, parameter: str) -> list[Table]:
        tables = self._open.get(parameter)
        if tables is None:
            specs: tuple[str, ...] = getattr(self.settings, parameter)
            tables = [open_table(spec) for spec in specs]
            self._open[parameter] = tables
        return tables

    def find(self, parameter: str, address: str) -> str | None:
        """ADDRESS looked up in the tables of PARAMETER with virtual(8)'s keys."""
        keys = address_keys(address, self._lookup, _never_local)
        hit = search(self._tables(parameter), keys)
        return None if hit is None else hit[2]

    def mailbox(self, address: str) -> str | None:
        """The virtual_mailbox_maps result for ADDRESS; None: not a virtual recipient."""
        return self.find("virtual_mailbox_maps", address)

    def owner(self, address: str) -> tuple[int, int]:
        """The (uid, gid) the mailbox of ADDRESS is written as."""
        uid = self._number("virtual_uid_maps", address, self.settings.virtual_minimum_uid)
        gid = self._number("virtual_gid_maps", address, 1)
        return uid, gid

    def _number(self, parameter: str, address: str, minimum: int) -> int:
        value = self.find(parameter, address)
        what = "uid" if parameter == "virtual_uid_maps" else "gid"
        if value is None:
            raise MapsError(f"{what} not found in {parameter}")
        text = value.strip()
        number = int(text) if _NUMBER.fullmatch(text) else -1
        if number < minimum:
            limit = "virtual_minimum_uid" if what == "uid" else "1"
            raise MapsError(f"bad {what} {value!r} in {parameter} (at least {limit})")
        return number


def _never_local(_domain: str) -> bool:
    """virtual(8) never tries the bare local part: no domain is local to it."""
    return False
