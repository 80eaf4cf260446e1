"""sendmail's reading of the message: From_ lines, line endings, the lone dot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.sendmail import message_content, read_message


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


class Chunks:
    """A stdin that hands out the given pieces one read at a time, as a terminal does,
    and fails the test if it is read past the end."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.reads_after_end = 0

    def read1(self, _size: int = -1) -> bytes:
        if not self.pieces:
            self.reads_after_end += 1
            return b""
        return self.pieces.pop(0)

    def read(self, _size: int = -1) -> bytes:
        data = b"".join(self.pieces)
        self.pieces = []
        return data


def read(stream: Chunks, *, dot: bool = True, fix: str = "always") -> bytes:
    return read_message(stream, dot_ends_input=dot, fix_line_endings=fix)  # type: ignore[arg-type]


def test_reading_stops_at_the_dot_line_and_leaves_the_rest_unread() -> None:
    stream = Chunks(b"Subject: a\n", b"\n", b"typed line\n", b".\n", b"never read\n")
    assert read(stream) == b"Subject: a\n\ntyped line\n"
    assert stream.pieces == [b"never read\n"]


def test_a_dot_split_across_reads_is_found() -> None:
    stream = Chunks(b"a\n.", b"\r", b"\n", b"rest\n")
    assert read(stream) == b"a\n"
    assert stream.pieces == [b"rest\n"]


def test_a_dot_followed_by_more_text_in_the_next_read_is_not_the_end() -> None:
    stream = Chunks(b"a\n.", b"b\n", b".\n")
    assert read(stream) == b"a\n.b\n"


def test_strict_waits_for_the_first_line_to_decide() -> None:
    stream = Chunks(b"A: 1", b"\r\n.\r\n", b"rest")
    assert read(stream, fix="strict") == b"A: 1\n"
    stream = Chunks(b"A: 1\n", b".\r\n", b"B: 2\n")
    assert read(stream, fix="strict") == b"A: 1\n.\r\nB: 2\n"


def test_without_dot_ending_everything_is_read() -> None:
    assert read(Chunks(b"a\n", b".\n", b"b\n"), dot=False) == b"a\n.\nb\n"


def test_unterminated_last_line_is_treated_like_the_others() -> None:
    assert content(b"a\n.") == b"a\n"
    assert content(b"a\nb\r") == b"a\nb"


@given(
    st.lists(st.binary(min_size=1, max_size=20), max_size=12),
    st.sampled_from(["always", "strict", "never"]),
)
def test_reading_in_pieces_gives_what_reading_at_once_gives(pieces: list[bytes], fix: str) -> None:
    whole = b"".join(pieces)
    assert read(Chunks(*pieces), fix=fix) == content(whole, fix=fix)
