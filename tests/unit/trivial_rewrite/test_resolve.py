"""trivial_rewrite.resolve: address classes, transports, next hops, flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.core.config import load_config
from sdmail.core.match_list import LookupTable, MatchListError, open_registered_table
from sdmail.trivial_rewrite.resolve import (
    AddressClass,
    Resolved,
    ResolveError,
    ResolveFlag,
    Resolver,
    ResolveSettings,
)

LOCAL = AddressClass.LOCAL
ALIAS = AddressClass.VIRTUAL_ALIAS
VIRTUAL = AddressClass.VIRTUAL_MAILBOX
RELAY = AddressClass.RELAY
DEFAULT = AddressClass.DEFAULT
NONE = ResolveFlag.NONE
ROUTED = ResolveFlag.ROUTED
ERROR = ResolveFlag.ERROR

MAIN_CF = """\
myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost
inet_interfaces = loopback-only
proxy_interfaces = 192.0.2.77
virtual_alias_domains = valias.example
virtual_mailbox_domains = vmail.example
relay_domains = relay.example
"""


def resolver_from_main_cf(tmp_path: Path, *overrides: str, extra: str = "") -> Resolver:
    (tmp_path / "main.cf").write_text(MAIN_CF + extra)
    cfg = load_config(tmp_path, overrides=list(overrides))
    return Resolver(ResolveSettings.from_config(cfg))


# address -> (class, transport, nexthop, recipient, flags) under MAIN_CF's defaults
GOLDEN: list[tuple[str, tuple[AddressClass, str, str, str, ResolveFlag]]] = [
    # Local: mydestination, nexthop from local_transport = local:$myhostname.
    ("user@mail.example.com", (LOCAL, "local", "mail.example.com", "user@mail.example.com", NONE)),
    ("user@localhost", (LOCAL, "local", "mail.example.com", "user@localhost", NONE)),
    ("User@LocalHost", (LOCAL, "local", "mail.example.com", "User@LocalHost", NONE)),
    ("user@localhost.", (LOCAL, "local", "mail.example.com", "user@localhost", NONE)),
    ("user@localhost.example.com", (LOCAL, "local", "mail.example.com", "user@localhost.example.com", NONE)),
    ("user+ext@localhost", (LOCAL, "local", "mail.example.com", "user+ext@localhost", NONE)),
    ("user", (LOCAL, "local", "mail.example.com", "user@mail.example.com", NONE)),
    ("", (LOCAL, "local", "mail.example.com", "MAILER-DAEMON@mail.example.com", NONE)),
    ("@localhost", (LOCAL, "local", "mail.example.com", "MAILER-DAEMON@localhost", NONE)),
    # Local: [ip] of inet_interfaces and proxy_interfaces.
    ("user@[127.0.0.1]", (LOCAL, "local", "mail.example.com", "user@[127.0.0.1]", NONE)),
    ("user@[IPv6:::1]", (LOCAL, "local", "mail.example.com", "user@[IPv6:::1]", NONE)),
    ("user@[192.0.2.77]", (LOCAL, "local", "mail.example.com", "user@[192.0.2.77]", NONE)),
    ("user@[192.0.2.99]", (DEFAULT, "smtp", "[192.0.2.99]", "user@[192.0.2.99]", NONE)),
    # Virtual alias, virtual mailbox, relay, default.
    ("user@valias.example", (ALIAS, "error", "5.1.1 User unknown in virtual alias table", "user@valias.example", NONE)),
    ("user@vmail.example", (VIRTUAL, "virtual", "vmail.example", "user@vmail.example", NONE)),
    ("user@relay.example", (RELAY, "relay", "relay.example", "user@relay.example", NONE)),
    ("user@sub.relay.example", (RELAY, "relay", "sub.relay.example", "user@sub.relay.example", NONE)),
    ("user@sub.vmail.example", (DEFAULT, "smtp", "sub.vmail.example", "user@sub.vmail.example", NONE)),
    ("user@remote.example", (DEFAULT, "smtp", "remote.example", "user@remote.example", NONE)),
    ("user@bücher.example", (DEFAULT, "smtp", "bücher.example", "user@bücher.example", NONE)),
    ("user@sub.example.com", (DEFAULT, "smtp", "sub.example.com", "user@sub.example.com", NONE)),
    # Local domains are stripped repeatedly: routing through us is not local.
    ("user@remote.example@localhost", (DEFAULT, "smtp", "remote.example", "user@remote.example", NONE)),
    ("user%remote.example@localhost", (DEFAULT, "smtp", "remote.example", "user@remote.example", NONE)),
    ("remote.example!user@localhost", (DEFAULT, "smtp", "remote.example", "user@remote.example", NONE)),
    ("user%remote.example@mail.example.com@localhost", (DEFAULT, "smtp", "remote.example", "user@remote.example", NONE)),
    ("user@localhost@localhost", (LOCAL, "local", "mail.example.com", "user@localhost", NONE)),
    ("user%localhost@localhost", (LOCAL, "local", "mail.example.com", "user@localhost", NONE)),
    ("user%relay.example@localhost", (RELAY, "relay", "relay.example", "user@relay.example", NONE)),
    # Routing operators left in the local part: flagged, whatever the class.
    ("user@localhost@remote.example", (DEFAULT, "smtp", "remote.example", "user@localhost@remote.example", ROUTED)),
    ("user%other.example@remote.example", (DEFAULT, "smtp", "remote.example", "user%other.example@remote.example", ROUTED)),
    ("host!user@remote.example", (DEFAULT, "smtp", "remote.example", "host!user@remote.example", ROUTED)),
    ("user%other.example@relay.example", (RELAY, "relay", "relay.example", "user%other.example@relay.example", ROUTED)),
    # Bad domains: the error flag, and the error transport.
    ("user@1.2.3.4", (DEFAULT, "error", "5.1.3 bad address syntax", "user@1.2.3.4", ERROR)),
    ("user@bad..example", (DEFAULT, "error", "5.1.3 bad address syntax", "user@bad..example", ERROR)),
    ("user@-bad.example", (DEFAULT, "error", "5.1.3 bad address syntax", "user@-bad.example", ERROR)),
    ("user@site.example..", (DEFAULT, "error", "5.1.3 bad address syntax", "user@site.example..", ERROR)),
    ("user@[300.1.1.1]", (DEFAULT, "error", "5.1.3 bad address syntax", "user@[300.1.1.1]", ERROR)),
    ("user@", (DEFAULT, "error", "5.1.3 bad address syntax", "user@", ERROR)),
    ("user@exa mple.com", (DEFAULT, "error", "5.1.3 bad address syntax", "user@exa mple.com", ERROR)),
]  # fmt: skip


@pytest.mark.parametrize(("address", "expected"), GOLDEN)
def test_resolve_golden(
    tmp_path: Path, address: str, expected: tuple[AddressClass, str, str, str, ResolveFlag]
) -> None:
    resolver = resolver_from_main_cf(tmp_path)
    assert resolver.resolve(address) == Resolved(*expected)


def test_percent_hack_off_leaves_the_address_local_but_routed(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "allow_percent_hack=no")
    assert resolver.resolve("user%remote.example@localhost") == Resolved(
        LOCAL, "local", "mail.example.com", "user%remote.example@localhost", ROUTED
    )


def test_bang_path_off_leaves_the_address_local_but_routed(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "swap_bangpath=no")
    assert resolver.resolve("remote.example!user@localhost") == Resolved(
        LOCAL, "local", "mail.example.com", "remote.example!user@localhost", ROUTED
    )


def test_numeric_domain_becomes_a_literal_when_allowed(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "resolve_numeric_domain=yes")
    assert resolver.resolve("user@127.0.0.1") == Resolved(
        LOCAL, "local", "mail.example.com", "user@[127.0.0.1]", NONE
    )
    assert resolver.resolve("user@192.0.2.99") == Resolved(
        DEFAULT, "smtp", "[192.0.2.99]", "user@[192.0.2.99]", NONE
    )


def test_null_domain_is_stripped_when_allowed(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "resolve_null_domain=yes")
    assert resolver.resolve("user@") == Resolved(
        LOCAL, "local", "mail.example.com", "user@mail.example.com", NONE
    )


def test_inet_interfaces_all_makes_every_machine_address_local(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "inet_interfaces=all")
    assert resolver.resolve("user@[127.0.0.1]").addr_class is LOCAL
    assert resolver.resolve("user@[192.0.2.99]").addr_class is DEFAULT


def test_empty_address_recipient_is_configurable(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "empty_address_recipient=postmaster")
    assert resolver.resolve("").recipient == "postmaster@mail.example.com"


def test_relayhost_overrides_nexthop_of_relay_and_default_only(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "relayhost=[smtp.isp.example]:587")
    assert resolver.resolve("user@remote.example").nexthop == "[smtp.isp.example]:587"
    assert resolver.resolve("user@relay.example").nexthop == "[smtp.isp.example]:587"
    assert resolver.resolve("user@vmail.example").nexthop == "vmail.example"
    assert resolver.resolve("user@localhost").nexthop == "mail.example.com"


def test_class_transport_with_nexthop_overrides_relayhost(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(
        tmp_path, "relayhost=[smtp.isp.example]", "relay_transport=relay:[gw.example]:25"
    )
    assert resolver.resolve("user@relay.example") == Resolved(
        RELAY, "relay", "[gw.example]:25", "user@relay.example", NONE
    )


def test_local_transport_without_nexthop_uses_the_domain(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "local_transport=local")
    assert resolver.resolve("user@localhost").nexthop == "localhost"


def test_relay_domains_without_parent_style_needs_a_dot_pattern(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(
        tmp_path, "parent_domain_matches_subdomains=", "relay_domains=relay.example .other.example"
    )
    assert resolver.resolve("user@sub.relay.example").addr_class is DEFAULT
    assert resolver.resolve("user@relay.example").addr_class is RELAY
    assert resolver.resolve("user@sub.other.example").addr_class is RELAY


def test_virtual_alias_domains_default_to_the_virtual_alias_table(tmp_path: Path) -> None:
    virtual = tmp_path / "virtual"
    virtual.write_text("valias.example  anything\nuser@valias.example  user@localhost\n")
    resolver = resolver_from_main_cf(
        tmp_path,
        extra=f"virtual_alias_maps = texthash:{virtual}\nvirtual_alias_domains = $virtual_alias_maps\n",
    )
    assert resolver.resolve("other@valias.example").addr_class is ALIAS
    assert resolver.resolve("other@sub.valias.example").addr_class is DEFAULT


def test_null_transport_is_refused_when_the_resolver_is_built(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF + "default_transport = :[gw.example]\n")
    settings = ResolveSettings.from_config(load_config(tmp_path))
    with pytest.raises(ResolveError, match="default_transport: null transport is not allowed"):
        Resolver(settings)


def test_bad_domain_list_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF + f"relay_domains = {tmp_path}/missing\n")
    settings = ResolveSettings.from_config(load_config(tmp_path))
    with pytest.raises(MatchListError, match=r"^relay_domains: .*missing: open file"):
        Resolver(settings)


def test_unresolvable_proxy_interface_is_a_resolve_error_when_needed(tmp_path: Path) -> None:
    resolver = resolver_from_main_cf(tmp_path, "proxy_interfaces=no.such.host.invalid")
    assert resolver.resolve("user@localhost").addr_class is LOCAL
    with pytest.raises(ResolveError, match="proxy_interfaces: host not found"):
        resolver.resolve("user@[192.0.2.1]")


# --------------------------------------------------------------------------------------
# transport_maps
# --------------------------------------------------------------------------------------
TRANSPORT = """\
# transport(5) examples
user+special@remote.example  local:
user@remote.example          smtp:[user-gw.example]
remote.example               smtp:[mx.remote.example]:2525
.sub.remote.example          relay:
noop.example                 :
gw-only.example              :[gw.example]
reset.example                smtp:
bounce.example               error:
reason.example               error:5.7.1 no mail for this domain here
later.example                retry:4.4.1 try again later
valias.example               smtp:[should-not-be-used.example]
mailer-daemon@mail.example.com  discard:
"""


def resolver_with_transport(tmp_path: Path, *overrides: str, table: str = TRANSPORT) -> Resolver:
    transport = tmp_path / "transport"
    transport.write_text(table)
    return resolver_from_main_cf(tmp_path, f"transport_maps=texthash:{transport}", *overrides)


TRANSPORT_GOLDEN = [
    ("user+special@remote.example", ("local", "remote.example")),
    ("user+other@remote.example", ("smtp", "[user-gw.example]")),
    ("user@remote.example", ("smtp", "[user-gw.example]")),
    ("someone@remote.example", ("smtp", "[mx.remote.example]:2525")),
    ("someone@a.sub.remote.example", ("relay", "a.sub.remote.example")),
    ("someone@sub.remote.example", ("smtp", "sub.remote.example")),
    ("someone@noop.example", ("smtp", "noop.example")),
    ("someone@gw-only.example", ("smtp", "[gw.example]")),
    ("someone@localhost", ("local", "mail.example.com")),
    ("someone@bounce.example", ("error", "Address is undeliverable")),
    ("someone@reason.example", ("error", "5.7.1 no mail for this domain here")),
    ("someone@later.example", ("retry", "4.4.1 try again later")),
    ("someone@valias.example", ("error", "5.1.1 User unknown in virtual alias table")),
    ("", ("discard", "mail.example.com")),
    ("someone@elsewhere.example", ("smtp", "elsewhere.example")),
]


@pytest.mark.parametrize(("address", "expected"), TRANSPORT_GOLDEN)
def test_transport_maps_golden(tmp_path: Path, address: str, expected: tuple[str, str]) -> None:
    resolved = resolver_with_transport(tmp_path, "recipient_delimiter=+").resolve(address)
    assert (resolved.transport, resolved.nexthop) == expected


def test_transport_reset_nexthop_ignores_relayhost(tmp_path: Path) -> None:
    resolver = resolver_with_transport(tmp_path, "relayhost=[smtp.isp.example]")
    assert resolver.resolve("someone@reset.example").nexthop == "reset.example"
    assert resolver.resolve("someone@noop.example").nexthop == "[smtp.isp.example]"


def test_transport_wildcard_comes_last(tmp_path: Path) -> None:
    resolver = resolver_with_transport(tmp_path, table=TRANSPORT + "*  smtp:[smarthost.example]\n")
    assert resolver.resolve("someone@elsewhere.example").nexthop == "[smarthost.example]"
    assert resolver.resolve("someone@remote.example").nexthop == "[mx.remote.example]:2525"


def test_transport_parent_style_matches_subdomains_with_bare_names(tmp_path: Path) -> None:
    resolver = resolver_with_transport(tmp_path, "parent_domain_matches_subdomains=transport_maps")
    assert resolver.resolve("someone@deep.remote.example").nexthop == "[mx.remote.example]:2525"


def test_transport_maps_case_is_folded(tmp_path: Path) -> None:
    resolver = resolver_with_transport(tmp_path)
    assert resolver.resolve("SomeOne@Remote.EXAMPLE").nexthop == "[mx.remote.example]:2525"


def test_regexp_transport_table_sees_the_whole_address_only(tmp_path: Path) -> None:
    rules = tmp_path / "transport.re"
    rules.write_text(
        "/^remote\\.example$/  smtp:[domain-key.example]\n/@regexp\\.example$/  lmtp:unix:/run/lmtp\n"
    )
    resolver = resolver_from_main_cf(tmp_path, f"transport_maps=regexp:{rules}")
    assert resolver.resolve("user@regexp.example") == Resolved(
        DEFAULT, "lmtp", "unix:/run/lmtp", "user@regexp.example", NONE
    )
    assert resolver.resolve("user@remote.example").nexthop == "remote.example"


def test_first_transport_table_with_the_key_wins(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.write_text("remote.example  smtp:[first.example]\n")
    second = tmp_path / "second"
    second.write_text("user@remote.example  smtp:[second.example]\n")
    resolver = resolver_from_main_cf(tmp_path, f"transport_maps=texthash:{first} texthash:{second}")
    # Every table is asked for the longer key before any is asked for the domain.
    assert resolver.resolve("user@remote.example").nexthop == "[second.example]"
    assert resolver.resolve("other@remote.example").nexthop == "[first.example]"


def test_tables_are_opened_once_per_resolver(tmp_path: Path) -> None:
    virtual = tmp_path / "virtual"
    virtual.write_text("valias.example  x\n")
    opened: list[str] = []

    def counting_opener(spec: str) -> LookupTable:
        opened.append(spec)
        return open_registered_table(spec)

    (tmp_path / "main.cf").write_text(
        MAIN_CF
        + f"virtual_alias_domains = texthash:{virtual}\ntransport_maps = texthash:{virtual}\n"
    )
    resolver = Resolver(ResolveSettings.from_config(load_config(tmp_path)), counting_opener)
    for _ in range(5):
        resolver.resolve("user@valias.example")
        resolver.resolve("user@remote.example")
    assert opened == [f"texthash:{virtual}"]


def test_missing_transport_table_names_the_parameter(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF + f"transport_maps = texthash:{tmp_path}/none\n")
    settings = ResolveSettings.from_config(load_config(tmp_path))
    with pytest.raises(MatchListError, match=r"^transport_maps: "):
        Resolver(settings)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------
_piece = st.sampled_from(
    ["user", "localhost", "remote.example", "relay.example", "mail.example.com", "[127.0.0.1]",
     "@", "%", "!", ".", "", "1.2.3.4", "ü"]
)  # fmt: skip


@settings(deadline=None)
@given(st.lists(_piece, max_size=12).map("".join))
def test_resolve_always_answers_with_a_qualified_recipient(address: str) -> None:
    resolved = _PROPERTY_RESOLVER.resolve(address)
    assert "@" in resolved.recipient
    assert resolved.transport
    if resolved.addr_class is LOCAL:
        assert resolved.nexthop == "mail.example.com"
    if resolved.flags & ERROR:
        assert resolved.transport == "error"


_PROPERTY_RESOLVER = Resolver(
    ResolveSettings(
        myorigin="example.com",
        mydomain="example.com",
        remote_header_rewrite_domain="",
        swap_bangpath=True,
        allow_percent_hack=True,
        append_at_myorigin=True,
        append_dot_mydomain=False,
        myhostname="mail.example.com",
        mydestination=("mail.example.com", "localhost"),
        inet_interfaces=("loopback-only",),
        proxy_interfaces=(),
        inet_protocols=("all",),
        virtual_alias_domains=(),
        virtual_mailbox_domains=(),
        relay_domains=("relay.example",),
        parent_domain_matches_subdomains=("relay_domains",),
        local_transport="local:mail.example.com",
        virtual_transport="virtual",
        relay_transport="relay",
        default_transport="smtp",
        relayhost="",
        transport_maps=(),
        recipient_delimiter="+",
        owner_request_special=True,
        double_bounce_sender="double-bounce",
        empty_address_recipient="MAILER-DAEMON",
        resolve_numeric_domain=False,
        resolve_null_domain=False,
    )
)
