"""The lookup key order over lists of tables (sdmail/core/tables/addr_find.py)."""

from __future__ import annotations

import dataclasses

import pytest

from sdmail.core.config import bind, load_config
from sdmail.core.tables import open_table
from sdmail.core.tables.addr_find import (
    LookupSettings,
    address_keys,
    alias_keys,
    find_address,
    find_alias,
    find_transport,
    propagate_extension,
    transport_keys,
)
from sdmail.core.tables.table import Table

PLUS = LookupSettings(
    recipient_delimiter="+",
    owner_request_special=True,
    double_bounce_sender="double-bounce",
    propagate_unmatched_extensions=("canonical", "virtual"),
)


def local(domain: str) -> bool:
    return domain.lower() in {"example.com", "localhost"}


def texts(keys) -> list[str]:
    return [key.text for key in keys]


def user_and_extension(local_part: str, settings: LookupSettings) -> tuple[str, str | None]:
    """The split the alias search makes: (user, extension), or (local part, None)."""
    keys = alias_keys(local_part, settings)
    assert keys[0].text == local_part
    if len(keys) == 1:
        return local_part, None
    assert keys[1].text + keys[1].extension == local_part
    return keys[1].text, keys[1].extension


def test_address_keys_for_a_local_domain():
    assert texts(address_keys("user+ext@example.com", PLUS, local)) == [
        "user+ext@example.com",
        "user@example.com",
        "user+ext",
        "user",
        "@example.com",
    ]


def test_address_keys_for_a_remote_domain_skip_bare_user():
    assert texts(address_keys("user+ext@remote.org", PLUS, local)) == [
        "user+ext@remote.org",
        "user@remote.org",
        "@remote.org",
    ]


def test_address_keys_without_extension_or_delimiter():
    assert texts(address_keys("user@example.com", PLUS, local)) == [
        "user@example.com",
        "user",
        "@example.com",
    ]
    no_delimiter = dataclasses.replace(PLUS, recipient_delimiter="")
    assert texts(address_keys("user+ext@remote.org", no_delimiter, local)) == [
        "user+ext@remote.org",
        "@remote.org",
    ]


def test_only_the_whole_address_is_asked_of_pattern_tables():
    keys = address_keys("user+ext@example.com", PLUS, local)
    assert [key.fixed_only for key in keys] == [False, True, True, True, True]


@pytest.mark.parametrize(
    ("local_part", "delimiters", "expected"),
    [
        ("user+ext", "+", ("user", "+ext")),
        ("user-ext+x", "+-", ("user", "-ext+x")),  # the first delimiter found splits
        ("user+", "+", ("user", "+")),
        ("+ext", "+", ("+ext", None)),  # the user part would be empty
        ("user", "+", ("user", None)),
        ("Postmaster", "+", ("Postmaster", None)),
        ("MAILER-DAEMON", "-", ("MAILER-DAEMON", None)),
        ("double-bounce", "-", ("double-bounce", None)),
        ("owner-list", "-", ("owner-list", None)),
        ("list-request", "-", ("list-request", None)),
        ("owner+x", "+", ("owner", "+x")),  # owner- rule applies only with "-"
        ("a-request", "-", ("a-request", None)),
        ("a-requests", "-", ("a", "-requests")),
    ],
)
def test_extension_split_rules(local_part, delimiters, expected):
    settings = dataclasses.replace(PLUS, recipient_delimiter=delimiters)
    assert user_and_extension(local_part, settings) == expected


def test_owner_request_special_off_splits_owner_and_request():
    settings = dataclasses.replace(PLUS, recipient_delimiter="-", owner_request_special=False)
    assert user_and_extension("owner-list", settings) == ("owner", "-list")


def test_transport_keys_with_dot_parents_then_star():
    assert texts(transport_keys("user+ext@a.b.example.com", PLUS, match_subdomains=False)) == [
        "user+ext@a.b.example.com",
        "user@a.b.example.com",
        "a.b.example.com",
        ".b.example.com",
        ".example.com",
        ".com",
        "*",
    ]


