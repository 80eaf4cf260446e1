"""smtp/reply.py: server replies parsed as Postfix's smtp_chat parses them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sdmail.smtp.reply import MAX_LINE_LENGTH, Reply, ehlo_features, parse_reply, reply_dsn


def test_a_multi_line_reply_keeps_every_line_for_the_log() -> None:
    reply = parse_reply([b"550-5.7.1 first line\r\n", b"550 5.7.1 second line\r\n"])
    assert reply == Reply(550, ("550-5.7.1 first line", "550 5.7.1 second line"), "5.7.1")
    assert reply.text == "550-5.7.1 first line 550 5.7.1 second line"
    assert reply.is_permanent


def test_the_enhanced_code_must_agree_with_the_reply_class() -> None:
    assert reply_dsn(450, "450 5.1.1 mismatch") == "4.0.0"
    assert reply_dsn(250, "250 ok") == "2.0.0"
    assert reply_dsn(421, "421 4.4.2 bye") == "4.4.2"


def test_a_reply_that_is_not_2xx_4xx_5xx_is_a_protocol_error_status() -> None:
    assert reply_dsn(354, "354 go ahead") == "5.5.0"


def test_a_bare_code_ends_a_reply() -> None:
    assert parse_reply([b"250"]) == Reply(250, ("250",), "2.0.0")


def test_garbage_lines_are_skipped_until_a_real_last_line() -> None:
    reply = parse_reply([b"hello there\r\n", b"220 ok\r\n"])
    assert reply is not None and reply.code == 220


def test_an_unfinished_reply_is_none() -> None:
    assert parse_reply([b"250-still going\r\n"]) is None


def test_long_lines_are_cut() -> None:
    reply = parse_reply([b"250 " + b"x" * (3 * MAX_LINE_LENGTH)])
    assert reply is not None and len(reply.text) <= MAX_LINE_LENGTH


def test_ehlo_features() -> None:
    reply = parse_reply(
        [
            b"250-mx.example.org Hello",
            b"250-PIPELINING",
            b"250-SIZE 35882577",
            b"250-8BITMIME",
            b"250-STARTTLS",
            b"250-DSN",
            b"250 ENHANCEDSTATUSCODES",
        ]
    )
    assert reply is not None
    features = ehlo_features(reply)
    assert features.helo_name == "mx.example.org"
    assert features.pipelining and features.size and features.size_limit == 35882577
    assert features.eightbitmime and features.starttls and features.dsn
    assert not features.smtputf8


def test_discarded_ehlo_keywords_are_not_used() -> None:
    reply = parse_reply([b"250-mx", b"250-PIPELINING", b"250 STARTTLS"])
    assert reply is not None
    features = ehlo_features(reply, frozenset({"PIPELINING"}))
    assert not features.pipelining and features.starttls


def test_smtputf8_implies_8bitmime_as_postfix_assumes() -> None:
    reply = parse_reply([b"250-mx", b"250 SMTPUTF8"])
    assert reply is not None and ehlo_features(reply).eightbitmime


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_server_bytes_parse_or_wait_for_more(lines: list[bytes]) -> None:
    reply = parse_reply(lines)
    if reply is not None:
        assert 0 <= reply.code <= 999
        assert reply.dsn[0] in "245" and reply.dsn.count(".") == 2
        ehlo_features(reply)
