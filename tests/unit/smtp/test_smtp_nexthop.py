"""smtp/nexthop.py: the next-hop forms of transport(5), relayhost and lmtp."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.smtp.nexthop import (
    InetDestination,
    NexthopError,
    UnixDestination,
    parse_lmtp_nexthop,
    parse_smtp_nexthop,
)


def test_a_domain_is_looked_up_by_mx_on_the_default_port() -> None:
    assert parse_smtp_nexthop("example.org", 25) == [
        InetDestination("example.org", "example.org", 25, lookup_mx=True)
    ]


def test_a_domain_with_a_port_keeps_the_mx_lookup() -> None:
    [dest] = parse_smtp_nexthop("example.org:2525", 25)
    assert (dest.host, dest.port, dest.lookup_mx) == ("example.org", 2525, True)


def test_brackets_turn_off_the_mx_lookup() -> None:
    [dest] = parse_smtp_nexthop("[smtp.isp.example]:587", 25)
    assert (dest.host, dest.port, dest.lookup_mx) == ("smtp.isp.example", 587, False)
    assert dest.literal_address is None


def test_address_literals_need_no_dns() -> None:
    [v4, v6] = parse_smtp_nexthop("[192.0.2.1], [ipv6:2001:db8::1]:26", 25)
    assert v4.literal_address == "192.0.2.1"
    assert (v6.literal_address, v6.port) == ("2001:db8::1", 26)


def test_a_list_is_tried_in_order() -> None:
    hosts = [d.host for d in parse_smtp_nexthop("a.example, b.example c.example", 25)]
    assert hosts == ["a.example", "b.example", "c.example"]


def test_a_service_name_is_a_port() -> None:
    assert parse_smtp_nexthop("[relay.example]:submission", 25)[0].port == 587


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty next-hop"),
        ("[relay.example", "missing ']'"),
        ("[relay.example]x", "garbage after"),
        ("relay.example:99999", "bad network port"),
        ("relay.example:nosuchservice", "unknown service"),
        ("2001:db8::1", "must be in brackets"),
        ("[]:25", "empty host"),
    ],
)
def test_bad_next_hops_say_why(text: str, why: str) -> None:
    with pytest.raises(NexthopError, match=why):
        parse_smtp_nexthop(text, 25)


def test_lmtp_unix_socket() -> None:
    assert parse_lmtp_nexthop("unix:/run/dovecot/lmtp", 24) == [
        UnixDestination("unix:/run/dovecot/lmtp", "/run/dovecot/lmtp")
    ]


def test_lmtp_unix_socket_must_be_absolute() -> None:
    with pytest.raises(NexthopError, match="absolute path"):
        parse_lmtp_nexthop("unix:private/dovecot-lmtp", 24)


def test_lmtp_inet_defaults_to_port_24_without_mx() -> None:
    [dest] = parse_lmtp_nexthop("inet:mail.example", 24)
    assert (dest.host, dest.port, dest.lookup_mx) == ("mail.example", 24, False)
    [dest] = parse_lmtp_nexthop("inet:[192.0.2.7]:2424", 24)
    assert (dest.literal_address, dest.port) == ("192.0.2.7", 2424)


@given(st.text(max_size=80))
def test_any_next_hop_parses_or_fails_cleanly(text: str) -> None:
    for parse in (parse_smtp_nexthop, parse_lmtp_nexthop):
        try:
            destinations = parse(text, 25)
        except NexthopError:
            continue
        assert destinations
        for dest in destinations:
            if isinstance(dest, InetDestination):
                assert dest.host and 0 < dest.port < 65536
