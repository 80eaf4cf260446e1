"""smtpd/dnsbl.py without a network: blocklist syntax, query names, filters; and the
restrictions' configuration errors. Lookups against a real DNS server are in
tests/process/test_smtpd_rbl.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.config import ConfigError
from sdmail.core.dns import DnsError
from sdmail.smtpd.dnsbl import (
    Blocklist,
    BlocklistError,
    Dns,
    client_query,
    domain_query,
    parse_blocklist,
)


def test_a_zone_alone_lists_any_answer():
    blocklist = parse_blocklist("Zen.Example.")
    assert blocklist == Blocklist("zen.example")
    assert blocklist.matches("127.0.0.2") and blocklist.matches("10.1.2.3")


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("zen.example=127.0.0.2", ["127.0.0.2"], ["127.0.0.3", "127.0.1.2"]),
        ("zen.example=127.0.0.[2..11]", ["127.0.0.2", "127.0.0.11"], ["127.0.0.12"]),
        ("zen.example=127.0.[0;1].[2..4;10]", ["127.0.1.10", "127.0.0.3"], ["127.0.2.3"]),
    ],
)
def test_filters(text, inside, outside):
    blocklist = parse_blocklist(text)
    assert all(blocklist.matches(a) for a in inside)
    assert not any(blocklist.matches(a) for a in outside)
    assert not blocklist.matches("::1")


@pytest.mark.parametrize(
    "text",
    ["", "=127.0.0.2", "zen.example=127.0.0", "zen.example=127.0.0.256", "zen.example=1.2.3.[4..]"],
)
def test_malformed_blocklists(text):
    with pytest.raises(BlocklistError):
        parse_blocklist(text)


@given(st.text(alphabet="0123456789.[];=abz", max_size=40))
def test_any_blocklist_text_parses_or_is_a_blocklist_error(text):
    try:
        blocklist = parse_blocklist(text)
    except BlocklistError:
        return
    assert blocklist.zone and "=" not in blocklist.zone
    assert blocklist.zone == text.partition("=")[0].strip().rstrip(".").lower()


def test_query_names():
    assert client_query("192.0.2.10", "zen.example") == "10.2.0.192.zen.example"
    assert client_query("2001:db8::1", "zen.example").startswith("1.0.0.0.0.0.0.0.")
    assert client_query("2001:db8::1", "zen.example").endswith(".8.b.d.0.1.0.0.2.zen.example")
    assert client_query("unknown", "zen.example") is None
    assert domain_query("spam.example.", "dbl.example") == "spam.example.dbl.example"
    assert domain_query("[192.0.2.1]", "dbl.example") is None
    assert domain_query("unknown", "dbl.example") is None


def test_a_resolv_conf_that_cannot_be_read_is_a_temporary_dns_failure(tmp_path, caplog):
    with pytest.raises(DnsError) as failed:
        Dns(resolv_conf=str(tmp_path / "absent")).addresses("example.org")
    assert failed.value.temporary
    assert f"cannot read the resolver configuration: {tmp_path / 'absent'}" in caplog.text


def test_a_bad_blocklist_in_a_restriction_names_the_parameter(world):
    with pytest.raises(ConfigError, match="smtpd_client_restrictions: reject_rbl_client: bad"):
        world.service("smtpd_client_restrictions = reject_rbl_client zen.example=1.2\n")
