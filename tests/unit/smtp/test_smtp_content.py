"""smtp/content.py: DATA bytes, folding, dot-stuffing, 8-bit and SMTPUTF8 decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.records import BodyType, Envelope
from sdmail.smtp.content import (
    data_bytes,
    encoding_of,
    needs_smtputf8,
    orcpt_parameter,
    xtext,
)


def test_lines_get_crlf_and_the_end_marker() -> None:
    assert data_bytes(b"Subject: x\n\nbody\n", 998) == (b"Subject: x\r\n\r\nbody\r\n.\r\n", False)


def test_a_missing_last_newline_is_added() -> None:
    assert data_bytes(b"Subject: x\n\nbody", 998)[0].endswith(b"body\r\n.\r\n")


def test_leading_dots_are_doubled() -> None:
    payload, _ = data_bytes(b"a\n.\n..b\n.c\n", 998)
    assert payload == b"a\r\n..\r\n...b\r\n..c\r\n.\r\n"


def test_a_line_of_exactly_the_limit_is_not_folded() -> None:
    payload, folded = data_bytes(b"x" * 998 + b"\n", 998)
    assert not folded
    assert payload == b"x" * 998 + b"\r\n.\r\n"


def test_longer_lines_are_folded_as_postfix_folds_them() -> None:
    line = bytes(range(97, 123)) * 100  # 2600 octets
    payload, folded = data_bytes(line + b"\n", 998)
    assert folded
    pieces = payload.split(b"\r\n")[:-2]
    assert [len(p) for p in pieces] == [998, 998, 606]
    assert pieces[1].startswith(b" ") and pieces[2].startswith(b" ")
    assert pieces[0] + pieces[1][1:] + pieces[2][1:] == line


def test_folding_can_be_turned_off() -> None:
    assert data_bytes(b"x" * 5000 + b"\n", 0) == (b"x" * 5000 + b"\r\n.\r\n", False)


@given(st.binary(max_size=3000), st.integers(min_value=2, max_value=1200))
def test_data_never_holds_a_long_line_nor_ends_early(content: bytes, limit: int) -> None:
    payload, _ = data_bytes(content, limit)
    lines = payload.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    for line in lines[:-2]:
        assert len(line) <= limit + 1  # a doubled dot may add one
        assert line != b"."


def test_the_encoding_follows_body_and_content() -> None:
    envelope = Envelope("a@example.org")
    assert encoding_of(envelope, b"plain\n") == ""
    assert encoding_of(envelope, "caf\u00e9\n".encode()) == "8BIT"
    assert encoding_of(Envelope("a@x", body_type=BodyType.EIGHT_BIT_MIME), b"plain\n") == "8BIT"
    assert encoding_of(Envelope("a@x", body_type=BodyType.SEVEN_BIT), b"plain\n") == "7BIT"


def test_smtputf8_is_needed_only_when_asked_and_used() -> None:
    asked = Envelope("a@example.org", smtputf8=True)
    assert not needs_smtputf8(Envelope("j\u00f6rg@example.org"), ["b@x"], b"")
    assert needs_smtputf8(Envelope("j\u00f6rg@example.org", smtputf8=True), ["b@x"], b"")
    assert needs_smtputf8(asked, ["b\u00fc@x"], b"")
    assert needs_smtputf8(asked, ["b@x"], "Subject: gr\u00fc\u00df\n\n".encode())
    assert not needs_smtputf8(asked, ["b@x"], b"Subject: plain\n\n")


def test_xtext_quotes_plus_equals_and_non_printables() -> None:
    assert xtext("rfc822;a+b=c@example.org") == "rfc822;a+2Bb+3Dc@example.org"
    assert xtext("x y") == "x+20y"


def test_utf8_orcpt_uses_the_unicode_escape() -> None:
    assert orcpt_parameter("utf-8;j\u00f6rg@example.org") == "utf-8;j\\x{F6}rg@example.org"
    assert orcpt_parameter("rfc822;joe@example.org") == "rfc822;joe@example.org"
