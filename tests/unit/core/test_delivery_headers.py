"""The headers final delivery prepends, and the Delivered-To: loop check."""

from __future__ import annotations

from email import message_from_bytes

from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.delivery_headers import envelope_headers, has_delivered_to, shown_address


def test_headers_come_in_postfix_order_with_delivered_to_in_lower_case() -> None:
    assert envelope_headers(
        return_path="Ann@Example.org", original_to="List@Example.com", delivered_to="Joe@X.test"
    ) == (
        b"Return-Path: <Ann@Example.org>\n"
        b"X-Original-To: List@Example.com\n"
        b"Delivered-To: joe@x.test\n"
    )


def test_the_null_sender_is_an_empty_return_path_and_absent_headers_are_left_out() -> None:
    assert envelope_headers(return_path="", original_to=None, delivered_to=None) == (
        b"Return-Path: <>\n"
    )


def test_a_local_part_with_spaces_is_quoted() -> None:
    headers = envelope_headers(
        return_path="john doe@x.test", original_to=None, delivered_to=None, eol=b"\r\n"
    )
    assert headers == b'Return-Path: <"john doe"@x.test>\r\n'


@given(st.text(min_size=1))
def test_no_address_can_add_a_header_line_of_its_own(address: str) -> None:
    headers = envelope_headers(return_path=address, original_to=address, delivered_to=address)
    lines = headers.split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""
    assert all(b"\r" not in line and b"\x00" not in line for line in lines)


def test_delivered_to_naming_the_recipient_is_a_loop_whatever_the_case() -> None:
    block = b"Subject: x\nDelivered-To: Joe@Example.COM\nFrom: a@b\n\n"
    assert has_delivered_to(block, "joe@example.com")
    assert not has_delivered_to(block, "ann@example.com")


def test_folded_and_bracketed_delivered_to_headers_are_read() -> None:
    block = b"DELIVERED-TO:\r\n <joe@example.com>\r\nSubject: x\r\n\r\n"
    assert has_delivered_to(block, "joe@example.com")


def test_a_delivered_to_line_in_the_body_is_not_a_header() -> None:
    content = b"Subject: x\n\nDelivered-To: joe@example.com\n"
    assert not has_delivered_to(content, "joe@example.com")


def test_a_quoted_local_part_matches_its_printed_form() -> None:
    block = b'Delivered-To: "john doe"@example.com\n\n'
    assert has_delivered_to(block, "john doe@example.com")


@given(st.binary(), st.text())
def test_any_header_bytes_are_read_without_error(block: bytes, address: str) -> None:
    assert has_delivered_to(block, address) in (True, False)


def test_shown_addresses_are_what_email_parsers_read_back() -> None:
    headers = envelope_headers(return_path=None, original_to=None, delivered_to="a.b+c@x.test")
    assert message_from_bytes(headers + b"\n")["Delivered-To"] == "a.b+c@x.test"
    assert shown_address("bad\nname@x") == "bad?name@x"
    assert shown_address("a b\nc@x") == '"a b?c"@x'
