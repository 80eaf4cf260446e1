"""postdrop's decisions: who may submit, as which sender, and the maildrop envelope."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.config import bind, load_config
from sdmail.core.mail_stream import SubmitRecipient, SubmitRequest
from sdmail.core.records import BodyType, DsnRet, Notify, RewriteContext
from sdmail.postdrop.policy import (
    PostdropSettings,
    Refusal,
    SubmitPolicy,
    Submitter,
    gecos_full_name,
    header_recipients_present,
    sender_patterns,
    submitter_of,
    valid_internal_address,
)

POSTFIX_TEST_MAP = "inline:{root=*, {foo = foo,foo@example.com}, bar=<>, {uid:12345 = foo}}"

ALICE = Submitter(1000, "alice", "Alice Liddell")
NO_NAME = Submitter(54321, None)


def policy(tmp_path: Path, *overrides: str) -> SubmitPolicy:
    cfg = load_config(tmp_path, list(overrides), missing_ok=True)
    return SubmitPolicy(bind(PostdropSettings, cfg))


def request(*recipients: str, **fields: object) -> SubmitRequest:
    return SubmitRequest(
        sender=fields.pop("sender", None),  # type: ignore[arg-type]
        recipients=tuple(SubmitRecipient(r) for r in recipients),
        **fields,  # type: ignore[arg-type]
    )


def refusal(call: object, *args: object) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


# -- the submitter ----------------------------------------------------------------------
def test_gecos_name_stops_at_the_first_comma() -> None:
    assert gecos_full_name("Alice Liddell,Room 1,,", "alice") == "Alice Liddell"


def test_gecos_ampersand_is_the_capitalised_login_name() -> None:
    assert gecos_full_name("& Jones", "bob") == "Bob Jones"


def test_empty_gecos_is_no_name() -> None:
    assert gecos_full_name(",,,", "bob") is None


def test_submitter_of_root_has_login_root() -> None:
    assert submitter_of(0).login == pwd.getpwuid(0).pw_name


def test_submitter_without_password_entry_is_unknown_with_uid_key() -> None:
    uid = 2_000_000_000
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            break
        uid += 1
    found = submitter_of(uid)
    assert (found.login, found.acl_name, found.sender_lookup_key) == (None, "unknown", f"uid:{uid}")


# -- authorized_submit_users ------------------------------------------------------------
def test_default_lets_anyone_submit(tmp_path: Path) -> None:
    policy(tmp_path).check_user(NO_NAME)


NOBODY = pwd.getpwnam("nobody")


def test_user_not_listed_is_refused_with_postfix_text(tmp_path: Path) -> None:
    nobody = submitter_of(NOBODY.pw_uid)
    refused = refusal(policy(tmp_path, "authorized_submit_users=root").check_user, nobody)
    assert (refused.code, refused.dsn, refused.text) == (
        550,
        "5.7.1",
        f"User nobody({NOBODY.pw_uid}) is not allowed to submit mail",
    )


def test_negated_user_is_refused_and_others_pass(tmp_path: Path) -> None:
    decide = policy(tmp_path, "authorized_submit_users=!nobody, static:anyone")
    refusal(decide.check_user, submitter_of(NOBODY.pw_uid))
    decide.check_user(submitter_of(0))


def test_root_is_not_exempt_from_authorized_submit_users(tmp_path: Path) -> None:
    decide = policy(tmp_path, "authorized_submit_users=nobody")
    assert refusal(decide.check_user, submitter_of(0)).text == (
        "User root(0) is not allowed to submit mail"
    )


def test_unknown_uid_matches_the_name_unknown(tmp_path: Path) -> None:
    refused = refusal(
        policy(tmp_path, "authorized_submit_users=!unknown, static:anyone").check_user, NO_NAME
    )
    assert refused.text == "User unknown(54321) is not allowed to submit mail"


def test_empty_list_lets_nobody_submit(tmp_path: Path) -> None:
    refusal(policy(tmp_path, "authorized_submit_users=").check_user, Submitter(0, "root"))


# -- local_login_sender_maps: Postfix's own test cases -----------------------------------
@pytest.mark.parametrize(
    ("login", "sender", "allowed"),
    [
        ("root", "anything", True),  # wildcard works
        ("toor", "anything", False),  # unknown user
        ("foo", "foo", True),  # bare user
        ("foo", "foo@example.com", True),  # user@domain
        ("foo", "FOO@Example.COM", True),  # case does not matter
        ("foo", "foo+bar@example.com", True),  # extension ignored
        ("foo", "bar@example.com", False),  # wrong sender
        ("bar", "", True),  # null sender
        ("baz", "", False),  # wrong null sender
        ("foo", "", False),
    ],
)
def test_login_sender_patterns(tmp_path: Path, login: str, sender: str, allowed: bool) -> None:
    decide = policy(
        tmp_path, f"local_login_sender_maps={POSTFIX_TEST_MAP}", "recipient_delimiter=+-"
    )
    assert decide.sender_allowed(Submitter(1, login), sender) is allowed


def test_at_domain_pattern_matches_only_that_domain(tmp_path: Path) -> None:
    decide = policy(tmp_path, "local_login_sender_maps=inline:{root=*, {foo = @example.com}}")
    assert decide.sender_allowed(Submitter(1, "foo"), "anyone@example.com")
    assert not decide.sender_allowed(Submitter(1, "foo"), "anyone@example.org")
    assert not decide.sender_allowed(Submitter(1, "foo"), "example.com")


def test_uid_key_for_a_user_without_a_name(tmp_path: Path) -> None:
    decide = policy(tmp_path, f"local_login_sender_maps={POSTFIX_TEST_MAP}")
    assert decide.sender_allowed(Submitter(12345, None), "foo")
    assert not decide.sender_allowed(Submitter(54321, None), "foo")


def test_quoted_local_part_pattern(tmp_path: Path) -> None:
    decide = policy(
        tmp_path,
        'local_login_sender_maps=inline:{{foo = "first last","first last"@example.com}}',
    )
    assert decide.sender_allowed(Submitter(1, "foo"), "first last")
    assert decide.sender_allowed(Submitter(1, "foo"), "first last@example.com")
    assert not decide.sender_allowed(Submitter(1, "foo"), "other last")


def test_sender_patterns_split_outside_quotes() -> None:
    assert sender_patterns('foo, "a b,c"@x\t@y') == ["foo", '"a b,c"@x', "@y"]


def test_sender_not_allowed_is_refused_naming_user_and_sender(tmp_path: Path) -> None:
    decide = policy(tmp_path, "local_login_sender_maps=inline:{root=*}")
    refused = refusal(decide.sender_of, ALICE, "boss@example.com")
    assert (refused.code, refused.dsn) == (550, "5.7.1")
    assert refused.text == (
        "User alice(1000) is not allowed to use sender address <boss@example.com>"
    )


def test_login_name_sender_is_checked_too_as_in_postfix(tmp_path: Path) -> None:
    decide = policy(tmp_path, "local_login_sender_maps=inline:{root=*}")
    refusal(decide.sender_of, ALICE, None)


# -- the sender ----------------------------------------------------------------------------
def test_sender_defaults_to_the_login_name(tmp_path: Path) -> None:
    assert policy(tmp_path).sender_of(ALICE, None) == "alice"


def test_null_sender_is_kept(tmp_path: Path) -> None:
    assert policy(tmp_path).sender_of(ALICE, "") == ""


def test_no_login_name_and_no_sender_is_refused(tmp_path: Path) -> None:
    refused = refusal(policy(tmp_path).sender_of, NO_NAME, None)
    assert refused.text == "no login name found for user ID 54321"


@pytest.mark.parametrize("bad", ["a@", "x\n@y", "<a@b>", "a@[300.1.1.1]", "a\x00@b"])
def test_malformed_sender_is_refused_5_1_7(tmp_path: Path, bad: str) -> None:
    refused = refusal(policy(tmp_path).sender_of, ALICE, bad)
    assert (refused.code, refused.dsn, refused.text) == (501, "5.1.7", "Bad sender address syntax")


def test_internal_form_quoted_local_part_is_valid() -> None:
    assert valid_internal_address("john doe@example.com")
    assert valid_internal_address("user")
    assert valid_internal_address("@x")  # an empty quoted local part: ""@x
    assert not valid_internal_address("john\rdoe@example.com")


@given(st.text(max_size=80))
def test_address_check_never_raises(text: str) -> None:
    valid_internal_address(text)


# -- recipients and the envelope ---------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "a@", "bob\r@x", "a@[IPv6:zz]", "\udcff@x"])
def test_bad_recipient_is_refused_5_1_3(tmp_path: Path, bad: str) -> None:
    refused = refusal(policy(tmp_path).envelope, ALICE, request(bad), b"")
    assert (refused.code, refused.dsn, refused.text) == (
        501,
        "5.1.3",
        "Bad recipient address syntax",
    )


def test_no_recipients_without_t_is_refused_with_sendmails_text(tmp_path: Path) -> None:
    refused = refusal(policy(tmp_path).envelope, ALICE, request(), b"To: bob\n\n")
    assert (refused.code, refused.dsn) == (550, "5.1.0")
    assert refused.text.startswith("Recipient addresses must be specified on the command line")


def test_t_without_recipient_headers_is_refused(tmp_path: Path) -> None:
    content = b"Subject: x\nX-To: bob\n\nTo: carol\n"
    refused = refusal(policy(tmp_path).envelope, ALICE, request(extract_recipients=True), content)
    assert refused.text == "No recipient addresses found in message header"


@pytest.mark.parametrize(
    "content",
    [
        b"To: bob\n\n",
        b"Subject: a\r\nCC:\r\n  Bob <bob@example.org>\r\n\r\n",
        b"Resent-Bcc: carol@example.org\n",
        b"To: undisclosed-recipients:;\nBcc: dave\n\nbody",
    ],
)
def test_t_with_recipient_headers_is_accepted(tmp_path: Path, content: bytes) -> None:
    envelope = policy(tmp_path).envelope(ALICE, request(extract_recipients=True), content)
    assert ("extract_recipients", "yes") in envelope.attributes
    assert envelope.recipients == ()


@given(st.binary(max_size=300))
def test_header_scan_never_raises(content: bytes) -> None:
    header_recipients_present(content)


def test_envelope_carries_what_pickup_needs(tmp_path: Path) -> None:
    req = SubmitRequest(
        sender="owner-list+x@example.org",
        recipients=(
            SubmitRecipient("bob@example.org", notify=(Notify.SUCCESS | Notify.FAILURE).value),
            SubmitRecipient("john doe@example.org", orcpt="rfc822;john@example.org"),
        ),
        full_name="Alice L.",
        ret="hdrs",
        envid="abc123",
        body_type="8bitmime",
        attributes={"rewrite_context": "remote", "uid": "0"},
    )
    envelope = policy(tmp_path).envelope(ALICE, req, b"body\n", now=1700000000.25)
    assert envelope.sender == "owner-list+x@example.org"
    assert [r.address for r in envelope.recipients] == ["bob@example.org", "john doe@example.org"]
    assert envelope.recipients[0].notify == Notify.SUCCESS | Notify.FAILURE
    assert envelope.recipients[1].orcpt == "rfc822;john@example.org"
    assert (envelope.arrival_sec, envelope.arrival_usec) == (1700000000, 250000)
    assert envelope.sender_fullname == "Alice L."
    assert (envelope.ret, envelope.envid, envelope.body_type) == (
        DsnRet.HDRS,
        "abc123",
        BodyType.EIGHT_BIT_MIME,
    )
    assert envelope.client.rewrite_context is RewriteContext.REMOTE
    # The uid is the kernel's, whatever the request says.
    assert envelope.attributes == (("uid", "1000"),)


def test_full_name_falls_back_to_gecos_and_empty_means_none(tmp_path: Path) -> None:
    decide = policy(tmp_path)
    assert decide.envelope(ALICE, request("bob"), b"").sender_fullname == "Alice Liddell"
    assert decide.envelope(ALICE, request("bob", full_name=""), b"").sender_fullname is None


def test_default_rewrite_context_is_local(tmp_path: Path) -> None:
    envelope = policy(tmp_path).envelope(ALICE, request("bob"), b"")
    assert envelope.client.rewrite_context is RewriteContext.LOCAL
    assert envelope.client.log_message_origin == "local"


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("ret", "most", "Bad RET parameter syntax"),
        ("envid", "a\x01b", "Bad ENVID parameter syntax"),
        ("envid", "x" * 101, "Bad ENVID parameter syntax"),
        ("body_type", "binarymime", "Bad BODY parameter syntax"),
    ],
)
def test_bad_dsn_fields_are_refused(tmp_path: Path, field: str, value: str, text: str) -> None:
    refused = refusal(policy(tmp_path).envelope, ALICE, request("bob", **{field: value}), b"")
    assert refused.text == text


def test_bad_notify_value_is_refused(tmp_path: Path) -> None:
    req = SubmitRequest(sender=None, recipients=(SubmitRecipient("bob", notify=99),))
    assert refusal(policy(tmp_path).envelope, ALICE, req, b"").text == "Bad NOTIFY parameter syntax"


def test_unreadable_sender_table_is_a_config_error(tmp_path: Path) -> None:
    from sdmail.core.tables.table import TableError

    with pytest.raises(TableError):
        policy(tmp_path, f"local_login_sender_maps=hash:{tmp_path}/missing")


def test_current_user_is_resolved_from_the_password_file() -> None:
    me = submitter_of(os.getuid())
    assert me.uid == os.getuid()
    assert me.login == pwd.getpwuid(os.getuid()).pw_name
