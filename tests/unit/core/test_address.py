"""sdmail.core.address: RFC 5321 paths, RFC 5322 headers, quoting, IDNA, extensions."""

from __future__ import annotations

import contextlib
import ipaddress
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sdmail.core.address import (
    AddressError,
    HeaderAddress,
    domain_to_ascii,
    domain_to_unicode,
    is_dot_atom,
    is_ip_address,
    is_valid_hostname,
    lookup_key,
    needs_smtputf8,
    parse_address_literal,
    parse_header_addresses,
    parse_path,
    quote_address,
    quote_local,
    split_address,
    split_extension,
    strip_extension,
    with_ascii_domain,
    with_unicode_domain,
)

# --------------------------------------------------------------------------------------
# RFC 5321 paths
# --------------------------------------------------------------------------------------
PATHS = [
    ("<john@example.com>", "john@example.com"),
    ("<>", ""),
    ("  <john@example.com>  ", "john@example.com"),
    ("john@example.com", "john@example.com"),
    ("<@a.example,@b.example:user@c.example>", "user@c.example"),
    ("<@a.example:user@c.example>", "user@c.example"),
    ('<"john doe"@example.com>', "john doe@example.com"),
    ('<"john"@example.com>', "john@example.com"),
    ('<"a\\"b\\\\c"@example.com>', 'a"b\\c@example.com'),
    ('<"a@b"@example.com>', "a@b@example.com"),
    ('<""@example.com>', "@example.com"),
    ("<jöhn@bücher.example>", "jöhn@bücher.example"),
    ("<用户@例子.广告>", "用户@例子.广告"),
    ("<user@[192.0.2.1]>", "user@[192.0.2.1]"),
    ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
    ("<user@[ipv6:::1]>", "user@[ipv6:::1]"),
    ("<Postmaster>", "Postmaster"),
    ("<John.Doe@Example.COM>", "John.Doe@Example.COM"),
    ("<user%other.example@example.com>", "user%other.example@example.com"),
    ("<site!user@example.com>", "site!user@example.com"),
    ("<john..doe@example.com>", "john..doe@example.com"),
    ("<user+tag@example.com>", "user+tag@example.com"),
    ("<user@example.com.>", "user@example.com."),
]


@pytest.mark.parametrize(("text", "internal"), PATHS)
def test_parse_path_gives_internal_form(text: str, internal: str) -> None:
    assert parse_path(text) == internal


