"""sendmail's command line as Postfix's sendmail reads it."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.records import Notify
from sdmail.sendmail import (
    DAEMON,
    ENQUEUE,
    FLUSHQ,
    IGNORE,
    MAILQ_MODE,
    NEWALIAS,
    SMTP,
    Options,
    SendmailExit,
    addresses_in,
    command_line_recipients,
    dsn_notify,
    envelope_sender,
    exit_status_of_refusal,
    parse_command_line,
    program_name,
)


def parse(*args: str, program: str = "sendmail") -> Options:
    return parse_command_line(list(args), program)


def usage_error(*args: str) -> str:
    with pytest.raises(SendmailExit) as caught:
        parse(*args)
    assert caught.value.status == os.EX_USAGE
    return caught.value.text


def test_recipients_follow_the_options() -> None:
    opts = parse("-oi", "-f", "me@example.org", "bob", "carol@example.org")
    assert opts.mode == ENQUEUE
    assert (opts.sender, opts.dot_ends_input) == ("me@example.org", False)
    assert opts.recipients == ["bob", "carol@example.org"]


def test_options_stop_at_the_first_recipient_and_at_double_dash() -> None:
    assert parse("bob", "-t").recipients == ["bob", "-t"]
    assert parse("-i", "--", "-bob").recipients == ["-bob"]


def test_option_values_attached_or_separate() -> None:
    assert parse("-fme").sender == "me"
    assert parse("-r", "me").sender == "me"
    assert parse("-F", "Alice Liddell").full_name == "Alice Liddell"
    assert parse("-f", "").sender == ""


def test_flags_cluster() -> None:
    opts = parse("-tiG")
    assert (opts.extract_recipients, opts.dot_ends_input, opts.gateway) == (True, False, True)


@pytest.mark.parametrize(
    ("args", "mode"),
    [
        (("-bm",), ENQUEUE),
        (("-bp",), MAILQ_MODE),
        (("-bs",), SMTP),
        (("-bi",), NEWALIAS),
        (("-I",), NEWALIAS),
        (("-q",), FLUSHQ),
        (("-bd",), DAEMON),
        (("-bl",), DAEMON),
        (("-bh",), IGNORE),
        (("-bH",), IGNORE),
    ],
)
def test_modes(args: tuple[str, ...], mode: str) -> None:
    assert parse(*args).mode == mode


def test_program_name_picks_the_default_mode_and_options_win() -> None:
    assert parse(program="mailq").mode == MAILQ_MODE
    assert parse(program="newaliases").mode == NEWALIAS
    assert parse("-bp", program="newaliases").mode == MAILQ_MODE
    assert program_name("/usr/bin/mailq") == "mailq"
    assert program_name("/usr/sbin/newaliases") == "newaliases"
    assert program_name("/work/sdmail/sendmail.py") == "sendmail"


def test_q_options() -> None:
    assert parse("-qRexample.org").site_to_flush == "example.org"
    assert parse("-qI4jZM0000000z1").id_to_flush == "4jZM0000000z1"
    assert parse("-q30m").queue_interval == "30m"
    assert usage_error("-qR") == "specify: -qRsitename"
    assert usage_error("-qI") == "specify: -qIqueueid"
    assert usage_error("-qS") == "-qS is not implemented"


def test_ignored_options_are_accepted() -> None:
    opts = parse(
        "-Am", "-Ac", "-c", "-e", "x", "-h", "17", "-L", "tag", "-m", "-n", "-O", "x=y",
        "-o7", "-o8", "-om", "-oQ/var/spool", "-p", "smtp", "-U", "-x", "-X", "/tmp/log", "bob",
    )  # fmt: skip
    assert opts.mode == ENQUEUE
    assert opts.recipients == ["bob"]
    assert opts.dot_ends_input


def test_oa_names_the_alias_database() -> None:
    assert parse("-bi", "-oAhash:/etc/other").alias_database == "hash:/etc/other"
    assert usage_error("-oA") == "-oA requires pathname"


def test_c_names_the_configuration() -> None:
    assert parse("-C", "/etc/sdmail-out/main.cf").config_dir == "/etc/sdmail-out/main.cf"


def test_body_type() -> None:
    assert parse("-B", "8BITMIME").body_type == "8BITMIME"
    assert usage_error("-B", "binary") == "-B option needs 8BITMIME or 7BIT"


def test_dsn_options() -> None:
    opts = parse("-N", "success, delay", "-R", "hdrs", "-V", "envid-1")
    assert opts.notify == Notify.SUCCESS | Notify.DELAY
    assert (opts.ret, opts.envid) == ("HDRS", "envid-1")
    assert parse("-Nnever").notify == Notify.NEVER


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (("-N", "never,success"), "bad -N option value -- ignored"),
        (("-N", "sometimes"), "bad -N option value -- ignored"),
        (("-R", "most"), "bad -R option value -- ignored"),
        (("-V", "x" * 101), "too long -V option value -- ignored"),
        (("-V", "a\tb"), "bad syntax in -V option value -- ignored"),
    ],
)
def test_bad_dsn_values_warn_and_are_ignored(args: tuple[str, ...], warning: str) -> None:
    opts = parse(*args)
    assert opts.warnings == [warning]
    assert (opts.notify, opts.ret, opts.envid) == (Notify(0), None, None)


def test_old_verp_spellings_warn() -> None:
    assert parse("-V", "+=").verp
    assert parse("-V+=").warnings == [
        "option -V+= is deprecated with Postfix 2.3; specify -XV+= instead"
    ]
    assert parse("-XV").verp


def test_usage_errors() -> None:
    assert usage_error("-z").startswith("invalid option -- 'z'")
    assert usage_error("-f").startswith("option requires an argument -- 'f'")
    assert usage_error("-bz") == "unsupported: -bz"
    assert usage_error("-t", "-bp") == "-t can be used only in delivery mode"
    assert usage_error("-bp", "-qRsite") == "-qR can be used only in delivery mode"
    assert usage_error("-bi", "-qIid") == "-qI can be used only in delivery mode"
    assert usage_error("-bv", "-t") == "-t option cannot be used with -bv"
    assert usage_error("-bv", "-Nsuccess") == "-N option cannot be used with -bv"
    assert usage_error("-bv", "-Rfull") == "-R option cannot be used with -bv"
    assert usage_error("-bv", "-v") == "-v option cannot be used with -bv"


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("never", Notify.NEVER),
        ("NEVER", Notify.NEVER),
        ("failure", Notify.FAILURE),
        ("success,delay,failure", Notify.SUCCESS | Notify.DELAY | Notify.FAILURE),
        ("", None),
        ("never,failure", None),
        ("soon", None),
    ],
)
def test_dsn_notify(text: str, flags: Notify | None) -> None:
    assert dsn_notify(text) == flags


@given(st.lists(st.text(max_size=12), max_size=8))
def test_any_command_line_parses_or_is_a_usage_error(args: list[str]) -> None:
    try:
        parse(*args)
    except SendmailExit as stop:
        assert stop.status == os.EX_USAGE
        assert stop.text


# -- addresses -------------------------------------------------------------------------
def test_recipient_arguments_are_address_lists_in_internal_form() -> None:
    assert command_line_recipients(
        ["bob", "Carol <carol@example.org>, dave@example.org", '"john doe"@example.org']
    ) == ["bob", "carol@example.org", "dave@example.org", "john doe@example.org"]


def test_bad_recipient_argument_is_a_usage_error() -> None:
    with pytest.raises(SendmailExit) as caught:
        command_line_recipients(["a b c"])
    assert caught.value.status == os.EX_USAGE
    assert caught.value.text.startswith("bad recipient address: a b c:")
    with pytest.raises(SendmailExit):
        command_line_recipients([""])


@pytest.mark.parametrize(
    ("text", "sender"),
    [("", ""), ("<>", ""), (" <> ", ""), ("me", "me"), ("Me <me@example.org>", "me@example.org")],
)
def test_envelope_sender(text: str, sender: str) -> None:
    assert envelope_sender(text, []) == sender


def test_sender_with_two_addresses_warns_and_takes_the_first() -> None:
    warnings: list[str] = []
    assert envelope_sender("a@x, b@y", warnings) == "a@x"
    assert warnings == ["-f option specified malformed sender: a@x, b@y"]


def test_plain_addresses_take_the_fast_path_with_the_same_result() -> None:
    from sdmail.core.address import parse_header_addresses

    for text in ["root", "a.b+c@example.org", "x_y@sub.example.co.uk"]:
        assert addresses_in(text) == [a.address for a in parse_header_addresses(text)]


@given(st.from_regex(r"[A-Za-z0-9.+_=-]{1,20}(@[A-Za-z0-9.-]{1,20})?", fullmatch=True))
def test_fast_path_agrees_with_the_parser(text: str) -> None:
    from sdmail.core.address import AddressError, parse_header_addresses

    try:
        expected = [a.address for a in parse_header_addresses(text)]
    except AddressError:
        expected = None
    try:
        got = addresses_in(text)
    except AddressError:
        got = None
    assert got == expected


# -- exit statuses -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "dsn", "status"),
    [
        (451, "4.3.0", os.EX_TEMPFAIL),
        (550, "5.7.1", os.EX_NOPERM),
        (550, "5.1.0", os.EX_USAGE),
        (501, "5.1.3", os.EX_DATAERR),
        (501, "5.1.7", os.EX_DATAERR),
        (552, "5.3.4", os.EX_UNAVAILABLE),
    ],
)
def test_exit_status_of_refusal(code: int, dsn: str, status: int) -> None:
    assert exit_status_of_refusal(code, dsn) == status
