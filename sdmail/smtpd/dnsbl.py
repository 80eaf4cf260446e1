"""smtpd's DNS: core/dns's resolver for the worker threads, and Postfix's DNS blocklists
(reject_rbl_client, reject_rhsbl_client, reject_rhsbl_reverse_client, reject_rhsbl_helo,
reject_rhsbl_sender, reject_rhsbl_recipient).

`Dns` is smtpd's door to DNS: one core/dns `Resolver` for the process (its servers from
`core.dns.resolv_conf_path()`, read at the first look-up; its cache honours the records'
TTLs). smtpd's restrictions run in worker threads; `Dns` hands each query to the process's
event loop and waits for its answer, so DNS never blocks the loop nor needs a thread of
its own. Without a loop (unit tests, tools) it runs the query in a loop of its own.

A blocklist is written as Postfix writes it: `ZONE` or `ZONE=FILTER`, FILTER an address
pattern whose octets are numbers or bracketed lists of numbers and ranges
(`zen.example=127.0.0.[2..11]`, `list.example=127.0.[0;1].[2..4;10]`). A client address is
looked up with its octets reversed (`2.0.0.127.zen.example`; IPv6 by nibbles), a domain as
`domain.ZONE`. Listed means an A record (matching FILTER when there is one); the first TXT
record, when there is one, is the reason the reply gives:
`554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.example; REASON`.

Failure modes: `parse_blocklist` raises `BlocklistError` for a malformed ZONE=FILTER (the
caller makes it a ConfigError naming the parameter). `Dns.addresses`, `Dns.mx` and `Dns.txt`
raise core/dns's `DnsError`, a temporary one when no answer came in time or the resolver
configuration cannot be read (logged). A blocklist that cannot be asked is logged and
counts as not listed, as in Postfix: a broken list must not stop mail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sdmail.core.dns import (
    AddressAnswer,
    DnsError,
    Failure,
    MxAnswer,
    Resolver,
    ResolverConfigError,
    TxtAnswer,
    read_resolv_conf,
    resolv_conf_path,
)

log = logging.getLogger("sdmail.smtpd")

T = TypeVar("T")
_GRACE = 1.0  # seconds a thread waits beyond the resolver's own time limit
_OCTET_LIST = re.compile(r"\[([0-9.;]+)\]\Z")


class BlocklistError(Exception):
    """A blocklist written in a way Postfix would not take."""


class Dns:
    """The process's resolver, for worker threads (see the module docstring)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, resolv_conf: str | Path | None = None
    ) -> None:
        self.loop = loop
        self.resolv_conf = Path(resolv_conf) if resolv_conf else resolv_conf_path()
        self._resolver: Resolver | None = None
        self._lock = threading.Lock()

    def addresses(self, name: str, *, ipv4: bool = True, ipv6: bool = True) -> AddressAnswer:
        rdtype = "A" if ipv4 else "AAAA"
        return self._run(name, rdtype, lambda r: r.addresses(name, ipv4=ipv4, ipv6=ipv6))

    def mx(self, domain: str) -> MxAnswer:
        return self._run(domain, "MX", lambda r: r.mx(domain))

    def txt(self, name: str) -> TxtAnswer:
        return self._run(name, "TXT", lambda r: r.txt(name))

    def _run(self, name: str, rdtype: str, ask: Callable[[Resolver], Coroutine[Any, Any, T]]) -> T:
        resolver = self._resolver_or_fail(name, rdtype)
        if self.loop is None or not self.loop.is_running():
            return asyncio.run(ask(resolver))
        future = asyncio.run_coroutine_threadsafe(ask(resolver), self.loop)
        config = resolver.config
        wait = config.timeout * config.attempts * len(config.nameservers) + _GRACE
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DnsError(Failure.TRY_AGAIN, name, rdtype) from None

    def _resolver_or_fail(self, name: str, rdtype: str) -> Resolver:
        with self._lock:
            if self._resolver is None:
                try:
                    self._resolver = Resolver(read_resolv_conf(self.resolv_conf))
                except ResolverConfigError as exc:
                    log.warning("cannot read the resolver configuration: %s", exc)
                    raise DnsError(Failure.TRY_AGAIN, name, rdtype) from None
            return self._resolver