BAD_PATHS = [
    ("<john@example.com", "unbalanced angle brackets"),
    ("john@example.com>", "unbalanced angle brackets"),
    ("<<john@example.com>>", "unbalanced angle brackets"),
    ("<", "unbalanced angle brackets"),
    ("<john@example.com\r\n>", "line break"),
    ("<john\n@example.com>", "line break"),
    ("<john\0@example.com>", "NUL"),
    ("<jo\x07hn@example.com>", "control character"),
    ("<jo\udc80hn@example.com>", "not valid UTF-8"),
    ("<@example.com>", "missing local part"),
    ("<@a.example,b.example:user@c>", "bad source route"),
    ("<john@>", "missing domain"),
    ("<john doe@example.com>", "not allowed unquoted"),
    ("<john(x)@example.com>", "not allowed unquoted"),
    ("<a@b@c.example>", "not allowed in domain"),
    ("<john@exa mple.com>", "not allowed in domain"),
    ("<john@exa!mple.com>", "not allowed in domain"),
    ('<"john@example.com>', "unbalanced quotes"),
    ('<"john"x@example.com>', "after quoted local part"),
    ("<john@[192.0.2.1>", "address literal"),
    ("<john@[192.0.2]>", "IPv4 address literal"),
    ("<john@[2001:db8::1]>", "address literal"),
    ("<john@[IPv6:fe80::1%eth0]>", "IPv6 address literal"),
    ("<john@[tag:stuff]>", "address literal"),
    ("<john@" + "a" * 64 + ".example>", "label too long"),
    ("<" + "a" * 243 + "@example.com>", "longer than 254 octets"),
    ("John <john@example.com>", "unbalanced angle brackets"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PATHS)
def test_malformed_path_raises_address_error_saying_why(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_path(text)


def test_strict_path_requires_angle_brackets() -> None:
    with pytest.raises(AddressError, match="enclosed in <>"):
        parse_path("john@example.com", strict=True)
    assert parse_path("<john@example.com>", strict=True) == "john@example.com"


def test_address_of_exactly_254_octets_is_accepted() -> None:
    address = "a" * 242 + "@example.com"
    assert len(address) == 254
    assert parse_path(f"<{address}>") == address


def test_local_part_longer_than_64_octets_is_accepted() -> None:
    # SRS/VERP addresses exceed RFC 5321's 64 octets; Postfix accepts them.
    local = "bounce-" + "x" * 100
    assert parse_path(f"<{local}@example.com>") == f"{local}@example.com"


def test_length_limit_counts_utf8_octets() -> None:
    address = "ü" * 121 + "@example.com"  # 242 octets + 12
    assert parse_path(f"<{address}>") == address
    with pytest.raises(AddressError, match="254 octets"):
        parse_path(f"<ü{address}>")


def test_error_message_escapes_control_characters() -> None:
    with pytest.raises(AddressError) as caught:
        parse_path("<a\r\nRCPT TO:<b@c>>")
    assert "\r" not in str(caught.value) and "\n" not in str(caught.value)
    assert "\\x0d\\x0a" in str(caught.value)


# --------------------------------------------------------------------------------------
# Quoting
# --------------------------------------------------------------------------------------
QUOTED = [
    ("john@example.com", "john@example.com"),
    ("john doe@example.com", '"john doe"@example.com'),
    ("john.doe@example.com", "john.doe@example.com"),
    ("john..doe@example.com", '"john..doe"@example.com'),
    (".john@example.com", '".john"@example.com'),
    ("john.@example.com", '"john."@example.com'),
    ('a"b@example.com', '"a\\"b"@example.com'),
    ("a\\b@example.com", '"a\\\\b"@example.com'),
    ("a@b@example.com", '"a@b"@example.com'),
    ("@example.com", '""@example.com'),
    ("user+tag@example.com", "user+tag@example.com"),
    ("site!user%host@example.com", "site!user%host@example.com"),
    ("jöhn@bücher.example", "jöhn@bücher.example"),
    ("john doe", '"john doe"'),
    ("postmaster", "postmaster"),
    ("", ""),
]


@pytest.mark.parametrize(("internal", "external"), QUOTED)
def test_quote_address_follows_rfc5322(internal: str, external: str) -> None:
    assert quote_address(internal) == external


@pytest.mark.parametrize("internal", ["a\r\nb@example.com", "a@exam\nple.com", "a\0@x"])
def test_quote_address_refuses_control_characters(internal: str) -> None:
    with pytest.raises(AddressError):
        quote_address(internal)


def test_quote_local_of_empty_local_part_is_empty_quoted_string() -> None:
    assert quote_local("") == '""'
    assert not is_dot_atom("")


# --------------------------------------------------------------------------------------
# RFC 5322 headers
# --------------------------------------------------------------------------------------
HEADERS = [
    ("john@example.com", [("", "john@example.com")]),
    ("John Doe <john@example.com>", [("John Doe", "john@example.com")]),
    (
        '"Doe, John" <john@example.com>, jane@example.com',
        [("Doe, John", "john@example.com"), ("", "jane@example.com")],
    ),
    ("John Q. Public <jqp@example.com>", [("John Q. Public", "jqp@example.com")]),
    ("jqp@example.com (John Q. Public)", [("", "jqp@example.com")]),
    ("undisclosed-recipients:;", []),
    ("undisclosed-recipients:", []),
    (
        "team: a@example.com, Bee <b@example.com>;, c@example.com",
        [("", "a@example.com"), ("Bee", "b@example.com"), ("", "c@example.com")],
    ),
    ("bob", [("", "bob")]),
    ("bob, alice", [("", "bob"), ("", "alice")]),
    ("<>, x@example.com", [("", "x@example.com")]),
    ('"john doe"@example.com', [("", "john doe@example.com")]),
    ('"john"."doe"@example.com', [("", "john.doe@example.com")]),
    ("john @ example . com", [("", "john@example.com")]),
    ("<@relay.example:john@example.com>", [("", "john@example.com")]),
    ("a@example.com,,b@example.com,", [("", "a@example.com"), ("", "b@example.com")]),
    ("John\r\n Doe <john@example.com>", [("John Doe", "john@example.com")]),
    ("a@example.com,\r\n\tb@example.com", [("", "a@example.com"), ("", "b@example.com")]),
    ("(nested (comment)) a@example.com", [("", "a@example.com")]),
    ("Jörg <jörg@bücher.example>", [("Jörg", "jörg@bücher.example")]),
    ("user@[192.0.2.1]", [("", "user@[192.0.2.1]")]),
    ("", []),
]


@pytest.mark.parametrize(("value", "expected"), HEADERS)
def test_parse_header_addresses(value: str, expected: list[tuple[str, str]]) -> None:
    assert parse_header_addresses(value) == [HeaderAddress(n, a) for n, a in expected]


BAD_HEADERS = [
    ("John <john@example.com", "unbalanced angle brackets"),
    ('"John <john@example.com>', "unbalanced quotes"),
    ("(John <john@example.com>", "unbalanced parentheses"),
    ("John) <john@example.com>", "unexpected"),
    ("a@example.com b@example.com", "unexpected"),
    ("john doe@example.com", "unquoted white space"),
    ("a: b: c@example.com;;", "group inside a group"),
    ("john@", "missing domain"),
    ("<john@example.com> trailing", "unexpected"),
    ("a@[192.0.2.1", "domain literal"),
    ("a@example.com\r\nBcc: victim@example.com", "line break"),
    ("a\0@example.com", "NUL"),
    ("> a@example.com", "expected an address"),
]


@pytest.mark.parametrize(("value", "message"), BAD_HEADERS)
def test_malformed_header_raises_address_error(value: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_header_addresses(value)


# --------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------
def test_idna_conversions_between_u_labels_and_a_labels() -> None:
    assert domain_to_ascii("bücher.example") == "xn--bcher-kva.example"
    assert domain_to_ascii("Example.COM") == "Example.COM"
    assert domain_to_unicode("xn--bcher-kva.example") == "bücher.example"
    assert domain_to_unicode("XN--BCHER-KVA.example") == "bücher.example"
    assert domain_to_unicode("example.com") == "example.com"
    assert with_ascii_domain("jöhn@bücher.example") == "jöhn@xn--bcher-kva.example"
    assert with_unicode_domain("john@xn--bcher-kva.example") == "john@bücher.example"
    assert with_ascii_domain("bob") == "bob"


@pytest.mark.parametrize("domain", ["ü" * 64 + ".example", "a ü.example", "ü\x00.example"])
def test_domain_idna_cannot_encode_raises_address_error(domain: str) -> None:
    with pytest.raises(AddressError):
        domain_to_ascii(domain)


@pytest.mark.parametrize("domain", ["xn--zz.example", "xn--.example", "xn--a-ecp\x01.ru"])
def test_bad_a_label_raises_address_error(domain: str) -> None:
    with pytest.raises(AddressError):
        domain_to_unicode(domain)


@pytest.mark.parametrize(
    ("domain", "valid"),
    [
        ("example.com", True),
        ("mail_01.example.com", True),
        ("bücher.example", True),
        ("localhost", True),
        ("123.example", True),
        ("1.2.3.4", False),
        ("123", False),
        ("", False),
        ("example..com", False),
        ("example.com.", False),
        (".example.com", False),
        ("-example.com", False),
        ("example-.com", False),
        ("exa mple.com", False),
        ("a" * 64 + ".com", False),
        ("a" * 63 + ".com", True),
        (".".join(["a" * 63] * 4), True),
        (".".join(["a" * 63] * 4 + ["b"]), False),
    ],
)
def test_is_valid_hostname_follows_postfix(domain: str, valid: bool) -> None:
    assert is_valid_hostname(domain) is valid


def test_parse_address_literal() -> None:
    assert parse_address_literal("[192.0.2.1]") == ipaddress.ip_address("192.0.2.1")
    assert parse_address_literal("[IPv6:2001:db8::1]") == ipaddress.ip_address("2001:db8::1")
    for bad in ["192.0.2.1", "[]", "[IPv6:]", "[IPv6:1.2.3.4]", "[01.2.3.4]", "[1.2.3.256]"]:
        with pytest.raises(AddressError):
            parse_address_literal(bad)


def test_is_ip_address() -> None:
    assert is_ip_address("192.0.2.1") and is_ip_address("2001:db8::1")
    assert not is_ip_address("fe80::1%eth0") and not is_ip_address("example.com")


def test_needs_smtputf8_for_any_non_ascii() -> None:
    assert needs_smtputf8("jöhn@example.com") and needs_smtputf8("john@bücher.example")
    assert not needs_smtputf8("john@example.com")


def test_lookup_key_folds_case() -> None:
    assert lookup_key("John.Doe@Example.COM") == "john.doe@example.com"
    assert lookup_key("JÖRG@BÜCHER.example") == "jörg@bücher.example"


# --------------------------------------------------------------------------------------
# Extensions
# --------------------------------------------------------------------------------------
def _split(
    local: str, delimiters: str = "+", owner_request_special: bool = True
) -> tuple[str, str]:
    return split_extension(
        local,
        delimiters,
        owner_request_special=owner_request_special,
        double_bounce_sender="double-bounce",
    )


@pytest.mark.parametrize(
    ("local", "delimiters", "expected"),
    [
        ("user+foo", "+", ("user", "+foo")),
        ("user+foo+bar", "+", ("user", "+foo+bar")),
        ("user+", "+", ("user", "+")),
        ("+foo", "+", ("+foo", "")),
        ("user", "+", ("user", "")),
        ("user+foo", "", ("user+foo", "")),
        ("user-foo+bar", "+-", ("user", "-foo+bar")),
        ("Postmaster+x", "+", ("Postmaster", "+x")),
        ("Postmaster", "+", ("Postmaster", "")),
        ("postmaster", "+", ("postmaster", "")),
        ("MAILER-DAEMON", "-", ("MAILER-DAEMON", "")),
        ("double-bounce", "-", ("double-bounce", "")),
        ("owner-list", "-", ("owner-list", "")),
        ("list-request", "-", ("list-request", "")),
        ("owner-list", "+", ("owner-list", "")),
        ("owner+list", "+", ("owner", "+list")),
    ],
)
def test_split_extension(local: str, delimiters: str, expected: tuple[str, str]) -> None:
    assert _split(local, delimiters) == expected


def test_owner_request_special_off_splits_owner_and_request() -> None:
    assert _split("owner-list", "-", owner_request_special=False) == ("owner", "-list")
    assert _split("list-request", "-", owner_request_special=False) == ("list", "-request")


def test_strip_extension_keeps_domain() -> None:
    def strip(address: str) -> str:
        return strip_extension(
            address, "+", owner_request_special=True, double_bounce_sender="double-bounce"
        )

    assert strip("user+foo@example.com") == "user@example.com"
    assert strip("user+foo") == "user"
    assert strip("a+b@c+d@example.com") == "a@example.com"
    assert split_address("a@b@c") == ("a@b", "c")
    assert split_address("bob") == ("bob", "")


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_u_label = st.text(alphabet="äöüßéñ中文ü" + string.ascii_lowercase, min_size=1, max_size=10)
_domain = st.lists(st.one_of(_label, _u_label), min_size=1, max_size=4).map(".".join)
_literal = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: f"[{ip}]"),
    st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]"),
)
_local_char = st.characters(
    codec="utf-8", exclude_categories=["Cc", "Cs"], exclude_characters="\x7f"
)
_local = st.text(alphabet=_local_char, max_size=40)
_address = st.builds(
    lambda local, domain: f"{local}@{domain}", _local, st.one_of(_domain, _literal)
)


