"""Which servers to try for one destination, in order (Postfix's smtp_addr.c).

For a domain (no brackets, SMTP mode, DNS enabled): its MX records by preference, equal
preferences shuffled (smtp_randomize_addresses), each MX host's IPv4/IPv6 addresses
(inet_protocols), IPv4 or IPv6 first among equals (smtp_address_preference), both
families kept within smtp_mx_address_limit (smtp_balance_inet_protocols). No MX record
(NXDOMAIN or NODATA): the domain's own addresses ("implicit MX"). A null MX (RFC 7505):
`5.1.0 Domain X does not accept mail (nullMX)`. When this host's own address is among the
MX hosts (port 25 only, as Postfix), that MX and every worse one is dropped; nothing left
is `5.4.6 mail for X loops back to myself` (we are the best MX) or `4.4.4 unable to find
primary relay for X`. `[host]`, `host` for LMTP and relayhost-style destinations: the
host's addresses only; `[192.0.2.1]`: that address, no DNS. With DNS disabled, or
smtp_host_lookup = native, the system's resolver (getaddrinfo, /etc/hosts) finds hosts.

Errors keep Postfix's texts and statuses: a temporary DNS failure is 4.4.3, a host or
domain that does not exist 5.4.4 (`Host or domain name not found. Name service error for
name=nowhere.example type=A: Host not found`), a lookup refused by policy never happens
here. When some MX hosts have addresses, look-up problems with the others are ignored.

Failure modes: `find_servers` raises `LookupFailure` (its status: temporary or permanent,
and whether mail loops back to this host); never anything else.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sdmail.core.dns import AddressAnswer, DnsError, Failure, Resolver
from sdmail.core.dsn import Status
from sdmail.core.log import msg_warning
from sdmail.smtp.nexthop import InetDestination
from sdmail.smtp.session import Endpoint
from sdmail.smtp.settings import ClientSettings

_SMTP_PORT = 25
_FIB_TRIE = Path("/proc/net/fib_trie")
_IF_INET6 = Path("/proc/net/if_inet6")


class LookupFailure(Exception):
    """No server to try: STATUS says why; LOOPS that mail would come back to this host."""

    def __init__(self, status: Status, *, loops: bool = False) -> None:
        super().__init__(status.text)
        self.status = status
        self.loops = loops


@dataclass(frozen=True)
class ServerList:
    """The servers of one destination, in the order to try; I_AM_MX: this host is one of
    the destination's MX hosts (no other destination may be tried after them)."""

    endpoints: tuple[Endpoint, ...]
    i_am_mx: bool = False


@dataclass(frozen=True)
class Families:
    ipv4: bool = True
    ipv6: bool = True

    @classmethod
    def from_inet_protocols(cls, protocols: Iterable[str]) -> Families:
        wanted = {p.lower() for p in protocols}
        if "all" in wanted:
            return cls(True, _ipv6_available())
        return cls("ipv4" in wanted, "ipv6" in wanted and _ipv6_available())

    def allows(self, address: str) -> bool:
        version = ipaddress.ip_address(address).version
        return self.ipv4 if version == 4 else self.ipv6


@functools.cache
def _ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


