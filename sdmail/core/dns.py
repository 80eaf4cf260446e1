"""DNS look-ups for mail: MX, A/AAAA, TXT and TLSA records, with their DNSSEC status.

The smtp agent asks here where a domain's mail goes (`Resolver.mx`), which addresses a host
has (`Resolver.addresses`) and which TLSA records vouch for a server's certificate
(`Resolver.tlsa`); smtpd asks whether a sender's domain takes mail (MX, A/AAAA) and what DNS
blocklists say (A, and the reason in `Resolver.txt`). Each answer says whether the resolver vouched for it with the AD bit
(`secure`), which a validating resolver (systemd-resolved with DNSSEC=yes, unbound, a
recursive server on the LAN) sets on DNSSEC-validated answers; sdmail does no validation of
its own, as Postfix does none. Queries go through dnspython's asyncio resolver, never
searching domain lists: mail domains are absolute.

The resolver's servers come from the system's `/etc/resolv.conf` (`read_resolv_conf`), so
an administrator points sdmail at a DNS server the way every other program is pointed at
one, and a test at its own (`resolv_conf_path`: the file SDMAIL_RESOLV_CONF names, if set). The file's `nameserver`, `options timeout:N` and
`options attempts:N` lines count; `options port:N` (sdmail's, ignored by the C library)
sends the queries to another port than 53, for a test server that cannot bind port 53.
Every other line is ignored as the C library ignores what it does not know.

A look-up that finds no record raises `DnsError`, whose text is Postfix's
(`Host or domain name not found. Name service error for name=example.org type=MX: Host not
found, try again`) and whose `temporary` says whether trying again later may help.
A null MX (RFC 7505: one MX record whose host is the root, ".") is not an error here: the
answer says `null_mx` and the caller decides what it means.

Failure modes: `read_resolv_conf` raises `ResolverConfigError` naming the file and line of a
nameserver or option it cannot use, or the file it cannot read. `Resolver.mx`,
`Resolver.addresses`, `Resolver.txt` and `Resolver.tlsa` raise `DnsError` only: not found (NXDOMAIN), no
record of the type (NODATA), try again (timeouts, SERVFAIL, REFUSED, no server answering,
bad replies) and malformed names (not a valid domain name).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.rdata

DEFAULT_RESOLV_CONF = Path("/etc/resolv.conf")
RESOLV_CONF_VARIABLE = "SDMAIL_RESOLV_CONF"  # another file: tests, sandboxes
_DNS_PORT = 53
_GLIBC_TIMEOUT = 5.0  # resolv.conf(5) defaults, used when the file does not say
_GLIBC_ATTEMPTS = 2
_EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: no fragmented UDP answers
_CACHE_ENTRIES = 4096


class ResolverConfigError(Exception):
    """A resolv.conf sdmail cannot use: the text names the file and line."""


class Failure(enum.Enum):
    """Why a look-up found nothing; the value is Postfix's (the C library's) wording."""

    NOT_FOUND = "Host not found"
    NO_DATA = "Host found but no data record of requested type"
    TRY_AGAIN = "Host not found, try again"
    MALFORMED = "Malformed domain name"


class DnsError(Exception):
    """A look-up of NAME for records of type RDTYPE found none, for the reason FAILURE."""

    def __init__(self, failure: Failure, name: str, rdtype: str) -> None:
        self.failure = failure
        self.name = name
        self.rdtype = rdtype
        super().__init__(
            f"Host or domain name not found. Name service error for name={name} "
            f"type={rdtype}: {failure.value}"
        )

    @property
    def temporary(self) -> bool:
        """Whether a later try may find the records (a timeout, a server failure)."""
        return self.failure is Failure.TRY_AGAIN


@dataclass(frozen=True)
class ResolverConfig:
    """The servers queries go to, and how long and how often each is asked."""

    nameservers: tuple[str, ...] = ("127.0.0.1",)
    port: int = _DNS_PORT
    timeout: float = _GLIBC_TIMEOUT
    attempts: int = _GLIBC_ATTEMPTS


@dataclass(frozen=True)
class MxRecord:
    preference: int
    exchange: str  # the host name without its final dot; "" for the root (null MX)


@dataclass(frozen=True)
class MxAnswer:
    """The MX records of a domain (none: the domain has no MX, use its own address)."""

    records: tuple[MxRecord, ...]
    secure: bool

    @property
    def null_mx(self) -> bool:
        """RFC 7505: the domain accepts no mail (its only MX is the root)."""
        return bool(self.records) and all(r.exchange == "" for r in self.records)


@dataclass(frozen=True)
class AddressAnswer:
    """A host's addresses, IPv4 first, each family in the order the server gave them."""

    addresses: tuple[str, ...]
    secure: bool


