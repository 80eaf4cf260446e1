"""Lists of strings, domains, networks and hosts, matched as Postfix's match_list does.

A list parameter such as mydestination, relay_domains or mynetworks holds items
separated by commas and white space.  An item is a literal pattern, a `/file/name`
whose lines hold more items (`#` lines are comments; files may name files), or a
`type:table` that is looked up.  `!pattern` negates: the first pattern that matches
decides, and a negated one decides "no".  Nothing matching means no match.
Matching is case-insensitive: patterns and subjects are folded.

Four kinds of list, after Postfix's string_list, domain_list, addr_match_list and
namadr_list:

- `StringList`: exact matches (mydestination, virtual_alias_domains,
  virtual_mailbox_domains); a table is asked for the whole string.
- `DomainList`: host names.  With parent_matches_subdomains (the parameter is in
  parent_domain_matches_subdomains) `example.com` also matches `a.example.com`;
  otherwise only `.example.com` matches subdomains (and, as in Postfix, a
  `.example.com` pattern in parent style matches nothing).  A table is asked for the name
  and then, if it is a fixed table (not regexp/pcre), for each parent domain
  (`example.com` or `.example.com` by the same rule).
- `NetworkList`: IP addresses (mynetworks): `192.0.2.1`, `192.0.2.0/24`,
  `[2001:db8::1]`, `[2001:db8::]/32`, `[::ffff:127.0.0.0]/104`; a table is asked
  for the address as given.  An IPv4-mapped IPv6 client address also matches its
  IPv4 form.  Unbracketed IPv6 patterns are accepted too (Postfix requires
  brackets).  A subject that is not an IP address matches nothing.
- `NamadrList`: a host by name or address (debug_peer_list and the like).

Tables are opened once, when the list is built, through the TABLE_OPENER given
(by default `sdmail.core.tables.open_table`); a caller that builds several lists
passes a caching opener so that each table is opened only once.

Failure modes: building a list raises `MatchListError`, naming the parameter and
the file and line when the item came from a file, for an unreadable file, files
nested too deeply, `!` before a file name (Postfix does not support it either), an
empty pattern, an unbalanced `{`, a bad address or net/mask pattern (including
host bits set: `192.0.2.1/24`), or a table that cannot be opened.  Matching raises
nothing of its own; a table that fails during a lookup raises its TableError,
which the caller must treat as a temporary failure, never as "no match".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from sdmail.core.address import IPAddress, is_ip_address, lookup_key
from sdmail.core.config import split_list

_MAX_FILE_NESTING = 10
_NETWORK_PATTERN_CHARS = frozenset("0123456789abcdefABCDEF:./[]")

Subject = TypeVar("Subject")


class MatchListError(Exception):
    """A list that cannot be built; the text names the parameter, file and line."""

    def __init__(
        self, message: str, name: str = "", path: str | None = None, line: int | None = None
    ) -> None:
        self.message = message
        self.name = name
        self.path = path
        self.line = line
        where = [] if not name else [name]
        if path is not None:
            where.append(path if line is None else f"{path}, line {line}")
        super().__init__(": ".join([*where, message]))


class LookupTable(Protocol):
    """What a list needs of a table: lookups, and whether it answers partial keys."""

    @property
    def fixed(self) -> bool: ...

    def lookup(self, key: str) -> str | None: ...


TableOpener = Callable[[str], LookupTable]


def open_registered_table(spec: str) -> LookupTable:
    """The default TableOpener: `sdmail.core.tables.open_table`, errors as MatchListError."""
    # Imported here so that lists without tables do not load every table type.
    from sdmail.core.tables import TableError, open_table  # noqa: PLC0415

    try:
        return open_table(spec)
    except TableError as exc:
        raise MatchListError(str(exc)) from None


def is_table_spec(item: str) -> bool:
    """True when ITEM is `type:name` (Postfix: a `:` and not an `[address]`)."""
    return not item.startswith("[") and ":" in item


_Matcher = Callable[[Subject], bool]


class _MatchList(Generic[Subject]):
    """The parsing and first-match-wins evaluation the four kinds of list share."""

    def __init__(
        self, items: str | Iterable[str], table_opener: TableOpener | None, name: str
    ) -> None:
        self.name = name
        self._opener = table_opener or open_registered_table
        self._patterns: list[tuple[bool, _Matcher[Subject]]] = []
        texts = split_list(items) if isinstance(items, str) else list(items)
        self._add_items(texts, None, None, 0)

    def _error(self, message: str, path: str | None, line: int | None) -> MatchListError:
        return MatchListError(message, self.name, path, line)

    def _add_items(
        self, items: Sequence[str], path: str | None, line: int | None, depth: int
    ) -> None:
        for item in items:
            if item.count("{") != item.count("}"):
                raise self._error(f'unbalanced "{{" in "{item}"', path, line)
            body = item.lstrip("!")
            negated = (len(item) - len(body)) % 2 == 1
            if not body:
                raise self._error(f'empty pattern: "{item}"', path, line)
            if body.startswith("/"):
                if item.startswith("!"):
                    raise self._error(
                        f'no support for "!" before a file name: "{item}"', path, line
                    )
                self._add_file(body, depth + 1)
                continue
            try:
                matcher = self._compile(body)
            except MatchListError as exc:
                raise self._error(exc.message, path, line) from None
            self._patterns.append((negated, matcher))

    def _add_file(self, file_name: str, depth: int) -> None:
        if depth > _MAX_FILE_NESTING:
            raise self._error(f"files nested more than {_MAX_FILE_NESTING} deep", file_name, None)
        try:
            text = Path(file_name).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise self._error(f"open file: {exc.strerror}", file_name, None) from None
        except ValueError:  # a NUL or an undecodable byte in the name
            raise self._error("bad file name", repr(file_name), None) from None
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if stripped and not stripped.startswith("#"):
                self._add_items(split_list(stripped), file_name, number, depth)

    def _open(self, spec: str) -> LookupTable:
        try:
            return self._opener(spec)
        except MatchListError as exc:
            raise MatchListError(exc.message) from None

    def _compile(self, pattern: str) -> _Matcher[Subject]:
        raise NotImplementedError

    def _matches(self, subject: Subject) -> bool:
        for negated, matcher in self._patterns:
            if matcher(subject):
                return not negated
        return False


# --------------------------------------------------------------------------------------
# Strings and domains
# --------------------------------------------------------------------------------------
class StringList(_MatchList[str]):
    """Exact, case-insensitive matches (Postfix's string_list)."""

    def __init__(
        self, items: str | Iterable[str], table_opener: TableOpener | None = None, *, name: str = ""
    ) -> None:
        super().__init__(items, table_opener, name)

    def _compile(self, pattern: str) -> _Matcher[str]:
        if is_table_spec(pattern):
            table = self._open(pattern)
            return lambda subject: table.lookup(subject) is not None
        folded = lookup_key(pattern)
        return lambda subject: subject == folded

    def matches(self, string: str) -> bool:
        """True when the first pattern that matches STRING is not negated."""
        return self._matches(lookup_key(string))


def _parent_domains(name: str, parent_matches_subdomains: bool) -> list[str]:
    """`a.b.c` -> [`.b.c`, `.c`], or [`b.c`, `c`] in parent style."""
    labels = name.split(".")
    parents = [".".join(labels[start:]) for start in range(1, len(labels))]
    return parents if parent_matches_subdomains else ["." + parent for parent in parents]


def _hostname_matcher(
    pattern: str, parent_matches_subdomains: bool, open_table: TableOpener
) -> _Matcher[str]:
    """Postfix's match_hostname for one pattern; subjects come in folded."""
    if is_table_spec(pattern):
        table = open_table(pattern)

        def in_table(name: str) -> bool:
            if table.lookup(name) is not None:
                return True
            # A regexp or pcre table is asked only for the whole name.
            if not table.fixed:
                return False
            parents = _parent_domains(name, parent_matches_subdomains)
            return any(table.lookup(parent) is not None for parent in parents)

        return in_table
    folded = lookup_key(pattern)
    if parent_matches_subdomains:
        suffix = "." + folded
        return lambda name: name == folded or name.endswith(suffix)
    if folded.startswith("."):
        return lambda name: name.endswith(folded) and len(name) > len(folded)
    return lambda name: name == folded


class DomainList(_MatchList[str]):
    """Host name patterns (Postfix's domain_list): relay_domains and the like."""

    def __init__(
        self,
        items: str | Iterable[str],
        parent_matches_subdomains: bool,
        table_opener: TableOpener | None = None,
        *,
        name: str = "",
    ) -> None:
        self.parent_matches_subdomains = parent_matches_subdomains
        super().__init__(items, table_opener, name)

    def _compile(self, pattern: str) -> _Matcher[str]:
        return _hostname_matcher(pattern, self.parent_matches_subdomains, self._open)

    def matches(self, domain: str) -> bool:
        """True when the first pattern that matches DOMAIN is not negated."""
        return self._matches(lookup_key(domain))


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(pattern: str) -> IPNetwork:
    """`192.0.2.0/24`, `192.0.2.1`, `[2001:db8::]/32`, `[::1]` as a network.

    Raises MatchListError for anything else, and for host bits set in net/mask.
    """
    address, slash, mask = pattern.partition("/")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    elif address.startswith("[") or address.endswith("]"):
        raise MatchListError(f'bad address pattern: "{pattern}"')
    if not is_ip_address(address) or (slash and not mask.isdigit()):
        raise MatchListError(f'bad address pattern: "{pattern}"')
    host = ipaddress.ip_address(address)
    if not slash:
        return ipaddress.ip_network(host)
    try:
        network = ipaddress.ip_network(f"{host}/{mask}", strict=False)
    except ValueError:
        raise MatchListError(f'bad net/mask pattern: "{pattern}"') from None
    if network.network_address != host:
        bracketed = pattern.startswith("[")
        suggestion = f"[{network.network_address}]" if bracketed else f"{network.network_address}"
        raise MatchListError(
            f'non-null host address bits in "{pattern}", perhaps you should use'
            f' "{suggestion}/{mask}" instead'
        )
    return network


def _candidates(address: str) -> list[IPAddress]:
    """ADDRESS and, for an IPv4-mapped IPv6 address, its IPv4 form; [] if not an address."""
    if not is_ip_address(address):
        return []
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return [parsed, parsed.ipv4_mapped]
    return [parsed]


def _network_matcher(pattern: str, open_table: TableOpener) -> _Matcher[str]:
    """Postfix's match_hostaddr for one pattern; subjects are address strings, folded."""
    looks_numeric = set(pattern) <= _NETWORK_PATTERN_CHARS
    if is_table_spec(pattern) and not (looks_numeric and _parses_as_network(pattern)):
        table = open_table(pattern)
        return lambda address: bool(_candidates(address)) and table.lookup(address) is not None
    network = parse_network(pattern)
    return lambda address: any(ip in network for ip in _candidates(address))


def _parses_as_network(pattern: str) -> bool:
    try:
        parse_network(pattern)
    except MatchListError:
        return False
    return True


class NetworkList(_MatchList[str]):
    """IP address and net/mask patterns (Postfix's addr_match_list): mynetworks."""

    def __init__(
        self, items: str | Iterable[str], table_opener: TableOpener | None = None, *, name: str = ""
    ) -> None:
        super().__init__(items, table_opener, name)

    def _compile(self, pattern: str) -> _Matcher[str]:
        return _network_matcher(pattern, self._open)

    def matches(self, address: str) -> bool:
        """True when the first pattern that matches the IP ADDRESS is not negated."""
        return self._matches(lookup_key(address.strip()))


# --------------------------------------------------------------------------------------
# Hosts by name or address
# --------------------------------------------------------------------------------------
class NamadrList(_MatchList[tuple[str, str]]):
    """Host name or address patterns (Postfix's namadr_list): debug_peer_list and the like.

    Each pattern is tried against the name, then against the address.
    """

    def __init__(
        self,
        items: str | Iterable[str],
        parent_matches_subdomains: bool,
        table_opener: TableOpener | None = None,
        *,
        name: str = "",
    ) -> None:
        self.parent_matches_subdomains = parent_matches_subdomains
        super().__init__(items, table_opener, name)

    def _compile(self, pattern: str) -> _Matcher[tuple[str, str]]:
        if is_table_spec(pattern) and not _parses_as_network(pattern):
            table = self._open(pattern)
            by_name = _hostname_matcher(pattern, self.parent_matches_subdomains, lambda _: table)
            by_addr = _network_matcher(pattern, lambda _: table)
            return lambda host: by_name(host[0]) or by_addr(host[1])
        if "/" in pattern or pattern.startswith("[") or is_ip_address(pattern):
            by_address = _network_matcher(pattern, self._open)
            return lambda host: by_address(host[1])
        by_hostname = _hostname_matcher(pattern, self.parent_matches_subdomains, self._open)
        return lambda host: by_hostname(host[0])

    def matches(self, name: str, address: str) -> bool:
        """True when the first pattern that matches host NAME or ADDRESS is not negated."""
        return self._matches((lookup_key(name), lookup_key(address.strip())))