@given(_address)
def test_parse_path_of_quoted_address_round_trips(address: str) -> None:
    external = quote_address(address)
    assume(len(external.encode()) <= 254)
    assert parse_path(f"<{external}>") == address


@given(_address)
def test_header_parse_of_quoted_address_round_trips(address: str) -> None:
    external = quote_address(address)
    assume(len(external.encode()) <= 254)
    assert parse_header_addresses(f"Someone <{external}>") == [HeaderAddress("Someone", address)]
    assert parse_header_addresses(external) == [HeaderAddress("", address)]


@given(st.text(max_size=300))
def test_parse_path_of_arbitrary_text_raises_only_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_path(text)


_hostile_alphabet = st.sampled_from([*'<>()[]:;@\\,."! %\r\n\t\0\x7f', "a", "ü", "\udc80"])


@given(st.one_of(st.text(max_size=300), st.text(alphabet=_hostile_alphabet, max_size=60)))
def test_parse_header_of_arbitrary_text_raises_only_address_error(text: str) -> None:
    try:
        found = parse_header_addresses(text)
    except AddressError:
        return
    for item in found:
        # Whatever parses can be printed again without injecting a line.
        assert "\n" not in quote_address(item.address)


@given(st.text(alphabet=_hostile_alphabet, max_size=60))
def test_parse_path_of_hostile_text_raises_only_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_path(f"<{text}>")


@given(st.text(max_size=80))
def test_domain_conversions_raise_only_address_error(text: str) -> None:
    for convert in (domain_to_ascii, domain_to_unicode):
        with contextlib.suppress(AddressError):
            convert(text)
    is_valid_hostname(text)
