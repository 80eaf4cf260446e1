"""sdmail.core.match_list: string, domain, network and host lists as Postfix matches them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.match_list import (
    DomainList,
    MatchListError,
    NamadrList,
    NetworkList,
    StringList,
    is_table_spec,
    open_registered_table,
    parse_network,
)


class FakeTable:
    """A table at the door: a dict, a record of the keys asked, and failure on demand."""

    def __init__(self, entries: dict[str, str], *, fixed: bool = True) -> None:
        self.entries = entries
        self.fixed = fixed
        self.asked: list[str] = []
        self.broken = False

    def lookup(self, key: str) -> str | None:
        self.asked.append(key)
        if self.broken:
            raise OSError("table unreadable")
        return self.entries.get(key)


class FakeTables:
    """A table opener over named FakeTables that counts how often each is opened."""

    def __init__(self, **tables: FakeTable) -> None:
        self.tables = {f"hash:/etc/sdmail/{name}": table for name, table in tables.items()}
        self.opened: list[str] = []

    def __call__(self, spec: str) -> FakeTable:
        self.opened.append(spec)
        if spec not in self.tables:
            raise MatchListError(f"open {spec}: no such table")
        return self.tables[spec]


# --------------------------------------------------------------------------------------
# StringList
# --------------------------------------------------------------------------------------
def test_string_list_matches_exactly_and_ignores_case() -> None:
    mydestination = StringList("example.com, localhost.localdomain localhost")
    assert mydestination.matches("example.com")
    assert mydestination.matches("LocalHost")
    assert not mydestination.matches("a.example.com")
    assert not mydestination.matches("xexample.com")


def test_string_list_dot_pattern_does_not_match_subdomains() -> None:
    # mydestination only ever matches exactly.
    assert not StringList(".example.com").matches("a.example.com")


def test_string_list_table_is_asked_for_the_whole_folded_string() -> None:
    virtual = FakeTable({"example.com": "anything"})
    tables = FakeTables(virtual=virtual)
    domains = StringList("hash:/etc/sdmail/virtual", tables)
    assert domains.matches("Example.COM")
    assert not domains.matches("a.example.com")
    assert virtual.asked == ["example.com", "a.example.com"]


def test_empty_list_matches_nothing() -> None:
    assert not StringList("").matches("")
    assert not DomainList([], parent_matches_subdomains=True).matches("example.com")
    assert not NetworkList("").matches("127.0.0.1")


# --------------------------------------------------------------------------------------
# DomainList
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("domain", "parent_style", "expected"),
    [
        ("example.com", True, True),
        ("mail.example.com", True, True),
        ("a.b.example.com", True, True),
        ("xexample.com", True, False),
        ("example.org", True, False),
        ("sub.example.org", True, True),
        ("example.com", False, True),
        ("mail.example.com", False, False),
        ("example.org", False, False),
        ("sub.example.org", False, True),
        ("a.sub.example.org", False, True),
    ],
)
def test_domain_list_parent_style(domain: str, parent_style: bool, expected: bool) -> None:
    patterns = "example.com" if parent_style else "example.com .example.org"
    if parent_style:
        patterns += " sub.example.org"
    relay_domains = DomainList(patterns, parent_matches_subdomains=parent_style)
    assert relay_domains.matches(domain) is expected


def test_domain_list_dot_pattern_in_parent_style_matches_nothing_as_in_postfix() -> None:
    relay_domains = DomainList(".example.org", parent_matches_subdomains=True)
    assert not relay_domains.matches("a.example.org")
    assert not relay_domains.matches("example.org")


def test_first_match_wins_and_negation_excludes() -> None:
    relay_domains = DomainList("!internal.example.com, example.com", parent_matches_subdomains=True)
    assert relay_domains.matches("www.example.com")
    assert not relay_domains.matches("internal.example.com")
    assert not relay_domains.matches("host.internal.example.com")
    # Order matters: a positive pattern before the negation wins.
    reordered = DomainList("example.com, !internal.example.com", parent_matches_subdomains=True)
    assert reordered.matches("internal.example.com")


def test_double_negation_is_positive() -> None:
    assert DomainList("!!example.com", parent_matches_subdomains=False).matches("example.com")


def test_domain_table_asks_parents_in_dot_style_without_parent_matching() -> None:
    relay = FakeTable({".example.com": "OK"})
    relay_domains = DomainList(
        "hash:/etc/sdmail/relay", False, FakeTables(relay=relay), name="relay_domains"
    )
    assert relay_domains.matches("a.b.example.com")
    assert relay.asked == ["a.b.example.com", ".b.example.com", ".example.com"]
    relay.asked.clear()
    assert not relay_domains.matches("example.com")
    assert relay.asked == ["example.com", ".com"]


def test_domain_table_asks_bare_parents_in_parent_style() -> None:
    relay = FakeTable({"example.com": "OK"})
    relay_domains = DomainList("hash:/etc/sdmail/relay", True, FakeTables(relay=relay))
    assert relay_domains.matches("a.example.com")
    assert relay.asked == ["a.example.com", "example.com"]


def test_pattern_table_is_asked_only_for_the_whole_name() -> None:
    regexp = FakeTable({"example.com": "OK"}, fixed=False)
    relay_domains = DomainList("hash:/etc/sdmail/re", True, FakeTables(re=regexp))
    assert not relay_domains.matches("a.example.com")
    assert regexp.asked == ["a.example.com"]


def test_negated_table() -> None:
    blocked = FakeTable({"spam.example": "x"})
    lst = DomainList("!hash:/etc/sdmail/blocked, .example", False, FakeTables(blocked=blocked))
    assert not lst.matches("spam.example")
    assert lst.matches("ham.example")


def test_each_table_is_opened_once_when_the_list_is_built() -> None:
    relay = FakeTable({})
    tables = FakeTables(relay=relay)
    relay_domains = DomainList("hash:/etc/sdmail/relay", True, tables)
    for _ in range(3):
        relay_domains.matches("example.com")
    assert tables.opened == ["hash:/etc/sdmail/relay"]


def test_table_that_fails_during_lookup_is_not_no_match() -> None:
    relay = FakeTable({})
    relay_domains = DomainList("hash:/etc/sdmail/relay", True, FakeTables(relay=relay))
    relay.broken = True
    with pytest.raises(OSError, match="unreadable"):
        relay_domains.matches("example.com")


def test_table_that_cannot_be_opened_names_the_parameter() -> None:
    with pytest.raises(MatchListError, match=r"^relay_domains: open hash:/etc/sdmail/x"):
        DomainList("hash:/etc/sdmail/x", True, FakeTables(), name="relay_domains")


def test_inline_table_spec_with_braces_stays_one_item() -> None:
    seen: list[str] = []

    def opener(spec: str) -> FakeTable:
        seen.append(spec)
        return FakeTable({"a.example": "1"})

    lst = DomainList("inline:{ a.example=1, b.example=2 }, c.example", False, opener)
    assert seen == ["inline:{ a.example=1, b.example=2 }"]
    assert lst.matches("a.example") and lst.matches("c.example")


def test_unbalanced_brace_is_an_error() -> None:
    with pytest.raises(MatchListError, match="unbalanced"):
        DomainList("inline:{ a.example=1", False, FakeTables())


# --------------------------------------------------------------------------------------
# The real table registry (sdmail.core.tables), the default opener
# --------------------------------------------------------------------------------------
def test_default_opener_uses_the_table_registry(tmp_path: Path) -> None:
    relay = tmp_path / "relay"
    relay.write_text("example.com  OK\n")
    relay_domains = DomainList(f"texthash:{relay}, inline:{{ example.org=OK }}", True)
    assert relay_domains.matches("mx.Example.COM")
    assert relay_domains.matches("example.org")
    assert not relay_domains.matches("example.net")


def test_default_opener_reports_a_missing_table_as_match_list_error(tmp_path: Path) -> None:
    with pytest.raises(MatchListError, match=r"^relay_domains: .*missing"):
        DomainList(f"texthash:{tmp_path}/missing", True, name="relay_domains")
    with pytest.raises(MatchListError, match="unsupported dictionary type: nosuch"):
        open_registered_table("nosuch:/x")


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def test_file_items_are_read_one_per_line_with_comments(tmp_path: Path) -> None:
    listing = tmp_path / "relay_domains"
    listing.write_text("# our domains\nexample.com\n\n  example.net, example.org\n!bad.example\n")
    relay_domains = DomainList(f"{listing}, .example", False)
    assert relay_domains.matches("example.com")
    assert relay_domains.matches("example.org")
    assert not relay_domains.matches("bad.example")
    assert relay_domains.matches("good.example")


def test_file_may_name_another_file(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.write_text("inner.example\n")
    outer = tmp_path / "outer"
    outer.write_text(f"outer.example\n{inner}\n")
    lst = StringList(str(outer))
    assert lst.matches("inner.example") and lst.matches("outer.example")


def test_file_that_names_itself_is_an_error(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.write_text(f"{loop}\n")
    with pytest.raises(MatchListError, match="nested"):
        StringList(str(loop), name="mydestination")


def test_missing_file_names_parameter_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(MatchListError) as caught:
        StringList(str(missing), name="mydestination")
    assert str(caught.value) == f"mydestination: {missing}: open file: No such file or directory"


def test_bad_pattern_in_file_names_file_and_line(tmp_path: Path) -> None:
    networks = tmp_path / "networks"
    networks.write_text("127.0.0.0/8\n# comment\n192.0.2.1/24\n")
    with pytest.raises(MatchListError) as caught:
        NetworkList(str(networks), name="mynetworks")
    assert caught.value.path == str(networks) and caught.value.line == 3
    assert str(caught.value).startswith(f"mynetworks: {networks}, line 3: non-null host")


def test_file_name_with_nul_is_an_error() -> None:
    with pytest.raises(MatchListError, match="bad file name"):
        StringList("/etc/\0x", name="mydestination")


def test_negated_file_is_refused() -> None:
    with pytest.raises(MatchListError, match='no support for "!" before a file name'):
        StringList("!/etc/sdmail/domains")


# --------------------------------------------------------------------------------------
# NetworkList
# --------------------------------------------------------------------------------------
MYNETWORKS = "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128 192.0.2.7 !10.1.0.0/16 10.0.0.0/8"


@pytest.mark.parametrize(
    ("client", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.2.0.1", True),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("10.1.2.3", False),
        ("10.2.3.4", True),
        ("2001:db8::1", False),
        ("0:0:0:0:0:0:0:1", True),
        ("unknown", False),
        ("", False),
        ("fe80::1%eth0", False),
    ],
)
def test_network_list_matches_client_addresses(client: str, trusted: bool) -> None:
    assert NetworkList(MYNETWORKS, name="mynetworks").matches(client) is trusted


def test_network_list_ipv6_forms() -> None:
    mynetworks = NetworkList("[2001:db8::]/32, [2001:db8:1::5], 2001:db9::/48")
    assert mynetworks.matches("2001:db8:ffff::1")
    assert mynetworks.matches("2001:DB8:1::5")
    assert mynetworks.matches("2001:db9:0:0::7")
    assert not mynetworks.matches("2001:db9:1::7")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("192.0.2.1/24", 'perhaps you should use "192.0.2.0/24" instead'),
        ("[2001:db8::1]/32", 'perhaps you should use "[2001:db8::]/32" instead'),
        ("192.0.2.0/33", "bad net/mask pattern"),
        ("192.0.2.0/x", "bad address pattern"),
        ("example.com", "bad address pattern"),
        ("[192.0.2.1", "bad address pattern"),
        ("192.0.2", "bad address pattern"),
        ("[fe80::1%eth0]", "bad address pattern"),
    ],
)
def test_bad_network_pattern_is_an_error(pattern: str, message: str) -> None:
    with pytest.raises(MatchListError, match=f"^mynetworks: .*{re.escape(message)}"):
        NetworkList(pattern, name="mynetworks")


def test_network_table_is_asked_for_the_address_as_given() -> None:
    clients = FakeTable({"192.0.2.9": "OK"})
    mynetworks = NetworkList("hash:/etc/sdmail/clients", FakeTables(clients=clients))
    assert mynetworks.matches("192.0.2.9")
    assert not mynetworks.matches("not-an-address")
    assert clients.asked == ["192.0.2.9"]


def test_parse_network_and_table_spec_detection() -> None:
    assert str(parse_network("[::1]")) == "::1/128"
    assert str(parse_network("192.0.2.0/24")) == "192.0.2.0/24"
    assert is_table_spec("hash:/etc/x") and is_table_spec("inline:{a=b}")
    assert not is_table_spec("[::1]/128") and not is_table_spec("example.com")


# --------------------------------------------------------------------------------------
# NamadrList
# --------------------------------------------------------------------------------------
def test_namadr_list_matches_by_name_or_address() -> None:
    peers = NamadrList("example.com, 192.0.2.0/24, [2001:db8::1]", parent_matches_subdomains=True)
    assert peers.matches("mx.example.com", "198.51.100.1")
    assert peers.matches("unknown", "192.0.2.77")
    assert peers.matches("unknown", "2001:db8::1")
    assert not peers.matches("mx.example.org", "198.51.100.1")


def test_namadr_table_is_asked_for_name_then_address() -> None:
    access = FakeTable({"192.0.2.5": "OK"})
    peers = NamadrList("hash:/etc/sdmail/access", False, FakeTables(access=access))
    assert peers.matches("mx.example.com", "192.0.2.5")
    assert access.asked == ["mx.example.com", ".example.com", ".com", "192.0.2.5"]


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------
# No letters that could spell a real device such as /dev/stdin.
_hostile = st.text(alphabet="/![]{}:,. \t0123456789abcdef\0\udc80ü", max_size=40)


@given(st.one_of(st.text(max_size=60), _hostile))
def test_building_a_list_from_arbitrary_text_raises_only_match_list_error(text: str) -> None:
    def no_tables(spec: str) -> FakeTable:
        return FakeTable({})

    for build in (
        lambda: NetworkList(text, no_tables),
        lambda: DomainList(text, True, no_tables),
        lambda: NamadrList(text, False, no_tables),
        lambda: StringList(text, no_tables),
    ):
        try:
            built = build()
        except MatchListError:
            continue
        if isinstance(built, NamadrList):
            built.matches(text, text)
        else:
            built.matches(text)