# --------------------------------------------------------------------------------------
# Blocklists
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blocklist:
    """ZONE, and the A-record pattern that counts as listed (None: any)."""

    zone: str
    pattern: tuple[frozenset[int] | None, ...] | None = None

    def matches(self, address: str) -> bool:
        if self.pattern is None:
            return True
        parts = address.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            return False
        return all(
            allowed is None or int(part) in allowed
            for part, allowed in zip(parts, self.pattern, strict=True)
        )


@dataclass(frozen=True)
class Listing:
    """A blocklist's verdict on a query: listed, with the reason TXT gave (may be empty)."""

    zone: str
    reason: str


def parse_blocklist(text: str) -> Blocklist:
    """`ZONE[=FILTER]` as Postfix takes it; BlocklistError if malformed."""
    zone, equals, pattern_text = text.partition("=")
    zone = zone.strip().rstrip(".").lower()
    if not zone or " " in zone or zone.startswith("."):
        raise BlocklistError(f"bad DNS blocklist {text!r}")
    if not equals:
        return Blocklist(zone)
    octets = pattern_text.split(".") if "[" not in pattern_text else _split_octets(pattern_text)
    if len(octets) != 4:
        raise BlocklistError(f"bad address pattern in {text!r}")
    return Blocklist(zone, tuple(_octet(octet, text) for octet in octets))


def _split_octets(pattern: str) -> list[str]:
    """Split at the dots that are not inside brackets (`127.0.[0..2].[2;4]`)."""
    parts, depth, current = [], 0, ""
    for char in pattern:
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (char == "[") - (char == "]")
        current += char
    parts.append(current)
    return parts


def _octet(text: str, whole: str) -> frozenset[int] | None:
    if text.isdigit() and int(text) <= 255:
        return frozenset({int(text)})
    match = _OCTET_LIST.match(text)
    if match is None:
        raise BlocklistError(f"bad address pattern in {whole!r}")
    values: set[int] = set()
    for item in match.group(1).split(";"):
        low, dots, high = item.partition("..")
        if not low.isdigit() or (dots and not high.isdigit()):
            raise BlocklistError(f"bad address pattern in {whole!r}")
        first, last = int(low), int(high) if dots else int(low)
        if not 0 <= first <= last <= 255:
            raise BlocklistError(f"bad address pattern in {whole!r}")
        values.update(range(first, last + 1))
    return frozenset(values)


def client_query(address: str, zone: str) -> str | None:
    """The name to look up for client ADDRESS in ZONE (None: not an IP address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    reverse = ip.reverse_pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
    return f"{reverse}.{zone}"


def domain_query(domain: str, zone: str) -> str | None:
    """The name to look up for DOMAIN in ZONE (None: no domain, or an address literal)."""
    domain = domain.strip().rstrip(".")
    if not domain or domain.startswith("[") or domain == "unknown":
        return None
    return f"{domain}.{zone}"


def listed(dns: Dns, name: str, blocklist: Blocklist) -> Listing | None:
    """Whether NAME is listed in BLOCKLIST (a DNS failure is logged: not listed)."""
    try:
        answer = dns.addresses(name, ipv6=False)
    except DnsError as exc:
        if exc.temporary:
            log.warning("DNS blocklist %s: lookup error for %s: %s", blocklist.zone, name, exc)
        return None
    if not any(blocklist.matches(address) for address in answer.addresses):
        return None
    try:
        reasons = dns.txt(name).records
    except DnsError:
        reasons = ()  # listed all the same: the reason is only a courtesy
    return Listing(blocklist.zone, reasons[0] if reasons else "")
