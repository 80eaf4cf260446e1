"""cleanup's content parser: headers, body, and every malformed shape (cleanup/content.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.cleanup.content import header, normalize, parse, render


def test_headers_and_body_split_at_the_empty_line():
    message = parse(b"Subject: hi\r\nTo: a@b\r\n\r\nbody line\r\n")
    assert [h.name for h in message.headers] == ["Subject", "To"]
    assert message.body == b"body line\n"
    assert render(message) == b"Subject: hi\nTo: a@b\n\nbody line\n"


def test_folded_header_is_one_field():
    message = parse(b"Subject: one\n\ttwo\n  three\nX: y\n\nb\n")
    assert message.headers[0].raw == b"Subject: one\n\ttwo\n  three"
    assert message.headers[0].text() == "one two three"
    assert message.first("x").value == b"y"


def test_missing_separator_supplies_the_empty_line():
    message = parse(b"Subject: hi\nthis is not a header\nmore\n")
    assert [h.name for h in message.headers] == ["Subject"]
    assert message.body == b"this is not a header\nmore\n"
    assert render(message) == b"Subject: hi\n\nthis is not a header\nmore\n"


def test_message_without_headers_is_all_body():
    message = parse(b"just text\n")
    assert message.headers == []
    assert message.body == b"just text\n"


def test_empty_message():
    message = parse(b"")
    assert message.headers == [] and message.body == b""
    assert render(message) == b"\n"


def test_headers_only_without_final_newline():
    message = parse(b"Subject: x")
    assert message.headers[0].raw == b"Subject: x"
    assert message.body == b""


def test_bare_lf_and_stray_cr():
    assert normalize(b"a\r\nb\nc\rd\r\n") == b"a\nb\nc d\n"
    message = parse(b"Subject: a\rb\n\nx\ry\n")
    assert message.headers[0].raw == b"Subject: a b"
    assert message.body == b"x y\n"


def test_nul_bytes_and_8bit_headers_are_kept():
    message = parse(b"Subject: caf\xc3\xa9 \xff\nX-Nul: a\x00b\n\nbo\x00dy\n")
    assert message.headers[0].raw == b"Subject: caf\xc3\xa9 \xff"
    assert message.headers[1].raw == b"X-Nul: a\x00b"
    assert message.body == b"bo\x00dy\n"


def test_long_lines_stay_whole():
    long_header = b"X-Long: " + b"h" * 5000
    long_body = b"b" * 1_000_000
    message = parse(long_header + b"\n\n" + long_body + b"\n")
    assert message.headers[0].raw == long_header
    assert message.body == long_body + b"\n"


def test_mbox_from_line_is_not_a_header():
    message = parse(b"From someone Mon Jan 1 00:00:00 2024\nSubject: x\n\n")
    assert message.headers == []


def test_header_text_past_the_limit_is_discarded():
    message = parse(b"A: 1234\nB: 5678\nC: 9\n\nbody\n", header_size_limit=16)
    assert [h.name for h in message.headers] == ["A", "B"]
    assert message.header_truncated
    assert message.body == b"body\n"


def test_made_header_renders():
    assert header("Message-Id", "<x@y>").raw == b"Message-Id: <x@y>"


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_and_render_without_stray_cr(data):
    message = parse(data)
    out = render(message)
    assert b"\r" not in out
    # Nothing is lost or reordered: rendering only adds line ends.
    assert out.replace(b"\n", b"") == normalize(data).replace(b"\n", b"")


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        ),
        max_size=10,
    ),
    st.binary(max_size=500),
)
def test_well_formed_messages_round_trip(fields, body):
    body = normalize(body)
    raw = b"".join(f"{name}: {value}".rstrip().encode() + b"\n" for name, value in fields)
    message = parse(raw + b"\n" + body)
    assert [h.name for h in message.headers] == [name for name, _ in fields]
    assert message.body == body
