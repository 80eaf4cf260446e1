"""sendmail's reading of the message: From_ lines, line endings, the lone dot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.sendmail import message_content


def content(data: bytes, *, dot: bool = True, fix: str = "always") -> bytes:
    return message_content(data, dot_ends_input=dot, fix_line_endings=fix)


def test_plain_message_is_kept_byte_for_byte() -> None:
    data = b"Subject: x\n\nbody \x00 \xff\n" + b"y" * 5000 + b"\n"
    assert content(data) == data


def test_leading_from_lines_are_skipped() -> None:
    assert content(b"From me Mon Jan 1\n>From x\nSubject: a\n\nFrom here\n") == (
        b"Subject: a\n\nFrom here\n"
    )


def test_crlf_becomes_lf_always() -> None:
    assert content(b"Subject: a\r\n\r\nb\r\r\nc") == b"Subject: a\n\nb\nc"


def test_strict_follows_the_first_line() -> None:
    assert content(b"A: 1\r\nB: 2\r\n", fix="strict") == b"A: 1\nB: 2\n"
    assert content(b"A: 1\nB: 2\r\n", fix="strict") == b"A: 1\nB: 2\r\n"


def test_never_keeps_carriage_returns() -> None:
    assert content(b"A: 1\r\n\r\n.\r\nx\n", fix="never") == b"A: 1\r\n\r\n.\r\nx\n"


def test_a_lone_dot_ends_the_input_unless_i() -> None:
    data = b"Subject: a\n\nbody\n.\nafter\n"
    assert content(data) == b"Subject: a\n\nbody\n"
    assert content(data, dot=False) == data
    assert content(b".\nrest\n") == b""
    assert content(b"a\r\n.\r\nb\r\n") == b"a\n"


def test_dot_with_more_on_the_line_does_not_end_input() -> None:
    assert content(b"a\n..\n. \n.x\n") == b"a\n..\n. \n.x\n"


def test_empty_message_and_no_final_newline() -> None:
    assert content(b"") == b""
    assert content(b"Subject: x") == b"Subject: x"
    assert content(b"From x\nSubject: y") == b"Subject: y"


@pytest.mark.parametrize("fix", ["always", "strict", "never"])
@given(data=st.binary(max_size=400), dot=st.booleans())
def test_result_never_grows_and_ends_as_the_input_line_did(
    fix: str, data: bytes, dot: bool
) -> None:
    out = content(data, dot=dot, fix=fix)
    assert len(out) <= len(data)
    if not dot and fix == "never" and not data.lstrip(b">").startswith(b"From "):
        assert out == data
