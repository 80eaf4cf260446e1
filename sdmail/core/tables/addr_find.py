"""The order in which an address is looked up in a list of tables (Postfix's mail_addr_find).

OWNS which keys are tried, in which order, in which tables, and what happens to
an address extension (`user+foo`) on the way.  Every key is tried in every
table of the list before the next key; the first value found wins.  The first
key, the whole address, is asked of every table; the shorter keys only of
fixed tables (hash, texthash, inline, static), because a regexp or pcre table
is meant to see whole addresses (Postfix's DICT_FLAG_FIXED).

    canonical(5), virtual(5):  user+ext@domain, user@domain,
                               user+ext, user (only when the domain is local), @domain
    transport(5):              user+ext@domain, user@domain, domain, parent domains
                               (.example.com, or example.com when transport_maps is in
                               parent_domain_matches_subdomains), *
    aliases (local(8)):        user+ext, user

Addresses are split into local part and domain, and local parts into user and
extension, by `sdmail.core.address` (`split_address`, `split_extension`), which
owns those rules: the extension starts at the first character of
`recipient_delimiter` found (a set of characters since Postfix 2.11), and is
never split off postmaster, MAILER-DAEMON or `double_bounce_sender`, nor (when
`-` is a delimiter and `owner_request_special` is on) owner-list or
list-request, nor when the user part would be empty.  Here an address without
`@` has no domain at all (None), and a local part with nothing split off has no
extension (None).  When a key without the extension matched and the table's
class is in `propagate_unmatched_extensions`, the extension is copied into each
address of the result (`joe@example.net` -> `joe+foo@example.net`).

The settings come in as a `LookupSettings`, whose fields are named after the
parameters so that `config.bind(LookupSettings, cfg)` fills it; whether a
domain is local is the caller's predicate (trivial-rewrite owns that).

Failure modes: a table that cannot be read raises TableError out of `search`
(callers defer the mail: a lookup error is never "not found").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sdmail.core.address import split_address, split_extension
from sdmail.core.tables.table import Table


@dataclass(frozen=True)
class LookupSettings:
    """The parameters that shape a lookup; field names are parameter names."""

    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str
    propagate_unmatched_extensions: tuple[str, ...]


@dataclass(frozen=True)
class Key:
    """One lookup key; FIXED_ONLY keys skip pattern tables; EXTENSION is what the key left out."""

    text: str
    fixed_only: bool
    extension: str | None = None


@dataclass(frozen=True)
class Found:
    """The first value found: the value (extension propagated when it should be) and how."""

    value: str
    key: str
    table: str
    extension: str | None


def _local_and_domain(address: str) -> tuple[str, str | None]:
    """(local part, domain); domain None when there is no `@` (`user@` has domain "")."""
    local, domain = split_address(address)
    return local, (domain if "@" in address else None)


def _user_and_extension(local_part: str, settings: LookupSettings) -> tuple[str, str | None]:
    """(user, extension) per core/address's rules; extension None when nothing was split."""
    user, extension = split_extension(
        local_part,
        settings.recipient_delimiter,
        owner_request_special=settings.owner_request_special,
        double_bounce_sender=settings.double_bounce_sender,
    )
    return user, (extension or None)


def address_keys(
    address: str, settings: LookupSettings, is_local_domain: Callable[[str], bool]
) -> list[Key]:
    """The keys canonical(5) and virtual(5) lookups try for ADDRESS, in order."""
    local, domain = _local_and_domain(address)
    user, extension = _user_and_extension(local, settings)
    keys = [Key(address, fixed_only=False)]
    if extension is not None:
        keys.append(Key(_join(user, domain), fixed_only=True, extension=extension))
    if domain is not None and is_local_domain(domain):
        keys.append(Key(local, fixed_only=True))
        if extension is not None:
            keys.append(Key(user, fixed_only=True, extension=extension))
    if domain is not None:
        keys.append(Key("@" + domain, fixed_only=True, extension=extension))
    return _unique(keys)


def transport_keys(address: str, settings: LookupSettings, match_subdomains: bool) -> list[Key]:
    """The keys transport(5) lookups try for ADDRESS, in order.

    MATCH_SUBDOMAINS: transport_maps is in parent_domain_matches_subdomains, so a
    parent domain is looked up as `example.com` rather than `.example.com`.
    """
    local, domain = _local_and_domain(address)
    user, extension = _user_and_extension(local, settings)
    keys = [Key(address, fixed_only=False)]
    if extension is not None:
        keys.append(Key(_join(user, domain), fixed_only=True))
    if domain:
        keys.append(Key(domain, fixed_only=True))
        labels = domain.split(".")
        for start in range(1, len(labels)):
            parent = ".".join(labels[start:])
            keys.append(Key(parent if match_subdomains else "." + parent, fixed_only=True))
    keys.append(Key("*", fixed_only=True))
    return _unique(keys)


def alias_keys(local_part: str, settings: LookupSettings) -> list[Key]:
    """The keys local(8) tries in alias_maps for LOCAL_PART: user+ext, then user."""
    user, extension = _user_and_extension(local_part, settings)
    keys = [Key(local_part, fixed_only=False)]
    if extension is not None:
        keys.append(Key(user, fixed_only=False, extension=extension))
    return keys


def _join(user: str, domain: str | None) -> str:
    return user if domain is None else f"{user}@{domain}"


def _unique(keys: list[Key]) -> list[Key]:
    seen: set[str] = set()
    unique = []
    for key in keys:
        if key.text not in seen:
            seen.add(key.text)
            unique.append(key)
    return unique


def propagate_extension(result: str, extension: str) -> str:
    """RESULT with EXTENSION copied into each comma-separated address's local part.

    `@domain` results are left alone: their local part is the original one.
    """
    addresses = [part.strip() for part in result.split(",")]
    extended = []
    for address in addresses:
        local, domain = _local_and_domain(address)
        if not local:
            extended.append(address)
        else:
            extended.append(_join(local + extension, domain))
    return ", ".join(extended)


def search(tables: Sequence[Table], keys: Sequence[Key]) -> tuple[Key, Table, str] | None:
    """The first (key, table, value) found: each key in every table before the next key."""
    for key in keys:
        for table in tables:
            if key.fixed_only and not table.fixed:
                continue
            value = table.lookup(key.text)
            if value is not None:
                return key, table, value
    return None


def _found(
    hit: tuple[Key, Table, str] | None, settings: LookupSettings, table_class: str
) -> Found | None:
    if hit is None:
        return None
    key, table, value = hit
    if key.extension is not None and table_class in settings.propagate_unmatched_extensions:
        value = propagate_extension(value, key.extension)
    return Found(value, key.text, table.spec, key.extension)


def find_address(
    tables: Sequence[Table],
    address: str,
    settings: LookupSettings,
    is_local_domain: Callable[[str], bool],
    table_class: str,
) -> Found | None:
    """ADDRESS looked up canonical/virtual style; TABLE_CLASS is `canonical`, `virtual`, ..."""
    return _found(
        search(tables, address_keys(address, settings, is_local_domain)), settings, table_class
    )


def find_transport(
    tables: Sequence[Table], address: str, settings: LookupSettings, match_subdomains: bool
) -> Found | None:
    """ADDRESS looked up in transport_maps order (never propagates extensions)."""
    return _found(
        search(tables, transport_keys(address, settings, match_subdomains)), settings, "transport"
    )


def find_alias(tables: Sequence[Table], local_part: str, settings: LookupSettings) -> Found | None:
    """LOCAL_PART looked up in alias_maps order; class `alias` for extension propagation."""
    return _found(search(tables, alias_keys(local_part, settings)), settings, "alias")
