"""Loop detection: which Delivered-To: headers stop a delivery."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sdmail.local.recipient import delivered_to_already

ADDRESS = "joe@mail.example.test"


def test_matching_header_is_a_loop_whatever_the_case() -> None:
    headers = b"Received: x\nDelivered-To: JOE@Mail.Example.Test\nSubject: y\n\n"
    assert delivered_to_already(headers, ADDRESS)


def test_folded_and_bracketed_headers_are_read() -> None:
    assert delivered_to_already(b"delivered-to:\n\t<joe@mail.example.test>\n\n", ADDRESS)


def test_other_recipients_and_other_headers_are_no_loop() -> None:
    headers = (
        b"Delivered-To: sue@mail.example.test\n"
        b"X-Delivered-To: joe@mail.example.test\n"
        b"Subject: Delivered-To: joe@mail.example.test\n\n"
    )
    assert not delivered_to_already(headers, ADDRESS)
    assert not delivered_to_already(b"", ADDRESS)


@given(st.binary(max_size=300))
def test_any_header_bytes_are_read_without_error(headers: bytes) -> None:
    assert delivered_to_already(headers, ADDRESS) in (True, False)


@given(st.binary(max_size=100).filter(lambda b: b"\n" not in b))
def test_address_after_arbitrary_headers_is_found(noise: bytes) -> None:
    headers = b"X-Noise: " + noise + b"\nDelivered-To: " + ADDRESS.encode() + b"\n\n"
    assert delivered_to_already(headers, ADDRESS)
