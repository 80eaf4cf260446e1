"""smtpd/session.py: the dialogue, verb by verb, with the queue files it leaves."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdmail.core.qfile import decode
from sdmail.core.records import BodyType, DsnRet, Notify
from sdmail.smtpd import replies
from sdmail.smtpd.session import ChunkExpected, _split_path_argument, _xtext_decode


def queued_files(world, queue="incoming"):
    folder = world.queue_dir / queue
    found = []
    for name in sorted(os.listdir(folder)):
        data = (folder / name).read_bytes()
        queue_file = decode(data)
        found.append((name, queue_file.envelope, queue_file.content_from(data)))
    return found


def opened(world, talk, extra="", helo="EHLO client.example"):
    session = world.session(extra)
    session.greeting()
    assert talk(session, helo).startswith("250")
    return session


# -- greeting and hello ----------------------------------------------------------------------
def test_greeting_is_the_banner(world):
    assert world.session().greeting().wire() == b"220 mail.example.test ESMTP sdmail\r\n"


def test_ehlo_offers_postfix_keywords_in_postfix_order(world):
    reply = world.session().command(b"EHLO client.example")
    assert reply.wire() == (
        b"250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
        b"250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    )


def test_ehlo_follows_the_parameters(world):
    extra = (
        "message_size_limit = 0\ndisable_vrfy_command = yes\nsmtputf8_enable = no\n"
        "smtpd_discard_ehlo_keywords = dsn, chunking\n"
    )
    reply = world.session(extra).command(b"EHLO client.example")
    assert reply.lines == (
        "mail.example.test",
        "PIPELINING",
        "SIZE",
        "ETRN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
    )


def test_helo_answers_with_the_host_name_and_no_extensions(world, talk):
    session = world.session()
    assert talk(session, "HELO client.example") == "250 mail.example.test"
    assert session.protocol == "SMTP" and not session.pipelining
    assert talk(session, "HELO") == "501 Syntax: HELO hostname"


def test_mail_needs_helo_when_the_admin_says_so(world, talk):
    session = world.session("smtpd_helo_required = yes\n")
    assert talk(session, "MAIL FROM:<a@b.example>") == "503 5.5.1 Error: send HELO/EHLO first"


# -- commands out of order -------------------------------------------------------------------
def test_commands_out_of_order_get_postfix_errors(world, talk):
    session = opened(world, talk)
    assert talk(session, "RCPT TO:<root@localhost>") == "503 5.5.1 Error: need MAIL command"
    assert talk(session, "DATA") == "503 5.5.1 Error: need RCPT command"
    assert talk(session, "MAIL FROM:<a@b.example>") == "250 2.1.0 Ok"
    assert talk(session, "MAIL FROM:<a@b.example>") == "503 5.5.1 Error: nested MAIL command"
    assert talk(session, "DATA") == "554 5.5.1 Error: no valid recipients"
    assert talk(session, "RSET") == "250 2.0.0 Ok"
    assert talk(session, "RCPT TO:<root@localhost>") == "503 5.5.1 Error: need MAIL command"


def test_unknown_and_forbidden_commands(world, talk):
    session = opened(world, talk)
    assert talk(session, "XYZZY frobnicate") == "500 5.5.2 Error: command not recognized"
    assert talk(session, "") == "500 5.5.2 Error: bad syntax"
    assert talk(session, "NOOP\0") == "500 5.5.2 Error: bad syntax"
    forbidden = session.command(b"GET / HTTP/1.1")
    assert forbidden.logged() == "221 2.7.0 Error: I can break rules, too. Goodbye."
    assert forbidden.close


def test_noop_help_quit(world, talk):
    session = opened(world, talk)
    assert talk(session, "NOOP") == "250 2.0.0 Ok"
    assert talk(session, "HELP").startswith("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT")
    bye = session.command(b"QUIT")
    assert bye.logged() == "221 2.0.0 Bye" and bye.close


# -- MAIL and RCPT syntax and parameters ---------------------------------------------------
def test_mail_syntax_errors(world, talk):
    session = opened(world, talk)
    assert talk(session, "MAIL TO:<a@b.example>") == "501 5.5.4 Syntax: MAIL FROM:<address>"
    assert talk(session, "MAIL FROM:") == "501 5.5.4 Syntax: MAIL FROM:<address>"
    assert talk(session, "MAIL FROM:<a@b.example") == "501 5.1.7 Bad sender address syntax"
    long_address = "MAIL FROM:<" + "a" * 3000 + "@example.org>"
    assert talk(session, long_address) == "501 5.1.7 Bad sender address syntax"
    assert talk(session, "MAIL FROM: <a@b.example>") == "250 2.1.0 Ok"


def test_rcpt_syntax_errors(world, talk):
    session = opened(world, talk)
    talk(session, "MAIL FROM:<>")
    assert talk(session, "RCPT FROM:<root@localhost>") == "501 5.5.4 Syntax: RCPT TO:<address>"
    assert talk(session, "RCPT TO:<>") == "501 5.1.3 Bad recipient address syntax"
    assert talk(session, "RCPT TO:<a b@c>") == "501 5.1.3 Bad recipient address syntax"


def test_unsupported_and_bad_parameters(world, talk):
    session = opened(world, talk)
    assert talk(session, "MAIL FROM:<a@b.example> FOO=bar") == ("555 5.5.4 Unsupported option: FOO")
    assert talk(session, "MAIL FROM:<a@b.example> SIZE=abc") == (
        "501 5.5.4 Bad SIZE parameter syntax"
    )
    assert talk(session, "MAIL FROM:<a@b.example> BODY=BINARYMIME") == (
        "501 5.5.4 Unsupported BODY parameter"
    )
    assert talk(session, "MAIL FROM:<a@b.example> RET=ALL") == "501 5.5.4 Bad RET parameter syntax"
    assert talk(session, "MAIL FROM:<a@b.example> ENVID=a+zz") == (
        "501 5.5.4 Bad ENVID parameter syntax"
    )
    assert talk(session, "MAIL FROM:<a@b.example>") == "250 2.1.0 Ok"
    assert talk(session, "RCPT TO:<root@localhost> NOTIFY=NEVER,DELAY") == (
        "501 5.5.4 Bad NOTIFY parameter syntax"
    )
    assert talk(session, "RCPT TO:<root@localhost> ORCPT=rfc822") == (
        "501 5.5.4 Bad ORCPT parameter syntax"
    )
    assert talk(session, "RCPT TO:<root@localhost> X=1") == "555 5.5.4 Unsupported option: X"


def test_parameters_need_ehlo(world, talk):
    session = opened(world, talk, helo="HELO client.example")
    assert talk(session, "MAIL FROM:<a@b.example> SIZE=10") == (
        "501 5.5.4 Syntax: MAIL FROM:<address>"
    )


def test_size_over_the_limit_is_refused_at_mail(world, talk):
    session = opened(world, talk, "message_size_limit = 200000\n")
    assert talk(session, "MAIL FROM:<a@b.example> SIZE=300000") == (
        "552 5.3.4 Message size exceeds fixed limit"
    )
    assert talk(session, "MAIL FROM:<a@b.example> SIZE=1000") == "250 2.1.0 Ok"


def test_unicode_addresses_need_smtputf8(world, talk):
    session = opened(world, talk)
    assert talk(session, "MAIL FROM:<jösé@b.example>") == (
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    )
    assert talk(session, "MAIL FROM:<a@b.example>") == "250 2.1.0 Ok"
    assert talk(session, "RCPT TO:<jösé@localhost>") == (
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    )
    assert talk(world.session("smtputf8_enable = no\n"), "EHLO x.example").startswith("250")


def test_too_many_recipients_is_a_452_that_does_not_count_as_an_error(world, talk):
    session = opened(world, talk, "smtpd_recipient_limit = 3\n")
    talk(session, "MAIL FROM:<a@b.example>")
    for _ in range(3):
        assert talk(session, "RCPT TO:<root@localhost>") == "250 2.1.5 Ok"
    errors = session.error_count
    assert talk(session, "RCPT TO:<root@localhost>") == "452 4.5.3 Error: too many recipients"
    assert session.error_count == errors


# -- messages --------------------------------------------------------------------------------
def test_data_queues_the_message_with_received_and_dsn_fields(world, talk):
    session = opened(world, talk)
    talk(session, "MAIL FROM:<a@b.example> RET=hdrs ENVID=Case+2BKept BODY=8BITMIME")
    talk(session, "RCPT TO:<root@localhost> NOTIFY=success,Delay ORCPT=rfc822;Root+40LocalHost")
    assert talk(session, "DATA") == "354 End data with <CR><LF>.<CR><LF>"
    outcome = session.end_of_data(b"Subject: hello\r\n\r\nbody\r\n", 26, too_big=False)
    ((queue_id, envelope, content),) = queued_files(world)
    assert outcome.logged() == f"250 2.0.0 Ok: queued as {queue_id}"
    assert (envelope.ret, envelope.envid, envelope.body_type) == (
        DsnRet.HDRS,
        "Case+Kept",
        BodyType.EIGHT_BIT_MIME,
    )
    (recipient,) = envelope.recipients
    assert recipient.notify == Notify.SUCCESS | Notify.DELAY
    assert recipient.orcpt == "rfc822;Root@LocalHost"
    assert content.startswith(b"Received: from client.example (client.example [192.0.2.10])\n")
    assert f"by mail.example.test (sdmail) with ESMTP id {queue_id}".encode() in content
    assert envelope.client.log_client_port == 40000


def test_message_over_the_limit_is_refused_and_not_queued(world, talk):
    session = opened(world, talk)
    talk(session, "MAIL FROM:<a@b.example>")
    talk(session, "RCPT TO:<root@localhost>")
    talk(session, "DATA")
    assert session.end_of_data(b"", 300000, too_big=True) == replies.MESSAGE_TOO_BIG
    assert queued_files(world) == []
    assert talk(session, "RCPT TO:<root@localhost>") == "503 5.5.1 Error: need MAIL command"


def test_bdat_chunks_make_one_message(world, talk):
    session = opened(world, talk)
    talk(session, "MAIL FROM:<a@b.example>")
    talk(session, "RCPT TO:<root@localhost>")
    assert session.command(b"BDAT 9") == ChunkExpected(9, last=False)
    assert session.wants_chunk()
    assert session.bdat_chunk(b"Subject: ").logged() == "250 2.0.0 Ok: 9 bytes"
    assert session.command(b"BDAT 7 last") == ChunkExpected(7, last=True)
    outcome = session.bdat_chunk(b"x\r\n\r\nb\n")
    ((queue_id, _, content),) = queued_files(world)
    assert outcome.logged() == f"250 2.0.0 Ok: 16 bytes queued as {queue_id}"
    assert content.endswith(b"Subject: x\n\nb\n")


def test_bdat_without_a_transaction_is_read_and_refused(world, talk):
    session = opened(world, talk)
    assert session.command(b"BDAT 5 LAST") == ChunkExpected(5, last=True)
    assert not session.wants_chunk()
    assert session.bdat_chunk(None) == replies.NEED_RCPT
    assert talk(session, "BDAT five") == "501 5.5.4 Syntax: BDAT count [LAST]"


def test_bdat_over_the_size_limit_fails_every_chunk_until_last(world, talk):
    session = opened(world, talk, "message_size_limit = 10\n")
    talk(session, "MAIL FROM:<a@b.example>")
    talk(session, "RCPT TO:<root@localhost>")
    session.command(b"BDAT 8")
    assert session.bdat_chunk(b"12345678") == replies.bdat_chunk_ok(8)
    session.command(b"BDAT 8")
    assert not session.wants_chunk()
    assert session.bdat_chunk(None) == replies.MESSAGE_TOO_BIG
    session.command(b"BDAT 1 LAST")
    assert session.bdat_chunk(None) == replies.MESSAGE_TOO_BIG
    assert queued_files(world) == []
    assert talk(session, "MAIL FROM:<a@b.example>") == "250 2.1.0 Ok"


def test_data_after_bdat_is_refused(world, talk):
    session = opened(world, talk)
    talk(session, "MAIL FROM:<a@b.example>")
    talk(session, "RCPT TO:<root@localhost>")
    session.command(b"BDAT 3")
    session.bdat_chunk(b"abc")
    assert talk(session, "DATA") == "503 5.5.1 Error: DATA and BDAT in one transaction"


def test_access_hold_puts_the_message_on_hold(world, talk):
    table = world.table("access", "b.example HOLD\n")
    session = opened(world, talk, f"smtpd_sender_restrictions = check_sender_access {table}\n")
    talk(session, "MAIL FROM:<a@b.example>")
    talk(session, "RCPT TO:<root@localhost>")
    talk(session, "DATA")
    assert session.end_of_data(b"\r\n", 2, too_big=False).code == 250
    assert queued_files(world) == []
    assert len(queued_files(world, "hold")) == 1


# -- VRFY -------------------------------------------------------------------------------------
def test_vrfy(world, talk):
    session = opened(world, talk)
    assert talk(session, "VRFY <root@localhost>") == "252 2.0.0 <root@localhost>"
    assert talk(session, "VRFY nosuch@localhost") == (
        "550 5.1.1 <nosuch@localhost>: Recipient address rejected: "
        "User unknown in local recipient table"
    )
    assert talk(session, "VRFY") == "501 5.5.4 Syntax: VRFY address"
    disabled = opened(world, talk, "disable_vrfy_command = yes\n")
    assert talk(disabled, "VRFY root") == "502 5.5.1 VRFY command is disabled"


# -- statistics and limits ------------------------------------------------------------------
def test_disconnect_line_counts_commands_as_postfix(world, talk):
    session = opened(world, talk)
    talk(session, "MAIL FROM:<a@b.example>")
    talk(session, "RCPT TO:<root@localhost>")
    talk(session, "RCPT TO:<nosuch@localhost>")
    talk(session, "DATA")
    session.end_of_data(b"\r\n", 2, too_big=False)
    talk(session, "BOGUS")
    talk(session, "QUIT")
    assert session.disconnect_line() == (
        "disconnect from client.example[192.0.2.10] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 "
        "unknown=0/1 commands=5/7"
    )


def test_disconnect_line_of_a_silent_client(world):
    assert world.session().disconnect_line() == (
        "disconnect from client.example[192.0.2.10] commands=0"
    )


def test_errors_slow_down_then_end_the_session(world, talk):
    session = opened(world, talk, "smtpd_soft_error_limit = 2\nsmtpd_hard_error_limit = 4\n")
    talk(session, "BOGUS")
    assert session.reply_delay() == 0
    talk(session, "BOGUS")
    assert session.reply_delay() == 1
    talk(session, "BOGUS")
    assert not session.too_many_errors()
    talk(session, "BOGUS")
    assert session.too_many_errors()
    assert session.too_many_errors_reply().logged() == (
        "421 4.7.0 mail.example.test Error: too many errors"
    )


def test_junk_commands_count_as_errors_past_their_limit(world, talk):
    session = opened(world, talk, "smtpd_junk_command_limit = 2\n")
    for _ in range(4):
        talk(session, "NOOP")
    assert session.error_count == 2


# -- hostile input ----------------------------------------------------------------------------
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=300), max_size=6))
def test_any_command_bytes_get_a_reply(world, lines):
    session = world.session()
    for prefix in (b"EHLO x.example", b"MAIL FROM:<a@b.example>", b"RCPT TO:<root@localhost>"):
        session.command(prefix)
    for line in lines:
        for candidate in (line, b"MAIL FROM:" + line, b"RCPT TO:" + line, b"VRFY " + line):
            outcome = session.command(candidate)
            if isinstance(outcome, ChunkExpected):
                session.bdat_chunk(None)
            else:
                assert 200 <= outcome.code <= 599


@given(st.text(max_size=60))
def test_xtext_decoding_never_fails_and_keeps_what_it_accepts_printable(text):
    decoded = _xtext_decode(text)
    assert decoded is None or all(32 <= ord(c) <= 126 for c in decoded)


@given(st.text(max_size=80))
def test_path_argument_split_never_fails(text):
    split = _split_path_argument("FROM:" + text, "FROM:")
    assert split is None or isinstance(split[1], list)
