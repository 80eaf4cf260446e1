"""smtpd/checks.py: Postfix's restrictions and recipient validation, as a client sees them."""

from __future__ import annotations

import logging

import pytest

from sdmail.core.config import ConfigError
from sdmail.smtpd.checks import DomainState


def rcpt(world, talk, recipient, extra="", *, address="192.0.2.10", sender="a@sender.example"):
    session = world.session(extra, address=address)
    assert talk(session, "EHLO client.example").startswith("250")
    assert talk(session, f"MAIL FROM:<{sender}>") == "250 2.1.0 Ok"
    return talk(session, f"RCPT TO:<{recipient}>")


RELAY_DENIED = "554 5.7.1 <{}>: Relay access denied"
STRICT_RELAY = "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"


# -- relay control ----------------------------------------------------------------------
def test_relay_from_outside_mynetworks_is_deferred_with_the_default_restrictions(world, talk):
    assert rcpt(world, talk, "victim@remote.example") == (
        "454 4.7.1 <victim@remote.example>: Relay access denied"
    )


def test_relay_from_outside_is_rejected_with_reject_unauth_destination(world, talk):
    got = rcpt(world, talk, "victim@remote.example", STRICT_RELAY)
    assert got == RELAY_DENIED.format("victim@remote.example")


@pytest.mark.parametrize(
    ("disguise", "shown"),
    [
        ("victim%remote.example@mail.example.test", None),
        ("remote.example!victim@mail.example.test", None),
        ('"victim@remote.example"@mail.example.test', "victim@remote.example@mail.example.test"),
        ("@mail.example.test:victim@remote.example", "victim@remote.example"),
        ("victim%remote.example@MAIL.Example.Test.", None),
        ("victim@remote.example.", None),
        ("victim%remote.example@[127.0.0.1]", None),
    ],
)
def test_relay_disguises_are_denied(world, talk, disguise, shown):
    got = rcpt(world, talk, disguise, STRICT_RELAY)
    assert got == RELAY_DENIED.format(shown or disguise)


def test_routed_local_part_is_denied_even_without_the_percent_hack(world, talk):
    extra = STRICT_RELAY + "allow_percent_hack = no\n"
    got = rcpt(world, talk, "victim%remote.example@mail.example.test", extra)
    assert got == RELAY_DENIED.format("victim%remote.example@mail.example.test")


@pytest.mark.parametrize(
    "local", ["postmaster@MAIL.Example.TEST", "postmaster@mail.example.test.", "Root@localhost"]
)
def test_local_domain_in_another_case_or_with_a_trailing_dot_is_local(world, talk, local):
    assert rcpt(world, talk, local, STRICT_RELAY) == "250 2.1.5 Ok"


def test_trusted_client_may_relay(world, talk):
    assert rcpt(world, talk, "friend@remote.example", address="127.0.0.1") == "250 2.1.5 Ok"


def test_relay_domains_are_accepted_from_anyone(world, talk):
    extra = STRICT_RELAY + "relay_domains = relayed.example\n"
    assert rcpt(world, talk, "anyone@sub.relayed.example", extra) == "250 2.1.5 Ok"
    assert rcpt(world, talk, "anyone@relayed.example.net", extra).startswith("554 5.7.1")


def test_relay_recipient_maps_reject_unknown_relay_users(world, talk):
    table = world.table("relay_recipients", "known@relayed.example OK\n")
    extra = f"relay_domains = relayed.example\nrelay_recipient_maps = {table}\n"
    assert rcpt(world, talk, "known@relayed.example", extra) == "250 2.1.5 Ok"
    assert rcpt(world, talk, "other@relayed.example", extra) == (
        "550 5.1.1 <other@relayed.example>: Recipient address rejected: "
        "User unknown in relay recipient table"
    )


# -- recipient validation ----------------------------------------------------------------
def test_unknown_local_user_is_rejected_with_5_1_1(world, talk):
    assert rcpt(world, talk, "nosuch@mail.example.test", address="127.0.0.1") == (
        "550 5.1.1 <nosuch@mail.example.test>: Recipient address rejected: "
        "User unknown in local recipient table"
    )


@pytest.mark.parametrize(
    "known",
    ["root@mail.example.test", "alias-user@localhost", "jösé@localhost", "postmaster@localhost"],
)
def test_users_and_aliases_are_local_recipients(world, talk, known):
    session = world.session(address="127.0.0.1")
    talk(session, "EHLO client.example")
    assert talk(session, "MAIL FROM:<a@sender.example> SMTPUTF8") == "250 2.1.0 Ok"
    assert talk(session, f"RCPT TO:<{known}>") == "250 2.1.5 Ok"


