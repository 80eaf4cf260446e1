"""Next-hop destinations as trivial-rewrite, relayhost and transport maps write them.

SMTP (Postfix's transport(5)): `domain` (MX look-up), `domain:port` (MX look-up, that
port), `[host]` and `[host]:port` (the host's own addresses, no MX look-up),
`[192.0.2.1]`, `[ipv6:2001:db8::1]` (no DNS at all); since Postfix 3.5 a list separated
by commas or spaces is tried in order. LMTP: `unix:/path` (a UNIX-domain socket),
`inet:host`, `inet:host:port`, `inet:[addr]:port`, or the same without `inet:`; LMTP never
looks up MX records. A port is a number or a service name from /etc/services.

The next hop comes from qmgr, which had it from main.cf or a transport table: text an
administrator wrote, so every form is checked and refused with a reason.

Failure modes: `parse_smtp_nexthop` and `parse_lmtp_nexthop` raise `NexthopError` for an
empty destination, an unclosed bracket, an empty host, a bad port or service, a relative
UNIX-domain path.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


class NexthopError(ValueError):
    """A next hop that cannot be parsed; the text says why."""


@dataclass(frozen=True)
class InetDestination:
    """One TCP destination: HOST (without brackets or `ipv6:`), its PORT, and whether MX
    records are looked up (LOOKUP_MX). TEXT is how the next hop wrote it."""

    text: str
    host: str
    port: int
    lookup_mx: bool

    @property
    def literal_address(self) -> str | None:
        """HOST when it is an IP address (no DNS look-up at all)."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None


@dataclass(frozen=True)
class UnixDestination:
    """An LMTP server on the UNIX-domain socket PATH."""

    text: str
    path: str


def parse_smtp_nexthop(nexthop: str, default_port: int) -> list[InetDestination]:
    """The destinations of an smtp next hop, in the order they are tried."""
    sites = nexthop.replace(",", " ").split()
    if not sites:
        raise NexthopError("empty next-hop destination")
    return [parse_destination(site, default_port, lookup_mx=True) for site in sites]


def parse_lmtp_nexthop(nexthop: str, default_port: int) -> list[InetDestination | UnixDestination]:
    """The destinations of an lmtp next hop: one UNIX-domain socket, or TCP hosts."""
    text = nexthop.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/"):
            raise NexthopError(f"unix-domain destination must be an absolute path: {text!r}")
        if "\0" in path:
            raise NexthopError("unix-domain path holds a NUL character")
        return [UnixDestination(text, path)]
    if text.startswith("inet:"):
        text = text[len("inet:") :]
    sites = text.replace(",", " ").split()
    if not sites:
        raise NexthopError("empty next-hop destination")
    return [parse_destination(site, default_port, lookup_mx=False) for site in sites]


def parse_destination(text: str, default_port: int, *, lookup_mx: bool) -> InetDestination:
    """One `host`, `host:port`, `[host]` or `[host]:port` (Postfix's host_port)."""
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise NexthopError(f"missing ']' in destination {text!r}")
        host, rest = text[1:closing], text[closing + 1 :]
        if host[:5].lower() == "ipv6:":
            host = host[5:]
        if rest and not rest.startswith(":"):
            raise NexthopError(f"garbage after ']' in destination {text!r}")
        port = _port(rest[1:], text) if rest else default_port
        lookup_mx = False
    else:
        host, colon, service = text.partition(":")
        if colon and ":" in service:
            raise NexthopError(f"an IPv6 address must be in brackets: {text!r}")
        port = _port(service, text) if colon else default_port
    if not host:
        raise NexthopError(f"empty host in destination {text!r}")
    if any(c.isspace() or ord(c) < 32 or c in "[]<>" for c in host):
        raise NexthopError(f"bad host name in destination {text!r}")
    return InetDestination(text, host, port, lookup_mx)


def _port(service: str, text: str) -> int:
    if not service:
        raise NexthopError(f"empty port in destination {text!r}")
    if service.isdigit():
        number = int(service)
        if not 0 < number < 65536:
            raise NexthopError(f"bad network port {service} in destination {text!r}")
        return number
    try:
        return socket.getservbyname(service, "tcp")
    except (OSError, ValueError):
        raise NexthopError(f"unknown service {service!r} in destination {text!r}") from None