@dataclass
class Finder:
    """Finds servers with RESOLVER under SETTINGS; OWN are this host's addresses."""

    settings: ClientSettings
    resolver: Resolver | None
    own: frozenset[str] = field(default_factory=frozenset)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def families(self) -> Families:
        return Families.from_inet_protocols(self.settings.shared.inet_protocols)

    async def find_servers(self, queue_id: str, dest: InetDestination) -> ServerList:
        """The servers of DEST, in the order to try them."""
        families = self.families
        if not (families.ipv4 or families.ipv6):
            raise LookupFailure(Status("4.4.4", "all network protocols are disabled"))
        loop_detect = not self.settings.lmtp and dest.port == _SMTP_PORT
        literal = dest.literal_address
        if literal is not None:
            if not families.allows(literal):
                raise LookupFailure(
                    Status("5.4.4", f"{literal}: address family disabled by inet_protocols")
                )
            endpoints: list[Endpoint] = [Endpoint(literal, literal, dest.port)]
            return ServerList(self._without_self_host(endpoints, dest, loop_detect))
        if dest.lookup_mx and self.settings.dns_enabled and not self.settings.lmtp:
            return await self._domain_servers(queue_id, dest, families, loop_detect)
        endpoints = await self._host_endpoints(dest.host, dest.port, 0, families)
        endpoints = self._ordered(endpoints)
        return ServerList(self._without_self_host(endpoints, dest, loop_detect))

    # -- MX ------------------------------------------------------------------------------
    async def _domain_servers(
        self, queue_id: str, dest: InetDestination, families: Families, loop_detect: bool
    ) -> ServerList:
        assert self.resolver is not None
        try:
            answer = await self.resolver.mx(dest.host)
        except DnsError as exc:
            if exc.temporary:
                failure = LookupFailure(Status("4.4.3", str(exc)))
            elif exc.failure is Failure.MALFORMED:
                failure = LookupFailure(Status("5.4.4", str(exc)))
            else:  # no such domain: its own address records decide ("implicit MX")
                return await self._implicit_mx(dest, families, loop_detect)
            if not self.settings.shared.ignore_mx_lookup_error:
                raise failure from None
            return await self._implicit_mx(dest, families, loop_detect)
        if answer.null_mx:
            raise LookupFailure(
                Status("5.1.0", f"Domain {dest.host} does not accept mail (nullMX)")
            )
        if not answer.records:
            return await self._implicit_mx(dest, families, loop_detect)
        endpoints: list[Endpoint] = []
        problem: LookupFailure | None = None
        for record in answer.records:
            if not record.exchange:
                continue
            try:
                endpoints += await self._host_endpoints(
                    record.exchange, dest.port, record.preference, families
                )
            except LookupFailure as exc:
                if problem is None or not problem.status.is_temporary:
                    problem = exc  # a soft error dominates hard ones
        if not endpoints:
            msg_warning(queue_id, f"no MX host for {dest.host} has a valid address record")
            status = (problem or LookupFailure(Status("4.4.4", "no MX host address"))).status
            if self.settings.defer_if_no_mx_address_found and not status.is_temporary:
                status = Status("4" + status.dsn[1:], status.text)
            raise LookupFailure(status)
        best_found = endpoints[0].preference
        endpoints = self._ordered(endpoints)
        i_am_mx = False
        if loop_detect:
            best_listed = answer.records[0].preference
            endpoints, i_am_mx = self._truncate_at_self(
                endpoints, dest.host, best_found == best_listed
            )
        best = endpoints[0].preference
        marked = [
            Endpoint(e.host, e.address, e.port, e.preference, e.preference == best)
            for e in endpoints
        ]
        return ServerList(tuple(marked), i_am_mx)

    async def _implicit_mx(
        self, dest: InetDestination, families: Families, loop_detect: bool
    ) -> ServerList:
        endpoints = self._ordered(await self._host_endpoints(dest.host, dest.port, 0, families))
        return ServerList(self._without_self_host(endpoints, dest, loop_detect))

    def _truncate_at_self(
        self, endpoints: list[Endpoint], domain: str, found_best_mx: bool
    ) -> tuple[list[Endpoint], bool]:
        mine = [e for e in endpoints if e.address in self.own]
        if not mine:
            return endpoints, False
        limit = min(e.preference for e in mine)
        kept = [e for e in endpoints if e.preference < limit]
        if not kept:
            if found_best_mx:
                raise LookupFailure(
                    Status("5.4.6", f"mail for {domain} loops back to myself"), loops=True
                )
            raise LookupFailure(
                Status("4.4.4", f"unable to find primary relay for {domain}"), loops=True
            )
        return kept, True

    def _without_self_host(
        self, endpoints: list[Endpoint], dest: InetDestination, loop_detect: bool
    ) -> tuple[Endpoint, ...]:
        if loop_detect and any(e.address in self.own for e in endpoints):
            raise LookupFailure(
                Status("5.4.6", f"mail for {dest.host} loops back to myself"), loops=True
            )
        return tuple(endpoints)

    # -- addresses -----------------------------------------------------------------------
    async def _host_endpoints(
        self, host: str, port: int, preference: int, families: Families
    ) -> list[Endpoint]:
        """HOST's addresses as endpoints; LookupFailure when it has none."""
        try:
            literal = str(ipaddress.ip_address(host))
        except ValueError:
            literal = None
        if literal is not None:
            return (
                [Endpoint(literal, literal, port, preference)] if families.allows(literal) else []
            )
        lookups = self.settings.host_lookup
        failure: LookupFailure | None = None
        if self.settings.dns_enabled and self.resolver is not None:
            try:
                answer = await self.resolver.addresses(host, ipv4=families.ipv4, ipv6=families.ipv6)
                return _endpoints(host, port, preference, answer)
            except DnsError as exc:
                status = "4.4.3" if exc.temporary else "5.4.4"
                failure = LookupFailure(Status(status, str(exc)))
                if exc.temporary or "native" not in lookups:
                    raise failure from None
        if "native" in lookups or not self.settings.dns_enabled:
            return await self._native(host, port, preference, families, failure)
        raise failure or LookupFailure(Status("5.4.4", f"{host}: host not found"))

    async def _native(
        self,
        host: str,
        port: int,
        preference: int,
        families: Families,
        previous: LookupFailure | None,
    ) -> list[Endpoint]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            soft = exc.errno in (socket.EAI_AGAIN, socket.EAI_MEMORY, socket.EAI_SYSTEM)
            soft = soft or (previous is not None and previous.status.is_temporary)
            raise LookupFailure(
                Status(
                    "4.4.4" if soft else "5.4.4", f"unable to look up host {host}: {exc.strerror}"
                )
            ) from None
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if families.allows(address) and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise LookupFailure(Status("5.4.4", f"{host}: host not found"))
        ipv4 = [a for a in addresses if ":" not in a]
        ipv6 = [a for a in addresses if ":" in a]
        return [Endpoint(host, a, port, preference) for a in ipv4 + ipv6]

    # -- order -----------------------------------------------------------------------------
    def _ordered(self, endpoints: list[Endpoint]) -> list[Endpoint]:
        """Shuffled among equal preferences, sorted, IP versions balanced within the limit."""
        if len(endpoints) < 2:
            return endpoints
        s = self.settings
        if s.randomize_addresses:
            endpoints = endpoints[:]
            self.rng.shuffle(endpoints)
        rank = {"ipv4": (0, 1), "ipv6": (1, 0)}.get(s.address_preference, (0, 0))
        endpoints = sorted(
            endpoints, key=lambda e: (e.preference, rank[0] if ":" not in e.address else rank[1])
        )
        if s.mx_address_limit > 0 and s.balance_inet_protocols:
            endpoints = balance_families(endpoints, s.mx_address_limit)
        return endpoints


