"""smtp/downgrade.py: 8-bit MIME to 7-bit, part by part, as Postfix converts it."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.smtp.downgrade import NESTING_LIMIT, DowngradeError, downgrade

CAFE = "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode()


def test_an_8bit_text_part_becomes_quoted_printable() -> None:
    message = (
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\nSubject: x\n\n" + CAFE + b"\n"
    )
    out = downgrade(message)
    assert out.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable\n" in out
    assert b"Subject: x\n" in out
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed.get_content().strip() == CAFE.decode()


def test_an_8bit_label_on_ascii_text_becomes_7bit() -> None:
    out = downgrade(b"Content-Transfer-Encoding: 8bit\n\nplain text\n")
    assert out == b"Content-Transfer-Encoding: 7bit\n\nplain text\n"


def test_a_message_without_mime_labels_goes_as_it_is() -> None:
    message = b"Subject: x\n\n" + CAFE + b"\n"
    assert downgrade(message) == message


def test_parts_of_a_multipart_are_converted_one_by_one() -> None:
    message = (
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b1"\n'
        b"Content-Transfer-Encoding: 8bit\n\n"
        b"preamble\n"
        b"--b1\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + CAFE
        + b"\n--b1\n"
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        b"AAECAw==\n"
        b"--b1--\n"
        b"epilogue\n"
    )
    out = downgrade(message)
    assert out.isascii()
    assert out.count(b"Content-Transfer-Encoding: 7bit") == 1  # the multipart itself
    assert b"AAECAw==\n--b1--\nepilogue\n" in out
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    parts = list(parsed.iter_parts())
    assert parts[0].get_content().strip() == CAFE.decode()
    assert parts[1].get_content() == b"\x00\x01\x02\x03"


def test_a_nested_message_is_converted_inside() -> None:
    inner = b"Content-Transfer-Encoding: 8bit\nContent-Type: text/plain\n\n" + CAFE + b"\n"
    message = (
        b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nSubject: in\n" + inner
    )
    out = downgrade(message)
    assert out.isascii()
    assert out.startswith(b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n\n")


def test_nesting_beyond_the_limit_is_refused() -> None:
    message = b""
    for depth in range(NESTING_LIMIT + 2):
        message += f'Content-Type: multipart/mixed; boundary="b{depth}"\n\n--b{depth}\n'.encode()
    with pytest.raises(DowngradeError) as caught:
        downgrade(message + b"Content-Transfer-Encoding: 8bit\n\nx\n")
    assert caught.value.status.dsn == "5.6.0"
    assert caught.value.status.text == "MIME nesting exceeds safety limit"


def test_7bit_content_is_unchanged() -> None:
    message = b'Content-Type: multipart/alternative; boundary="x"\n\n--x\n\nplain\n--x--\n'
    assert downgrade(message) == message


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_any_content_converts_or_fails_cleanly(content: bytes) -> None:
    try:
        out = downgrade(content)
    except DowngradeError:
        return
    if b"8bit" not in content.lower() and b"binary" not in content.lower():
        assert out == content  # nothing labelled 8-bit: nothing to convert
    if content.isascii():
        assert out.isascii()


@given(st.text(min_size=1, max_size=300))
def test_converted_8bit_text_decodes_to_the_original(text: str) -> None:
    body = text.replace("\r", "").encode("utf-8")
    message = (
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n\n" + body + b"\n"
    )
    out = downgrade(message)
    assert out.isascii()
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert parsed.get_payload(decode=True) == body + b"\n"
