"""The addresses this machine receives mail on: $inet_interfaces and $proxy_interfaces.

The resolver treats mail for `user@[192.0.2.1]` as local when 192.0.2.1 is one of
these addresses (Postfix's own_inet_addr and proxy_inet_addr).  `all` means every
address of the machine, read from the kernel without extra dependencies: IPv4
from /proc/net/fib_trie (the `/32 host LOCAL` entries), IPv6 from
/proc/net/if_inet6, and, where /proc is not readable, the addresses of the host
name plus the loopback addresses.  `loopback-only` means 127.0.0.1 and ::1.  Other
items are IP addresses (bare or in brackets) or host names, which are resolved.
$inet_protocols (`all`, `ipv4`, `ipv6`) keeps only the protocols in use.

Failure modes: `InterfaceError` (a ValueError) naming the parameter, for a host
name that does not resolve or an unknown protocol in inet_protocols.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from sdmail.core.address import IPAddress, is_ip_address

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")
LOOPBACK = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})
_PROTOCOLS = {"ipv4": 4, "ipv6": 6}


class InterfaceError(ValueError):
    """An interface list that cannot be turned into addresses; the text names the parameter."""


def _local_ipv4_from_fib_trie(text: str) -> set[IPAddress]:
    """The addresses of `|-- a.b.c.d` lines followed by a `/32 host LOCAL` line."""
    found: set[IPAddress] = set()
    candidate = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            candidate = stripped[3:].strip()
        elif candidate and stripped.startswith("/32 host LOCAL"):
            if is_ip_address(candidate):
                found.add(ipaddress.ip_address(candidate))
        elif not stripped.startswith("/"):
            candidate = None
    return found


def _ipv6_from_if_inet6(text: str) -> set[IPAddress]:
    """The first column of each line: 32 hex digits of an address."""
    found: set[IPAddress] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
            except ValueError:
                continue
    return found


def _addresses_of_host(name: str) -> set[IPAddress]:
    """The addresses NAME resolves to; raises OSError when it does not."""
    found: set[IPAddress] = set()
    for *_, sockaddr in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP):
        text = str(sockaddr[0]).partition("%")[0]
        if is_ip_address(text):
            found.add(ipaddress.ip_address(text))
    return found


def machine_addresses() -> frozenset[IPAddress]:
    """Every address of this machine (inet_interfaces = all)."""
    found: set[IPAddress] = set()
    with contextlib.suppress(OSError):
        found |= _local_ipv4_from_fib_trie(FIB_TRIE.read_text())
    with contextlib.suppress(OSError):
        found |= _ipv6_from_if_inet6(IF_INET6.read_text())
    if not found:
        # No /proc (another kernel, a restricted sandbox): what the host name says.
        try:
            found = _addresses_of_host(socket.gethostname())
        except OSError:
            found = set()
    return frozenset(found | LOOPBACK)


def _protocol_filter(inet_protocols: Iterable[str]) -> set[int]:
    versions: set[int] = set()
    for protocol in inet_protocols:
        name = protocol.lower()
        if name == "all":
            versions |= {4, 6}
        elif name in _PROTOCOLS:
            versions.add(_PROTOCOLS[name])
        else:
            raise InterfaceError(f'inet_protocols: unknown protocol: "{protocol}"')
    return versions


def interface_addresses(
    items: Sequence[str], inet_protocols: Sequence[str], *, name: str
) -> frozenset[IPAddress]:
    """The addresses of an interface list (parameter NAME), in the protocols in use."""
    versions = _protocol_filter(inet_protocols)
    found: set[IPAddress] = set()
    for item in items:
        folded = item.lower()
        bare = item[1:-1] if item.startswith("[") and item.endswith("]") else item
        if folded == "all":
            found |= machine_addresses()
        elif folded == "loopback-only":
            found |= LOOPBACK
        elif is_ip_address(bare):
            found.add(ipaddress.ip_address(bare))
        else:
            try:
                found |= _addresses_of_host(item)
            except (OSError, UnicodeError):
                raise InterfaceError(f"{name}: host not found: {item}") from None
    return frozenset(address for address in found if address.version in versions)
