"""sdmail.core.dns against a real DNS server on loopback (tests/peers/dns_server.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.dns import (
    DnsError,
    Failure,
    MxRecord,
    Resolver,
    ResolverConfig,
    ResolverConfigError,
    read_resolv_conf,
)
from tests.peers.dns_server import DnsServer

ZONE = {
    ("example.test", "MX"): ["20 mx2.example.test.", "10 mx1.example.test."],
    ("mx1.example.test", "A"): ["192.0.2.1", "192.0.2.11"],
    ("mx1.example.test", "AAAA"): ["2001:db8::1"],
    ("mx2.example.test", "A"): ["192.0.2.2"],
    ("v6only.example.test", "AAAA"): ["2001:db8::6"],
    ("nomx.example.test", "A"): ["192.0.2.3"],
    ("null.example.test", "MX"): ["0 ."],
    ("_25._tcp.mx1.example.test", "TLSA"): ["3 1 1 " + "ab" * 32],
}


@pytest.fixture
def server():
    with DnsServer(
        ZONE,
        secure=["example.test", "_25._tcp.mx1.example.test"],
        servfail=["broken.example.test"],
        silent=["slow.example.test"],
    ) as running:
        yield running


def resolver_for(server: DnsServer, tmp_path: Path) -> Resolver:
    return Resolver(read_resolv_conf(server.resolv_conf(tmp_path / "resolv.conf")))


def run(coroutine):
    return asyncio.run(coroutine)


# -- MX ------------------------------------------------------------------------------------------
def test_mx_records_come_sorted_by_preference_with_the_ad_bit(server, tmp_path) -> None:
    answer = run(resolver_for(server, tmp_path).mx("example.test"))
    assert answer.records == (MxRecord(10, "mx1.example.test"), MxRecord(20, "mx2.example.test"))
    assert answer.secure
    assert not answer.null_mx


def test_a_domain_without_mx_records_answers_empty_not_an_error(server, tmp_path) -> None:
    answer = run(resolver_for(server, tmp_path).mx("nomx.example.test"))
    assert answer.records == ()
    assert not answer.secure


def test_null_mx_is_recognised(server, tmp_path) -> None:
    assert run(resolver_for(server, tmp_path).mx("null.example.test")).null_mx


def test_nxdomain_is_permanent_with_postfix_wording(server, tmp_path) -> None:
    with pytest.raises(DnsError) as caught:
        run(resolver_for(server, tmp_path).mx("nowhere.example.test"))
    assert caught.value.failure is Failure.NOT_FOUND
    assert not caught.value.temporary
    assert str(caught.value) == (
        "Host or domain name not found. Name service error for "
        "name=nowhere.example.test type=MX: Host not found"
    )


def test_servfail_is_temporary(server, tmp_path) -> None:
    with pytest.raises(DnsError) as caught:
        run(resolver_for(server, tmp_path).mx("broken.example.test"))
    assert caught.value.temporary
    assert str(caught.value).endswith("type=MX: Host not found, try again")


def test_a_server_that_never_answers_is_temporary(server, tmp_path) -> None:
    with pytest.raises(DnsError) as caught:
        run(resolver_for(server, tmp_path).mx("slow.example.test"))
    assert caught.value.failure is Failure.TRY_AGAIN


def test_no_server_listening_is_temporary(tmp_path) -> None:
    resolver = Resolver(ResolverConfig(("127.0.0.1",), port=9, timeout=0.3, attempts=1))
    with pytest.raises(DnsError) as caught:
        run(resolver.mx("example.test"))
    assert caught.value.temporary


def test_a_name_that_cannot_be_a_domain_is_malformed(server, tmp_path) -> None:
    with pytest.raises(DnsError) as caught:
        run(resolver_for(server, tmp_path).mx("a" * 64 + ".example.test"))
    assert caught.value.failure is Failure.MALFORMED
    assert not caught.value.temporary


# -- addresses -----------------------------------------------------------------------------------
def test_addresses_give_ipv4_then_ipv6(server, tmp_path) -> None:
    answer = run(resolver_for(server, tmp_path).addresses("mx1.example.test"))
    assert sorted(answer.addresses[:2]) == ["192.0.2.1", "192.0.2.11"]
    assert answer.addresses[2:] == ("2001:db8::1",)


def test_addresses_of_one_family_only(server, tmp_path) -> None:
    resolver = resolver_for(server, tmp_path)
    assert sorted(run(resolver.addresses("mx1.example.test", ipv6=False)).addresses) == [
        "192.0.2.1",
        "192.0.2.11",
    ]
    assert run(resolver.addresses("mx1.example.test", ipv4=False)).addresses == ("2001:db8::1",)


def test_a_host_with_only_ipv6_has_no_data_for_ipv4(server, tmp_path) -> None:
    resolver = resolver_for(server, tmp_path)
    with pytest.raises(DnsError) as caught:
        run(resolver.addresses("v6only.example.test", ipv6=False))
    assert caught.value.failure is Failure.NO_DATA
    assert str(caught.value).endswith(
        "name=v6only.example.test type=A: Host found but no data record of requested type"
    )
    assert run(resolver.addresses("v6only.example.test")).addresses == ("2001:db8::6",)


def test_an_unknown_host_is_not_found(server, tmp_path) -> None:
    with pytest.raises(DnsError) as caught:
        run(resolver_for(server, tmp_path).addresses("ghost.example.test"))
    assert caught.value.failure is Failure.NOT_FOUND


# -- TLSA ----------------------------------------------------------------------------------------
def test_tlsa_records_with_their_dnssec_status(server, tmp_path) -> None:
    answer = run(resolver_for(server, tmp_path).tlsa("mx1.example.test", 25))
    assert answer.secure
    assert [(r.usage, r.selector, r.matching_type, r.data) for r in answer.records] == [
        (3, 1, 1, bytes.fromhex("ab" * 32))
    ]


def test_no_tlsa_records_is_an_empty_answer(server, tmp_path) -> None:
    answer = run(resolver_for(server, tmp_path).tlsa("mx2.example.test", 25))
    assert answer.records == ()


# -- resolv.conf ---------------------------------------------------------------------------------
def test_resolv_conf_servers_options_and_the_port_extension(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# written by hand\n"
        "search example.test\n"
        "nameserver 192.0.2.53\n"
        "nameserver 2001:db8::53 ; second\n"
        "options ndots:2 timeout:3 attempts:4 port:5353 rotate\n"
    )
    assert read_resolv_conf(path) == ResolverConfig(("192.0.2.53", "2001:db8::53"), 5353, 3.0, 4)


def test_resolv_conf_without_servers_means_the_local_host(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("domain example.test\n")
    assert read_resolv_conf(path).nameservers == ("127.0.0.1",)


def test_a_bad_nameserver_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\nnameserver dns.example.test\n")
    with pytest.raises(ResolverConfigError, match=r"resolv.conf, line 2: nameserver"):
        read_resolv_conf(path)


def test_a_bad_port_option_is_refused(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("options port:99999\n")
    with pytest.raises(ResolverConfigError, match="line 1: option 'port:99999'"):
        read_resolv_conf(path)


def test_a_missing_resolv_conf_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ResolverConfigError, match="No such file"):
        read_resolv_conf(tmp_path / "missing")


@given(st.text(max_size=300))
def test_any_resolv_conf_text_reads_or_fails_cleanly(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("conf") / "resolv.conf"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        config = read_resolv_conf(path)
    except ResolverConfigError as exc:
        assert "resolv.conf" in str(exc)
    else:
        assert config.nameservers
        assert 1 <= config.port <= 65535
