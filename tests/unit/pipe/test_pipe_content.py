"""What the command reads on stdin, flag by flag, in Postfix's order."""

from __future__ import annotations

import re

from sdmail.pipe.content import Envelope, command_input

CONTENT = b"Subject: hi\n\nFrom me\n.dot\nlast\n"
ENVELOPE = Envelope("ann@example.org", "List@x.test", "Joe@X.test", 1_700_000_000.0)


def test_without_flags_the_message_is_copied_unchanged() -> None:
    assert command_input(CONTENT, ENVELOPE, "", b"\n") == CONTENT


def test_envelope_lines_come_in_postfix_order() -> None:
    data = command_input(CONTENT, ENVELOPE, "DORF", b"\n")
    first, rest = data.split(b"\n", 1)
    assert re.fullmatch(rb"From ann@example\.org  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", first)
    assert rest == (
        b"Return-Path: <ann@example.org>\nX-Original-To: List@x.test\n"
        b"Delivered-To: joe@x.test\n" + CONTENT
    )


def test_from_quoting_dot_stuffing_blank_line_and_eol() -> None:
    data = command_input(CONTENT, ENVELOPE, ">.B", b"\r\n")
    assert data == b"Subject: hi\r\n\r\n>From me\r\n..dot\r\nlast\r\n\r\n"


def test_the_null_sender_replacement_is_what_the_headers_show() -> None:
    envelope = Envelope("MAILER-DAEMON", "a@x", "a@x", 0.0)
    assert command_input(b"x\n", envelope, "R", b"\n") == b"Return-Path: <MAILER-DAEMON>\nx\n"
    empty = Envelope("", "a@x", "a@x", 0.0)
    assert command_input(b"x\n", empty, "RF", b"\n").startswith(b"From MAILER-DAEMON  ")


def test_a_last_line_without_line_end_gets_one() -> None:
    assert command_input(b"a\nb", ENVELOPE, "", b"\n") == b"a\nb\n"
