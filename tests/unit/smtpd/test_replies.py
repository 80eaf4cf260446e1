"""smtpd/replies.py: how replies go on the wire."""

from __future__ import annotations

import pytest

from sdmail.smtpd.replies import Reply, reply


def test_multiline_reply_on_the_wire():
    assert Reply(250, ("a", "b", "c")).wire() == b"250-a\r\n250-b\r\n250 c\r\n"


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (reply(450, "5.7.1 text"), "450 4.7.1 text"),
        (reply(550, "4.1.1 text"), "550 5.1.1 text"),
        (reply(554, "5.7.1 text"), "554 5.7.1 text"),
        (reply(550, "no code here"), "550 no code here"),
    ],
)
def test_enhanced_code_class_follows_the_reply_code(made, expected):
    assert made.adjusted().logged() == expected


def test_footer_is_a_further_line_and_empty_footer_is_none():
    refused = reply(554, "5.7.1 no")
    assert refused.with_footer("") is refused
    assert refused.with_footer("see help").wire() == b"554-5.7.1 no\r\n554 see help\r\n"


def test_client_bytes_that_are_not_utf8_go_back_as_they_came():
    text = b"5.1.1 <\xff@x>".decode("utf-8", "surrogateescape")
    assert reply(550, text).wire() == b"550 5.1.1 <\xff@x>\r\n"


@pytest.mark.parametrize("code", [199, 600])
def test_codes_outside_smtp_are_refused(code):
    with pytest.raises(ValueError):
        reply(code, "x")


def test_enhanced_codes_can_be_left_out():
    assert reply(250, "2.1.0 Ok").without_enhanced_codes().logged() == "250 Ok"
    multi = Reply(554, ("5.7.1 no", "5.7.1 footer"))
    assert multi.without_enhanced_codes().lines == ("no", "footer")
    greeting = reply(220, "mail.example.test ESMTP sdmail")
    assert greeting.without_enhanced_codes() is greeting


def test_only_a_leading_enhanced_code_is_left_out():
    assert reply(550, "text 5.1.1 inside").without_enhanced_codes().logged() == (
        "550 text 5.1.1 inside"
    )