def test_empty_local_recipient_maps_accept_any_local_user(world, talk):
    extra = "local_recipient_maps =\n"
    assert rcpt(world, talk, "nosuch@mail.example.test", extra) == "250 2.1.5 Ok"


def test_postmaster_passes_even_when_no_table_knows_it(world, talk):
    world.aliases.write_text("")
    assert rcpt(world, talk, "Postmaster@localhost") == "250 2.1.5 Ok"


def test_virtual_alias_domain_recipients_are_checked_against_the_map(world, talk):
    table = world.table("virtual", "info@alias.example root@localhost\n")
    extra = f"virtual_alias_maps = {table}\nvirtual_alias_domains = alias.example\n"
    assert rcpt(world, talk, "info@alias.example", extra) == "250 2.1.5 Ok"
    assert rcpt(world, talk, "sales@alias.example", extra) == (
        "550 5.1.1 <sales@alias.example>: Recipient address rejected: "
        "User unknown in virtual alias table"
    )


def test_virtual_mailbox_recipients_are_checked_against_the_map(world, talk):
    table = world.table("vmailbox", "joe@box.example box.example/joe/\n")
    extra = f"virtual_mailbox_maps = {table}\nvirtual_mailbox_domains = box.example\n"
    assert rcpt(world, talk, "joe@box.example", extra) == "250 2.1.5 Ok"
    assert rcpt(world, talk, "jim@box.example", extra) == (
        "550 5.1.1 <jim@box.example>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )


def test_a_table_that_cannot_be_opened_defers_instead_of_rejecting(world, talk, caplog):
    extra = f"local_recipient_maps = hash:{world.root}/missing\n"
    assert rcpt(world, talk, "root@localhost", extra) == (
        "451 4.3.0 <root@localhost>: Temporary lookup failure"
    )
    assert "unavailable" in caplog.text


def test_show_user_unknown_table_name_no_leaves_out_the_table(world, talk):
    extra = "show_user_unknown_table_name = no\n"
    assert rcpt(world, talk, "nosuch@localhost", extra).endswith("rejected: User unknown")


# -- access tables -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("REJECT", "554 5.7.1 <bad@remote.example>: Recipient address rejected: Access denied"),
        ("REJECT go away", "554 5.7.1 <bad@remote.example>: Recipient address rejected: go away"),
        ("DEFER later", "450 4.7.1 <bad@remote.example>: Recipient address rejected: later"),
        ("551 5.7.9 moved", "551 5.7.9 <bad@remote.example>: Recipient address rejected: moved"),
        (
            "450 5.7.1 adjusted",
            "450 4.7.1 <bad@remote.example>: Recipient address rejected: adjusted",
        ),
        ("OK", "250 2.1.5 Ok"),
        ("DUNNO", "250 2.1.5 Ok"),
        ("reject_unauth_destination", RELAY_DENIED.format("bad@remote.example")),
    ],
)
def test_check_recipient_access_results(world, talk, value, expected):
    table = world.table("access", f"remote.example {value}\n")
    extra = f"smtpd_recipient_restrictions = check_recipient_access {table}\n"
    assert rcpt(world, talk, "bad@remote.example", extra, address="127.0.0.1") == expected


@pytest.mark.parametrize(
    ("then", "expected"),
    [
        ("permit", "450 4.7.1 <bad@remote.example>: Recipient address rejected: greylisted"),
        ("reject", "554 5.7.1 <bad@remote.example>: Recipient address rejected: Access denied"),
    ],
)
def test_defer_if_permit_defers_only_what_would_pass(world, talk, then, expected):
    table = world.table("access", "remote.example DEFER_IF_PERMIT greylisted\n")
    extra = f"smtpd_recipient_restrictions = check_recipient_access {table}, {then}\n"
    assert rcpt(world, talk, "bad@remote.example", extra, address="127.0.0.1") == expected


@pytest.mark.parametrize(
    ("then", "expected"),
    [
        ("permit", "250 2.1.5 Ok"),
        ("reject", "450 4.7.1 <bad@remote.example>: Recipient address rejected: not sure"),
        ("defer", "450 4.7.1 <bad@remote.example>: Recipient address rejected: Access denied"),
    ],
)
def test_defer_if_reject_turns_a_later_reject_into_a_deferral(world, talk, then, expected):
    table = world.table("access", "remote.example DEFER_IF_REJECT not sure\n")
    extra = f"smtpd_recipient_restrictions = check_recipient_access {table}, {then}\n"
    assert rcpt(world, talk, "bad@remote.example", extra, address="127.0.0.1") == expected


