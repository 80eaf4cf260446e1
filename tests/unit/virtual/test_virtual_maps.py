"""Virtual lookups (Postfix's virtual(8) keys) and the rules that keep mailboxes under the base."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.virtual.maps import MailboxPlace, MapsError, VirtualMaps, mailbox_place
from sdmail.virtual.settings import VirtualSettings

SETTINGS = VirtualSettings(
    virtual_mailbox_maps=(),
    virtual_mailbox_base="/var/mail/vhosts",
    virtual_uid_maps=("static:5000",),
    virtual_gid_maps=("static:5000",),
    virtual_minimum_uid=100,
    virtual_mailbox_limit=51200000,
    virtual_mailbox_lock=("fcntl", "dotlock"),
    deliver_lock_attempts=2,
    deliver_lock_delay=1,
    stale_lock_time=500,
    recipient_delimiter="+",
    owner_request_special=True,
    double_bounce_sender="double-bounce",
    enable_original_recipient=True,
)


def maps_with(**changes: object) -> VirtualMaps:
    return VirtualMaps(replace(SETTINGS, **changes))


# -- mailbox paths ------------------------------------------------------------------------
def test_a_result_ending_in_slash_is_a_maildir_below_the_base() -> None:
    place = mailbox_place("/var/mail/vhosts/", "example.com/joe/")
    assert place == MailboxPlace("/var/mail/vhosts", ("example.com",), "joe", maildir=True)
    assert place.path == "/var/mail/vhosts/example.com/joe/"
    assert place.parent == "/var/mail/vhosts/example.com"


def test_a_result_without_slash_is_an_mbox_file() -> None:
    place = mailbox_place("/srv/mail", "joe")
    assert (place.path, place.parent, place.maildir) == ("/srv/mail/joe", "/srv/mail", False)


def test_a_leading_slash_in_the_result_stays_below_the_base() -> None:
    assert mailbox_place("/srv/mail", "/etc/passwd").path == "/srv/mail/etc/passwd"


@pytest.mark.parametrize("result", ["../etc/passwd", "a/../../b", "x/..", "..", "a/b/../c/"])
def test_a_result_with_dot_dot_is_refused(result: str) -> None:
    with pytest.raises(MapsError, match="leads out of virtual_mailbox_base"):
        mailbox_place("/srv/mail", result)


@pytest.mark.parametrize(
    ("base", "why"),
    [("", "absolute"), ("srv/mail", "absolute"), ("/srv/../etc", "'..'"), ("/srv/m\0", "NUL")],
)
def test_a_bad_base_is_refused(base: str, why: str) -> None:
    with pytest.raises(MapsError, match=why):
        mailbox_place(base, "joe/")


@pytest.mark.parametrize("result", ["", "/", "./", "x\0y"])
def test_a_result_that_names_no_mailbox_is_refused(result: str) -> None:
    with pytest.raises(MapsError):
        mailbox_place("/srv/mail", result)


@given(st.text(alphabet=st.sampled_from("ab./\0"), max_size=20))
def test_every_accepted_result_lies_below_the_base(result: str) -> None:
    try:
        place = mailbox_place("/srv/mail", result)
    except MapsError:
        return
    assert place.path.startswith("/srv/mail/")
    assert ".." not in place.path.split("/")
    assert place.name and "/" not in place.name


# -- lookups ------------------------------------------------------------------------------
def test_keys_are_tried_full_address_then_without_extension_then_the_domain() -> None:
    table = "inline:{ joe+list@x.test=full, joe@x.test=bare, @x.test=catchall }"
    maps = maps_with(virtual_mailbox_maps=(table,))
    assert maps.mailbox("joe+list@x.test") == "full"
    assert maps.mailbox("joe+other@x.test") == "bare"
    assert maps.mailbox("ann@x.test") == "catchall"
    assert maps.mailbox("ann@y.test") is None


def test_an_extension_is_not_copied_into_the_mailbox_path() -> None:
    maps = maps_with(virtual_mailbox_maps=("inline:{ joe@x.test=x.test/joe/ }",))
    assert maps.mailbox("joe+spam@x.test") == "x.test/joe/"


def test_a_regexp_table_sees_the_whole_address_only(tmp_path: Path) -> None:
    rules = tmp_path / "vmailbox.regexp"
    rules.write_text("/^joe@x\\.test$/ x.test/joe/\n/^@x\\.test$/ caught/\n")
    maps = maps_with(virtual_mailbox_maps=(f"regexp:{rules}",))
    assert maps.mailbox("joe@x.test") == "x.test/joe/"
    assert maps.mailbox("ann@x.test") is None


def test_static_owner_maps_give_uid_and_gid() -> None:
    assert maps_with().owner("joe@x.test") == (5000, 5000)


@pytest.mark.parametrize(
    ("uid_maps", "gid_maps", "why"),
    [
        ((), ("static:5000",), "uid not found in virtual_uid_maps"),
        (("static:99",), ("static:5000",), "bad uid '99'"),
        (("static:0",), ("static:5000",), "bad uid '0'"),
        (("static:five",), ("static:5000",), "bad uid 'five'"),
        (("static:5_000",), ("static:5000",), "bad uid '5_000'"),
        (("static:5000",), ("static:0",), "bad gid '0'"),
        (("static:5000",), ("inline:{ a@b=1 }",), "gid not found"),
    ],
)
def test_a_missing_or_unsafe_owner_is_a_configuration_error(
    uid_maps: tuple[str, ...], gid_maps: tuple[str, ...], why: str
) -> None:
    maps = maps_with(virtual_uid_maps=uid_maps, virtual_gid_maps=gid_maps)
    with pytest.raises(MapsError, match=why):
        maps.owner("joe@x.test")


def test_per_address_owners_use_the_same_keys() -> None:
    maps = maps_with(virtual_uid_maps=("inline:{ @x.test=6000, joe@x.test=6001 }",))
    assert maps.owner("joe+x@x.test") == (6001, 5000)
    assert maps.owner("ann@x.test") == (6000, 5000)