def test_transport_keys_when_domains_match_subdomains():
    assert texts(transport_keys("user@b.example.com", PLUS, match_subdomains=True)) == [
        "user@b.example.com",
        "b.example.com",
        "example.com",
        "com",
        "*",
    ]


def test_alias_keys_try_full_local_part_then_user():
    assert texts(alias_keys("user+ext", PLUS)) == ["user+ext", "user"]
    assert texts(alias_keys("postmaster", PLUS)) == ["postmaster"]


def inline(entries: str) -> Table:
    return open_table(f"inline:{{ {entries} }}")


def test_each_key_is_tried_in_every_table_before_the_next_key():
    first = inline("@example.com=catchall@x")
    second = inline("user@example.com=exact@x")
    found = find_address([first, second], "user@example.com", PLUS, local, "virtual")
    assert found is not None
    assert (found.value, found.key, found.table) == ("exact@x", "user@example.com", second.spec)


def test_unmatched_extension_is_propagated_for_listed_classes():
    table = inline("joe@example.com=joe.user@example.net")
    found = find_address([table], "joe+foo@example.com", PLUS, local, "virtual")
    assert found is not None
    assert found.value == "joe.user+foo@example.net"
    assert found.extension == "+foo"
    found = find_address([table], "joe+foo@example.com", PLUS, local, "generic")
    assert found is not None
    assert found.value == "joe.user@example.net"


def test_extension_matched_in_full_is_not_propagated():
    table = inline("joe+foo@example.com=special@example.net")
    found = find_address([table], "joe+foo@example.com", PLUS, local, "virtual")
    assert found is not None
    assert (found.value, found.extension) == ("special@example.net", None)


def test_catch_all_propagates_into_each_address():
    table = inline("{ @example.com = a@x, b@y }")
    found = find_address([table], "who+tag@example.com", PLUS, local, "virtual")
    assert found is not None
    assert found.value == "a+tag@x, b+tag@y"


def test_propagation_leaves_at_domain_results_and_handles_bare_users():
    assert propagate_extension("@other.org", "+x") == "@other.org"
    assert propagate_extension("joe", "+x") == "joe+x"


def test_pattern_tables_see_only_the_whole_address(tmp_path):
    pattern = open_table("regexp:{ {/^user/ from-regexp} }")
    assert find_address([pattern], "user+x@example.com", PLUS, local, "virtual") is not None
    assert find_address([pattern], "xuser@example.com", PLUS, local, "virtual") is None
    domain_only = open_table("regexp:{ {/^@example/ wrong} }")
    assert find_address([domain_only], "u@example.com", PLUS, local, "virtual") is None


def test_bare_user_key_only_for_local_domains():
    table = inline("user=local-user")
    assert find_address([table], "user@example.com", PLUS, local, "virtual") is not None
    assert find_address([table], "user@remote.org", PLUS, local, "virtual") is None


def test_transport_lookup_order_and_star():
    table = inline(".example.com=relay:[gw], *=smtp:, b.example.com=lmtp:x")
    found = find_transport([table], "u@a.b.example.com", PLUS, match_subdomains=False)
    assert found is not None
    assert found.value == "relay:[gw]"
    found = find_transport([table], "u@b.example.com", PLUS, match_subdomains=False)
    assert found is not None
    assert found.value == "lmtp:x"
    found = find_transport([table], "u@else.org", PLUS, match_subdomains=False)
    assert found is not None
    assert found.value == "smtp:"


def test_alias_lookup_falls_back_to_user_without_extension():
    table = inline("joe=joe@elsewhere, joe+list=list-handler")
    assert find_alias([table], "joe+list", PLUS).value == "list-handler"
    found = find_alias([table], "joe+other", PLUS)
    assert found is not None
    assert (found.value, found.extension) == ("joe@elsewhere", "+other")
    assert find_alias([table], "jim", PLUS) is None


def test_settings_bind_from_configuration(tmp_path):
    (tmp_path / "main.cf").write_text("recipient_delimiter = +-\n")
    settings = bind(LookupSettings, load_config(tmp_path))
    assert settings.recipient_delimiter == "+-"
    assert settings.owner_request_special is True
    assert settings.double_bounce_sender == "double-bounce"
    assert settings.propagate_unmatched_extensions == ("canonical", "virtual")