def test_access_keys_follow_postfix_order(world, talk):
    table = world.table(
        "access", "user@sub.remote.example OK\nremote.example REJECT\nother@ REJECT by user\n"
    )
    extra = f"smtpd_recipient_restrictions = check_recipient_access {table}\n"
    ok = rcpt(world, talk, "user@sub.remote.example", extra, address="127.0.0.1")
    parent = rcpt(world, talk, "x@sub.remote.example", extra, address="127.0.0.1")
    by_user = rcpt(world, talk, "other@elsewhere.example", extra, address="127.0.0.1")
    assert (ok, parent[:9], by_user[-7:]) == ("250 2.1.5 Ok", "554 5.7.1", "by user")


def test_check_sender_access_uses_the_null_sender_key(world, talk):
    table = world.table("senders", "<> REJECT no bounces here\n")
    extra = f"smtpd_sender_restrictions = check_sender_access {table}\n"
    assert rcpt(world, talk, "root@localhost", extra, sender="") == (
        "554 5.7.1 <>: Sender address rejected: no bounces here"
    )


def test_check_client_access_matches_an_address_prefix(world, talk):
    table = world.table("clients", "192.0.2 REJECT\n")
    extra = f"smtpd_client_restrictions = check_client_access {table}\n"
    assert rcpt(world, talk, "root@localhost", extra) == (
        "554 5.7.1 <client.example[192.0.2.10]>: Client host rejected: Access denied"
    )


def test_check_helo_access_matches_the_helo_name(world, talk):
    table = world.table("helos", "client.example REJECT liar\n")
    extra = f"smtpd_helo_restrictions = check_helo_access {table}\n"
    assert rcpt(world, talk, "root@localhost", extra) == (
        "554 5.7.1 <client.example>: Helo command rejected: liar"
    )


def test_restriction_class_named_by_an_access_table(world, talk):
    table = world.table("access", "remote.example strict\n")
    extra = (
        "smtpd_restriction_classes = strict\nstrict = reject\n"
        f"smtpd_recipient_restrictions = check_recipient_access {table}\n"
    )
    assert rcpt(world, talk, "x@remote.example", extra, address="127.0.0.1") == (
        "554 5.7.1 <x@remote.example>: Recipient address rejected: Access denied"
    )


# -- shape of addresses and DNS -------------------------------------------------------------
def test_reject_non_fqdn_recipient_and_sender(world, talk):
    extra = "smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_non_fqdn_sender\n"
    assert rcpt(world, talk, "root", extra) == (
        "504 5.5.2 <root>: Recipient address rejected: need fully-qualified address"
    )
    assert rcpt(world, talk, "root@mail.example.test", extra, sender="joe@host") == (
        "504 5.5.2 <joe@host>: Sender address rejected: need fully-qualified address"
    )


def test_reject_unknown_recipient_domain_asks_dns_for_remote_domains_only(world, talk):
    world.domains.states = {
        "gone.example": DomainState.NOT_FOUND,
        "null.example": DomainState.NULL_MX,
    }
    extra = "smtpd_recipient_restrictions = reject_unknown_recipient_domain\n"
    kw = {"address": "127.0.0.1"}
    assert rcpt(world, talk, "x@gone.example", extra, **kw) == (
        "450 4.1.2 <x@gone.example>: Recipient address rejected: Domain not found"
    )
    assert rcpt(world, talk, "x@null.example", extra, **kw) == (
        "556 5.1.10 <x@null.example>: Recipient address rejected: "
        "Domain null.example does not accept mail (nullMX)"
    )
    assert rcpt(world, talk, "x@fine.example", extra, **kw) == "250 2.1.5 Ok"
    assert rcpt(world, talk, "root@localhost", extra, **kw) == "250 2.1.5 Ok"
    assert world.domains.asked == ["gone.example", "null.example", "fine.example"]


def test_reject_invalid_and_non_fqdn_helo(world, talk):
    extra = (
        "smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n"
    )
    session = world.session(extra + "smtpd_delay_reject = no\n")
    assert talk(session, "EHLO bad_name!") == (
        "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name"
    )
    assert talk(session, "EHLO shortname") == (
        "504 5.5.2 <shortname>: Helo command rejected: need fully-qualified hostname"
    )
    assert talk(session, "EHLO good.example").startswith("250")


