"""trivial_rewrite.interfaces: the machine's own addresses, from the real kernel."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sdmail.trivial_rewrite import interfaces
from sdmail.trivial_rewrite.interfaces import (
    LOOPBACK,
    InterfaceError,
    interface_addresses,
    machine_addresses,
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_all_includes_loopback_and_every_local_ipv4_address_of_the_kernel() -> None:
    found = machine_addresses()
    assert found >= LOOPBACK
    fib_trie = Path("/proc/net/fib_trie")
    if fib_trie.exists():
        lines = [line.strip() for line in fib_trie.read_text().splitlines()]
        local = {
            ip(lines[i][3:].strip())
            for i in range(len(lines) - 1)
            if lines[i].startswith("|--") and lines[i + 1].startswith("/32 host LOCAL")
        }
        assert local <= found


def test_all_without_proc_falls_back_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc is the door here: a sandbox may hide it.
    monkeypatch.setattr(interfaces, "FIB_TRIE", tmp_path / "missing")
    monkeypatch.setattr(interfaces, "IF_INET6", tmp_path / "missing6")
    assert machine_addresses() >= LOOPBACK


def test_fib_trie_parsing_takes_only_host_local_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fib = tmp_path / "fib_trie"
    fib.write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "     |-- 127.0.0.0\n        /8 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n"
        "     |-- 198.51.100.7\n        /32 host LOCAL\n"
        "     |-- 198.51.100.255\n        /32 link BROADCAST\n"
    )
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("20010db8000000000000000000000005 02 40 00 80     eth0\n")
    monkeypatch.setattr(interfaces, "FIB_TRIE", fib)
    monkeypatch.setattr(interfaces, "IF_INET6", inet6)
    assert machine_addresses() == LOOPBACK | {ip("198.51.100.7"), ip("2001:db8::5")}


def test_loopback_only_and_literal_addresses() -> None:
    found = interface_addresses(
        ["loopback-only", "192.0.2.9", "[2001:db8::9]"], ["all"], name="inet_interfaces"
    )
    assert found == LOOPBACK | {ip("192.0.2.9"), ip("2001:db8::9")}


def test_inet_protocols_filters_addresses() -> None:
    only_v4 = interface_addresses(["loopback-only"], ["ipv4"], name="inet_interfaces")
    assert only_v4 == {ip("127.0.0.1")}
    only_v6 = interface_addresses(["loopback-only"], ["ipv6"], name="inet_interfaces")
    assert only_v6 == {ip("::1")}


def test_host_names_are_resolved() -> None:
    assert ip("127.0.0.1") in interface_addresses(["localhost"], ["all"], name="inet_interfaces")


def test_unresolvable_host_names_the_parameter() -> None:
    with pytest.raises(InterfaceError, match=r"^proxy_interfaces: host not found: no\.such"):
        interface_addresses(["no.such.host.invalid"], ["all"], name="proxy_interfaces")


def test_unknown_protocol_is_an_error() -> None:
    with pytest.raises(InterfaceError, match="inet_protocols: unknown protocol"):
        interface_addresses(["all"], ["ipx"], name="inet_interfaces")