def _endpoints(host: str, port: int, preference: int, answer: AddressAnswer) -> list[Endpoint]:
    return [Endpoint(host, address, port, preference) for address in answer.addresses]


def balance_families(endpoints: list[Endpoint], limit: int) -> list[Endpoint]:
    """ENDPOINTS cut to LIMIT so that neither IP version crowds the other out (Postfix's
    smtp_balance_inet_proto); the order is kept."""
    v4 = sum(1 for e in endpoints if ":" not in e.address)
    v6 = len(endpoints) - v4
    if not (v4 and v6) or v4 + v6 <= limit:
        return endpoints
    if v6 <= limit // 2:
        v6_target, v4_target = v6, limit - v6
    elif v4 <= limit // 2:
        v4_target, v6_target = v4, limit - v4
    else:
        first_is_v4 = ":" not in endpoints[0].address
        v4_target = (limit + first_is_v4) // 2
        v6_target = limit - v4_target
    kept = []
    for endpoint in endpoints:
        if ":" in endpoint.address:
            if v6_target > 0:
                kept.append(endpoint)
                v6_target -= 1
        elif v4_target > 0:
            kept.append(endpoint)
            v4_target -= 1
    return kept


# --------------------------------------------------------------------------------------
# This host's own addresses
# --------------------------------------------------------------------------------------
def own_addresses(settings: ClientSettings) -> frozenset[str]:
    """The addresses mail to this host arrives on (inet_interfaces, proxy_interfaces)."""
    shared = settings.shared
    found: set[str] = set()
    interfaces = [i.strip("[]") for i in shared.inet_interfaces]
    if any(i.lower() == "all" for i in interfaces):
        found |= interface_addresses()
    else:
        for name in interfaces:
            found |= _addresses_of(name)
    for name in shared.proxy_interfaces:
        found |= _addresses_of(name.strip("[]"))
    return frozenset(found)


def _addresses_of(name: str) -> set[str]:
    if name.lower() in ("loopback-only", "localhost"):
        return {"127.0.0.1", "::1"}
    try:
        return {str(ipaddress.ip_address(name))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()
    return {str(info[4][0]) for info in infos}


def interface_addresses() -> set[str]:
    """The addresses of this host's network interfaces (Linux /proc)."""
    found: set[str] = set()
    try:
        lines = _FIB_TRIE.read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL" and "|--" in previous:
            found.add(previous.split("|--", 1)[1].strip())
    try:
        for line in _IF_INET6.read_text().splitlines():
            raw = line.split()[0] if line.split() else ""
            if len(raw) == 32:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError):
        pass
    return found
