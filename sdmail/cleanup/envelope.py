"""cleanup's address work: canonical mapping and virtual alias expansion.

Every address cleanup writes goes through here, in Postfix's order (cleanup_map11.c,
cleanup_map1n.c, cleanup_addr.c):

1. trivial-rewrite's canonical form (`user` -> `user@$myorigin`, `site!user`,
   `user%domain`, source routes), in the message's rewrite context;
2. the class table (`sender_canonical_maps` or `recipient_canonical_maps`, for
   the classes of `sender_canonical_classes` / `recipient_canonical_classes`),
   then `canonical_maps` for those of `canonical_classes`; a
   result that is `@domain` keeps the user, one without `@` gets `@$myorigin`;
3. for envelope recipients only, `virtual_alias_maps` expansion: recursive, an
   address that maps to itself ends the recursion, at most
   `virtual_alias_recursion_limit` deep, `virtual_alias_expansion_limit`
   addresses and `virtual_alias_address_length_limit` characters each.

Keys are searched in Postfix's order (core/tables/addr_find.py); the bare-user
keys are tried only for a local domain ($myorigin, $mydestination, or an address
literal of this machine).

Failure modes: a table that cannot be read, or an expansion past a limit, raises
`TempFail`: the message is refused with a 4xx (Postfix: `4.6.0 Alias expansion
error`), never accepted with a wrong recipient list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sdmail.core.config import Config, bind, split_list
from sdmail.core.dsn import Status, TempFail
from sdmail.core.records import RewriteContext
from sdmail.core.tables import open_table
from sdmail.core.tables.addr_find import LookupSettings, find_address
from sdmail.core.tables.table import Table, TableError
from sdmail.trivial_rewrite.resolve import Resolver, ResolveSettings
from sdmail.trivial_rewrite.rewrite import RewriteSettings, rewrite_address

log = logging.getLogger("sdmail.cleanup")

SENDER, RECIPIENT = "sender", "recipient"
_MAX_CANONICAL_ROUNDS = 10  # Postfix's cleanup_map11 MAX_RECURSION
ALIAS_EXPANSION_ERROR = Status("4.6.0", "Alias expansion error")
LOOKUP_ERROR = Status("4.3.0", "Error: temporary lookup table failure")

TableOpener = Callable[[str], Table]


@dataclass(frozen=True)
class MappingSettings:
    """The parameters of address mapping; field names are parameter names."""

    myorigin: str
    canonical_maps: tuple[str, ...]
    sender_canonical_maps: tuple[str, ...]
    recipient_canonical_maps: tuple[str, ...]
    canonical_classes: tuple[str, ...]
    sender_canonical_classes: tuple[str, ...]
    recipient_canonical_classes: tuple[str, ...]
    virtual_alias_maps: tuple[str, ...]
    virtual_alias_recursion_limit: int
    virtual_alias_expansion_limit: int
    virtual_alias_address_length_limit: int


class AddressMapper:
    """Canonical mapping and virtual alias expansion for one configuration."""

    def __init__(
        self,
        cfg: Config,
        *,
        resolver: Resolver | None = None,
        table_opener: TableOpener = open_table,
    ) -> None:
        self.settings = bind(MappingSettings, cfg)
        self.lookup = bind(LookupSettings, cfg)
        self.rewrite_settings = RewriteSettings.from_config(cfg)
        self.resolver = resolver or Resolver(ResolveSettings.from_config(cfg))
        self._open = table_opener
        self._tables: dict[str, list[Table]] = {}

    # -- tables -------------------------------------------------------------------------
    def _maps(self, name: str) -> list[Table]:
        if name not in self._tables:
            specs: Sequence[str] = getattr(self.settings, name)
            try:
                self._tables[name] = [self._open(spec) for spec in specs]
            except TableError as exc:
                log.warning("%s: %s", name, exc)
                raise TempFail(LOOKUP_ERROR) from None
        return self._tables[name]

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() == self.settings.myorigin.lower() or self.resolver.is_local_domain(
            domain
        )

    def _find(self, name: str, address: str, table_class: str) -> list[str] | None:
        tables = self._maps(name)
        if not tables:
            return None
        try:
            found = find_address(tables, address, self.lookup, self.is_local_domain, table_class)
        except TableError as exc:
            log.warning("%s lookup of %s: %s", name, address, exc)
            raise TempFail(LOOKUP_ERROR) from None
        if found is None:
            return None
        return [self._complete(result, address) for result in split_list(found.value)]

    def _complete(self, result: str, looked_up: str) -> str:
        """A table result as an address: `@domain` keeps the user; `user` gets $myorigin."""
        if result.startswith("@"):
            local = looked_up.rpartition("@")[0] or looked_up
            return local + result
        return self.canonical_form(result, RewriteContext.LOCAL)

    # -- the steps ----------------------------------------------------------------------
    def canonical_form(self, address: str, context: RewriteContext) -> str:
        """trivial-rewrite's standard form of ADDRESS in CONTEXT."""
        if not address:
            return address
        return rewrite_address(address, context, self.rewrite_settings)

    def canonical(self, address: str, kind: str, where: str, context: RewriteContext) -> str:
        """ADDRESS, a SENDER or RECIPIENT in the envelope or header (WHERE), after mapping."""
        address = self.canonical_form(address, context)
        if not address:
            return address
        address_class = f"{where}_{kind}"
        if address_class in getattr(self.settings, f"{kind}_canonical_classes"):
            address = self._map11(f"{kind}_canonical_maps", address)
        if address_class in self.settings.canonical_classes:
            address = self._map11("canonical_maps", address)
        return address

    def _map11(self, name: str, address: str) -> str:
        """One address in, one out: repeated lookups until the result stays the same."""
        for _ in range(_MAX_CANONICAL_ROUNDS):
            found = self._find(name, address, "canonical")
            if not found:
                return address
            if len(found) > 1:
                log.warning("multi-valued %s entry for %s", name, address)
            if found[0].lower() == address.lower():
                return address
            address = found[0]
        log.warning("unreasonable %s map nesting for %s", name, address)
        return address

    def expand_virtual(self, address: str) -> list[str]:
        """The addresses ADDRESS becomes through virtual_alias_maps (itself if none)."""
        if not self._maps("virtual_alias_maps"):
            return [address]
        out: list[str] = []
        seen: set[str] = set()
        self._expand(address, 0, out, seen)
        return out

    def _expand(self, address: str, depth: int, out: list[str], seen: set[str]) -> None:
        limits = self.settings
        if depth > limits.virtual_alias_recursion_limit:
            log.warning("unreasonable virtual_alias_maps map nesting for %s", address)
            raise TempFail(ALIAS_EXPANSION_ERROR)
        found = self._find("virtual_alias_maps", address, "virtual")
        if found is None:
            self._emit(address, out, seen)
            return
        for target in found:
            if len(target) > limits.virtual_alias_address_length_limit:
                log.warning("virtual_alias_maps result too long for %s", address)
                raise TempFail(ALIAS_EXPANSION_ERROR)
            if target.lower() == address.lower():
                self._emit(target, out, seen)
            else:
                self._expand(target, depth + 1, out, seen)
            if len(out) > limits.virtual_alias_expansion_limit:
                log.warning("unreasonable virtual_alias_maps map expansion size for %s", address)
                raise TempFail(ALIAS_EXPANSION_ERROR)

    @staticmethod
    def _emit(address: str, out: list[str], seen: set[str]) -> None:
        key = address.lower()
        if key not in seen:
            seen.add(key)
            out.append(address)
