"""smtpd's DNS: one resolver for the process, and Postfix's DNS blocklists (reject_rbl_client,
reject_rhsbl_client, reject_rhsbl_reverse_client, reject_rhsbl_helo, reject_rhsbl_sender,
reject_rhsbl_recipient).

`Dns` is the door to DNS: dnspython's asyncio resolver, configured from /etc/resolv.conf
(or the file `SDMAIL_RESOLV_CONF` names: tests, and sandboxes whose resolver lives
elsewhere), with dnspython's cache, which honours the records' TTLs. smtpd's restrictions
run in worker threads; `Dns.lookup` hands the query to the process's event loop and waits
for its answer, so DNS never blocks the loop nor needs a thread of its own. Without a loop
(unit tests, tools) it runs the query in a loop of its own.

A blocklist is written as Postfix writes it: `ZONE` or `ZONE=FILTER`, FILTER an address
pattern whose octets are numbers or bracketed lists of numbers and ranges
(`zen.example=127.0.0.[2..11]`, `list.example=127.0.[0;1].[2..4;10]`). A client address is
looked up with its octets reversed (`2.0.0.127.zen.example`; IPv6 by nibbles), a domain as
`domain.ZONE`. Listed means an A record (matching FILTER when there is one); the first TXT
record, when there is one, is the reason the reply gives:
`554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.example; REASON`.

Failure modes: `parse_blocklist` raises `BlocklistError` for a malformed ZONE=FILTER (the
caller makes it a ConfigError naming the parameter). `Dns.lookup` raises `DnsFailure` when
no answer came (timeout, SERVFAIL, no resolver); a blocklist that cannot be asked is logged
and counts as not listed, as in Postfix: a broken list must not stop mail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sdmail.smtpd")

RESOLV_CONF_ENVIRONMENT = "SDMAIL_RESOLV_CONF"
_SYSTEM_RESOLV_CONF = "/etc/resolv.conf"
_LIFETIME = 10.0  # seconds for one query, retries included
_OCTET_LIST = re.compile(r"\[([0-9.;]+)\]\Z")


class DnsFailure(Exception):
    """No answer: the name may or may not exist."""


class BlocklistError(Exception):
    """A blocklist written in a way Postfix would not take."""


@dataclass(frozen=True)
class Answer:
    """Records of one type (their text), or NXDOMAIN (the name does not exist)."""

    records: tuple[str, ...] = ()
    nxdomain: bool = False


class Dns:
    """The process's resolver (see the module docstring)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, resolv_conf: str | None = None
    ) -> None:
        self.loop = loop
        self.resolv_conf = resolv_conf or os.environ.get(
            RESOLV_CONF_ENVIRONMENT, _SYSTEM_RESOLV_CONF
        )
        self._resolver: Any = None

    def lookup(self, name: str, rdtype: str) -> Answer:
        """The RDTYPE records of NAME; DnsFailure when DNS did not answer."""
        query = self._query(name, rdtype)
        if self.loop is None or not self.loop.is_running():
            return asyncio.run(query)
        future = asyncio.run_coroutine_threadsafe(query, self.loop)
        try:
            return future.result(_LIFETIME + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DnsFailure(f"{name}/{rdtype}: no answer in {_LIFETIME:g} s") from None

    def resolver(self) -> Any:
        if self._resolver is None:
            try:
                import dns.asyncresolver  # noqa: PLC0415  (only smtpd needs dnspython)
                import dns.resolver  # noqa: PLC0415
            except ImportError:
                raise DnsFailure("dnspython is not installed") from None
            try:
                resolver = dns.asyncresolver.Resolver(filename=self.resolv_conf)
            except (OSError, dns.resolver.NoResolverConfiguration) as exc:
                raise DnsFailure(f"cannot read {self.resolv_conf}: {exc}") from None
            resolver.lifetime = _LIFETIME
            resolver.cache = dns.resolver.LRUCache()
            self._resolver = resolver
        return self._resolver

    async def _query(self, name: str, rdtype: str) -> Answer:
        import dns.exception  # noqa: PLC0415
        import dns.resolver  # noqa: PLC0415

        resolver = self.resolver()
        try:
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(nxdomain=True)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsFailure(f"{name}/{rdtype}: {exc}") from None
        return Answer(tuple(_record_text(record) for record in answer.rrset or ()))


def _record_text(record: Any) -> str:
    strings = getattr(record, "strings", None)
    if strings is not None:  # TXT: the strings joined, without quotes
        return b"".join(strings).decode("utf-8", "replace")
    return str(record.to_text())


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
        answer = dns.lookup(name, "A")
    except DnsFailure as exc:
        log.warning("DNS blocklist %s: lookup error for %s: %s", blocklist.zone, name, exc)
        return None
    if not any(blocklist.matches(record) for record in answer.records):
        return None
    try:
        reasons = dns.lookup(name, "TXT").records
    except DnsFailure:
        reasons = ()  # listed all the same: the reason is only a courtesy
    return Listing(blocklist.zone, reasons[0] if reasons else "")