@dataclass(frozen=True)
class TxtAnswer:
    """A name's TXT records, each one's strings joined (none: the name has no TXT record)."""

    records: tuple[str, ...]
    secure: bool


@dataclass(frozen=True)
class TlsaRecord:
    usage: int
    selector: int
    matching_type: int
    data: bytes


@dataclass(frozen=True)
class TlsaAnswer:
    """The TLSA records of one server port (none is a normal answer)."""

    records: tuple[TlsaRecord, ...]
    secure: bool


# --------------------------------------------------------------------------------------
# resolv.conf
# --------------------------------------------------------------------------------------
def resolv_conf_path() -> Path:
    """The resolv.conf sdmail reads: the one SDMAIL_RESOLV_CONF names, else the system's."""
    return Path(os.environ.get(RESOLV_CONF_VARIABLE) or DEFAULT_RESOLV_CONF)


def read_resolv_conf(path: str | Path = DEFAULT_RESOLV_CONF) -> ResolverConfig:
    """The resolver configuration PATH describes (see the module docstring)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ResolverConfigError(f"{path}: {exc.strerror or exc}") from None
    servers: list[str] = []
    port, timeout, attempts = _DNS_PORT, _GLIBC_TIMEOUT, _GLIBC_ATTEMPTS
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        where = f"{path}, line {number}"
        if words[0] == "nameserver":
            servers.append(_nameserver(words[1], where))
        elif words[0] == "options":
            for option in words[1:]:
                name, _, value = option.partition(":")
                if name == "timeout":
                    timeout = float(_option_number(option, value, 1, 30, where))
                elif name == "attempts":
                    attempts = _option_number(option, value, 1, 5, where)
                elif name == "port":
                    port = _option_number(option, value, 1, 65535, where)
    return ResolverConfig(tuple(servers) or ResolverConfig.nameservers, port, timeout, attempts)


def _nameserver(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ResolverConfigError(f"{where}: nameserver {text!r} is not an IP address") from None


def _option_number(option: str, value: str, low: int, high: int, where: str) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ResolverConfigError(f"{where}: option {option!r}: expected a number {low}..{high}")
    return int(value)


# --------------------------------------------------------------------------------------
# Look-ups
# --------------------------------------------------------------------------------------
class Resolver:
    """Look-ups through the servers of CONFIG, with a cache that honours the records' TTLs.

    dnspython is imported at the first look-up, not before: it pulls in HTTP libraries
    for DNS over HTTPS, a good part of a second's start of an agent that may need no DNS
    at all (a relayhost given by address)."""

    def __init__(self, config: ResolverConfig) -> None:
        self.config = config
        self._backend: dns.asyncresolver.Resolver | None = None

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._backend is not None:
            return self._backend
        import dns.asyncresolver  # noqa: PLC0415 (see the class docstring)
        import dns.flags  # noqa: PLC0415
        import dns.resolver  # noqa: PLC0415

        config = self.config
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(config.nameservers)
        resolver.port = config.port
        resolver.timeout = config.timeout
        resolver.lifetime = config.timeout * config.attempts * len(config.nameservers)
        resolver.cache = dns.resolver.LRUCache(_CACHE_ENTRIES)
        # AD in the query asks for AD in the answer (RFC 6840 5.7); DO asks a validating
        # server to validate.
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.use_edns(0, dns.flags.DO, _EDNS_PAYLOAD)
        self._backend = resolver
        return resolver

    async def mx(self, domain: str) -> MxAnswer:
        """DOMAIN's MX records, most preferred first (their order among equals as received).

        NODATA is an answer without records (the caller falls back to the domain's own
        addresses); NXDOMAIN is DnsError NOT_FOUND."""
        from dns.rdtypes.ANY.MX import MX  # noqa: PLC0415

        records, secure = await self._query(domain, "MX")
        found = [
            MxRecord(int(r.preference), _host_text(r.exchange))
            for r in records
            if isinstance(r, MX)
        ]
        found.sort(key=lambda r: r.preference)
        return MxAnswer(tuple(found), secure)

    async def addresses(self, host: str, *, ipv4: bool = True, ipv6: bool = True) -> AddressAnswer:
        """HOST's A and/or AAAA records; DnsError when neither family has any.

        When both families fail the most hopeful failure is raised: try again, then not
        found, then no data."""
        from dns.rdtypes.IN.A import A  # noqa: PLC0415
        from dns.rdtypes.IN.AAAA import AAAA  # noqa: PLC0415

        wanted = [t for t, on in (("A", ipv4), ("AAAA", ipv6)) if on]
        if not wanted:
            raise ValueError("no address family asked for")
        outcomes = await asyncio.gather(
            *(self._query(host, t) for t in wanted), return_exceptions=True
        )
        addresses: list[str] = []
        secure = True
        failures: list[DnsError] = []
        for outcome in outcomes:
            if isinstance(outcome, DnsError):
                failures.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                records, answer_secure = outcome
                addresses.extend(str(r.address) for r in records if isinstance(r, A | AAAA))
                secure = secure and answer_secure
        if addresses:
            return AddressAnswer(tuple(addresses), secure and not failures)
        if not failures:
            raise DnsError(Failure.NO_DATA, host, wanted[0])
        raise min(failures, key=lambda f: _FAILURE_ORDER.index(f.failure))

    async def txt(self, name: str) -> TxtAnswer:
        """NAME's TXT records, as text (undecodable bytes replaced); NODATA is an answer
        without records, NXDOMAIN is DnsError NOT_FOUND."""
        from dns.rdtypes.ANY.TXT import TXT  # noqa: PLC0415

        records, secure = await self._query(name, "TXT")
        found = tuple(
            b"".join(r.strings).decode("utf-8", "replace") for r in records if isinstance(r, TXT)
        )
        return TxtAnswer(found, secure)

    async def tlsa(self, host: str, port: int) -> TlsaAnswer:
        """The TLSA records of `_PORT._tcp.HOST`; none (NXDOMAIN, NODATA) is an empty answer,
        secure when the denial was validated. DnsError only when the look-up failed."""
        from dns.rdtypes.ANY.TLSA import TLSA  # noqa: PLC0415

        name = f"_{port}._tcp.{host}"
        try:
            records, secure = await self._query(name, "TLSA")
        except DnsError as exc:
            if exc.temporary or exc.failure is Failure.MALFORMED:
                raise
            return TlsaAnswer((), False)
        found = tuple(
            TlsaRecord(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))
            for r in records
            if isinstance(r, TLSA)
        )
        return TlsaAnswer(found, secure)

    async def _query(self, name: str, rdtype: str) -> tuple[list[dns.rdata.Rdata], bool]:
        """The records of NAME's RDTYPE answer ([] for NODATA) and its AD bit."""
        resolver = self._resolver()
        import dns.exception  # noqa: PLC0415
        import dns.flags  # noqa: PLC0415
        import dns.name  # noqa: PLC0415
        import dns.resolver  # noqa: PLC0415

        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            raise DnsError(Failure.MALFORMED, name, rdtype) from None
        try:
            answer = await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsError(Failure.NOT_FOUND, name, rdtype) from None
        except dns.resolver.YXDOMAIN:
            raise DnsError(Failure.MALFORMED, name, rdtype) from None
        except (dns.exception.DNSException, OSError):
            # Timeouts, SERVFAIL/REFUSED from every server, malformed replies.
            raise DnsError(Failure.TRY_AGAIN, name, rdtype) from None
        secure = bool(answer.response.flags & dns.flags.AD)
        records = list(answer.rrset) if answer.rrset is not None else []
        return records, secure


_FAILURE_ORDER: Sequence[Failure] = (
    Failure.TRY_AGAIN,
    Failure.NOT_FOUND,
    Failure.NO_DATA,
    Failure.MALFORMED,
)


def _host_text(name: object) -> str:
    """A name from a record as text without its final dot ("" for the root)."""
    import dns.name  # noqa: PLC0415

    if isinstance(name, dns.name.Name):
        return name.to_text(omit_final_dot=True) if name != dns.name.root else ""
    return str(name).rstrip(".")