# -- when restrictions run ------------------------------------------------------------------
def test_delay_reject_gives_a_client_reject_at_rcpt(world, talk):
    table = world.table("clients", "192.0.2.10 REJECT\n")
    extra = f"smtpd_client_restrictions = check_client_access {table}\n"
    session = world.session(extra)
    talk(session, "EHLO client.example")
    assert talk(session, "MAIL FROM:<a@sender.example>") == "250 2.1.0 Ok"
    assert talk(session, "RCPT TO:<root@localhost>").startswith("554 5.7.1 <client.example[")


def test_without_delay_reject_the_client_is_refused_at_mail(world, talk):
    table = world.table("clients", "192.0.2.10 REJECT\n")
    extra = f"smtpd_client_restrictions = check_client_access {table}\nsmtpd_delay_reject = no\n"
    session = world.session(extra)
    session.greeting()
    talk(session, "EHLO client.example")
    assert talk(session, "MAIL FROM:<a@sender.example>").startswith("554 5.7.1 <client.example[")


def test_soft_bounce_turns_rejects_into_deferrals(world, talk):
    got = rcpt(world, talk, "victim@remote.example", STRICT_RELAY + "soft_bounce = yes\n")
    assert got == "454 4.7.1 <victim@remote.example>: Relay access denied"


def test_reject_footer_is_a_further_reply_line(world):
    session = world.session(STRICT_RELAY + "smtpd_reject_footer = see https://help.example\n")
    session.command(b"EHLO client.example")
    session.command(b"MAIL FROM:<a@sender.example>")
    refusal = session.command(b"RCPT TO:<x@remote.example>")
    assert refusal.wire().endswith(
        b"554-5.7.1 <x@remote.example>: Relay access denied\r\n554 see https://help.example\r\n"
    )


def test_rejects_are_logged_in_postfix_shape(world, talk, caplog):
    caplog.set_level(logging.INFO, logger="sdmail")
    rcpt(world, talk, "victim@remote.example", STRICT_RELAY)
    assert (
        "NOQUEUE: reject: RCPT from client.example[192.0.2.10]: 554 5.7.1 "
        "<victim@remote.example>: Relay access denied; from=<a@sender.example> "
        "to=<victim@remote.example> proto=ESMTP helo=<client.example>"
    ) in caplog.messages


# -- configuration errors ---------------------------------------------------------------------
def test_unknown_restriction_is_a_configuration_error(world):
    with pytest.raises(
        ConfigError, match='smtpd_recipient_restrictions: unknown restriction "permit_evrything"'
    ):
        world.service("smtpd_recipient_restrictions = permit_evrything\n")


def test_lists_without_relay_protection_are_a_configuration_error(world):
    with pytest.raises(ConfigError, match="specify at least one working instance"):
        world.service("smtpd_relay_restrictions = permit_mynetworks\n")


def test_access_restriction_without_a_table_is_a_configuration_error(world):
    with pytest.raises(ConfigError, match='"check_sender_access" needs a table'):
        world.service("smtpd_sender_restrictions = check_sender_access\n")


def test_undefined_restriction_class_is_a_configuration_error(world):
    with pytest.raises(ConfigError, match="restriction class is listed but not defined"):
        world.service("smtpd_restriction_classes = nowhere\n")


def test_postfix_restrictions_not_done_yet_are_skipped_with_a_warning(world, talk, caplog):
    extra = (
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, "
        "check_reverse_client_hostname_access texthash:/nowhere, "
        "check_client_mx_access texthash:/nowhere, "
        "reject_unknown_client_hostname\n"
    )
    assert rcpt(world, talk, "root@localhost", extra) == "250 2.1.5 Ok"
    assert (
        "smtpd_recipient_restrictions: check_reverse_client_hostname_access texthash:/nowhere "
        "is not supported yet; skipped"
    ) in caplog.messages
    assert any("check_client_mx_access texthash:/nowhere" in m for m in caplog.messages)


def test_reject_unauth_pipelining_refuses_data_after_improper_pipelining(world, talk):
    session = world.session("smtpd_data_restrictions = reject_unauth_pipelining\n")
    talk(session, "HELO client.example")
    talk(session, "MAIL FROM:<a@sender.example>")
    talk(session, "RCPT TO:<root@localhost>")
    session.improper_pipelining = True
    assert talk(session, "DATA") == (
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"
    )
    session.improper_pipelining = False
    assert talk(session, "DATA").startswith("354")
