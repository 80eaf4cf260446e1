"""The text of non-delivery notices (sdmail/bounce/notice.py), read back as a mail reader would."""

from __future__ import annotations

import email
import email.policy
from email.message import Message

from hypothesis import given
from hypothesis import strategies as st

from sdmail.bounce.notice import Failure, Original, diagnostic_of, non_delivery_notice
from sdmail.core.dsn import Status

HOST = "mail.example.test"
NOW = 1764021069.0
ORIGINAL_HEADERS = b"From: joe@example.org\nTo: nobody@example.net\nSubject: hello\n"
SMTP_REASON = (
    "host mx.example.net[192.0.2.7] said: 550 5.1.1 <nobody@example.net>: Recipient"
    " address rejected: User unknown (in reply to RCPT TO command)"
)


def original(**changes: object) -> Original:
    values: dict[str, object] = {
        "queue_id": "4dFxyz0BCDFzGHJ",
        "sender": "joe@example.org",
        "arrival": NOW - 8,
        "content": ORIGINAL_HEADERS + b"\nthe body\n",
        "headers_only": False,
        "message_id": "<abc@example.org>",
    }
    values.update(changes)
    return Original(**values)  # type: ignore[arg-type]


def parse(notice: bytes) -> Message:
    return email.message_from_bytes(notice, policy=email.policy.compat32)


def parts(notice: bytes) -> list[Message]:
    message = parse(notice)
    payload = message.get_payload()
    assert isinstance(payload, list)
    return payload


def report_blocks(notice: bytes) -> list[Message]:
    blocks = parts(notice)[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


def unknown_user(address: str = "nobody@example.net") -> Failure:
    user = address.partition("@")[0]
    return Failure(address, Status("5.1.1", f'unknown user: "{user}"'))


def test_the_notice_is_a_multipart_report_to_the_sender() -> None:
    notice = non_delivery_notice(original(), [unknown_user()], myhostname=HOST, now=NOW)
    message = parse(notice)
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON>"
    assert message["To"] == "joe@example.org"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["References"] == message["In-Reply-To"] == "<abc@example.org>"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message.get_boundary() == f"4dFxyz0BCDFzGHJ.{int(NOW)}/{HOST}"
    assert message["Content-Transfer-Encoding"] == "7bit"
    types = [part.get_content_type() for part in parts(notice)]
    assert types == ["text/plain", "message/delivery-status", "message/rfc822"]


def test_the_delivery_status_names_each_recipient_action_status_and_diagnostic() -> None:
    failures = [
        unknown_user(),
        Failure("ann@example.net", Status("5.2.2", "mailbox full"), orig_address="a@example.net"),
    ]
    notice = non_delivery_notice(original(), failures, myhostname=HOST, now=NOW)
    per_message, first, second = report_blocks(notice)
    assert per_message["Reporting-MTA"] == f"dns; {HOST}"
    assert per_message["X-Postfix-Queue-ID"] == "4dFxyz0BCDFzGHJ"
    assert per_message["X-Postfix-Sender"] == "rfc822; joe@example.org"
    assert first["Final-Recipient"] == "rfc822; nobody@example.net"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Diagnostic-Code"] == 'X-Postfix; unknown user: "nobody"'
    assert "Original-Recipient" not in first
    assert second["Original-Recipient"] == "rfc822; a@example.net"
    assert second["Status"] == "5.2.2"


def test_an_smtp_reply_becomes_remote_mta_and_an_smtp_diagnostic() -> None:
    failure = Failure("nobody@example.net", Status("5.1.1", SMTP_REASON))
    notice = non_delivery_notice(original(), [failure], myhostname=HOST, now=NOW)
    block = report_blocks(notice)[1]
    assert block["Remote-MTA"] == "dns; mx.example.net"
    diagnostic = " ".join(block["Diagnostic-Code"].split())
    assert diagnostic == (
        "smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"
    )


def test_the_text_for_people_says_why_folded_at_79_columns() -> None:
    failure = Failure(
        "nobody@example.net", Status("5.1.1", SMTP_REASON), orig_address="alias@example.org"
    )
    notice = non_delivery_notice(original(), [failure], myhostname=HOST, now=NOW)
    text = parts(notice)[0].get_payload()
    assert isinstance(text, str)
    assert text.startswith(f"This is the mail system at host {HOST}.\n")
    assert "The mail system" in text
    assert "<nobody@example.net> (expanded from <alias@example.org>): host" in text
    assert all(len(line) <= 79 for line in text.splitlines())
    assert "\n    " in text  # continuation lines are indented
    assert " ".join(text.split()).endswith("User unknown (in reply to RCPT TO command)")


def test_the_whole_original_comes_back_with_its_return_path() -> None:
    notice = non_delivery_notice(original(), [unknown_user()], myhostname=HOST, now=NOW)
    returned = parts(notice)[2].get_payload()
    assert isinstance(returned, list)
    inner = returned[0]
    assert inner["Return-Path"] == "<joe@example.org>"
    assert inner["Subject"] == "hello"
    assert inner.get_payload() == "the body\n"


def test_only_the_headers_come_back_when_asked() -> None:
    notice = non_delivery_notice(
        original(content=ORIGINAL_HEADERS, headers_only=True),
        [unknown_user()],
        myhostname=HOST,
        now=NOW,
    )
    part = parts(notice)[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert part["Content-Description"] == "Undelivered Message Headers"
    assert b"the body" not in notice
    assert b"Subject: hello\n" in notice


def test_an_eight_bit_original_makes_an_eight_bit_notice() -> None:
    content = "Subject: caf\u00e9\n\nd\u00e9j\u00e0\n".encode()
    notice = non_delivery_notice(
        original(content=content), [unknown_user()], myhostname=HOST, now=NOW
    )
    assert parse(notice)["Content-Transfer-Encoding"] == "8bit"
    assert parts(notice)[2]["Content-Transfer-Encoding"] == "8bit"
    assert content in notice


def test_no_references_without_a_message_id() -> None:
    notice = non_delivery_notice(
        original(message_id=None), [unknown_user()], myhostname=HOST, now=NOW
    )
    assert parse(notice)["References"] is None


def test_diagnostic_of_a_local_reason() -> None:
    assert diagnostic_of("mailbox full") == ("X-Postfix", "mailbox full", None)


@given(
    reason=st.text(min_size=1, max_size=300),
    address=st.text(min_size=1, max_size=60),
)
def test_no_reason_or_address_can_add_a_header_or_a_part(reason: str, address: str) -> None:
    failure = Failure(address, Status("5.0.0", reason))
    notice = non_delivery_notice(original(sender=address), [failure], myhostname=HOST, now=NOW)
    message = parse(notice)
    assert sorted(message.keys()) == sorted(
        [
            "From",
            "Subject",
            "To",
            "References",
            "In-Reply-To",
            "Auto-Submitted",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ]
    )
    assert len(parts(notice)) == 3
    blocks = report_blocks(notice)
    assert len(blocks) == 2
    assert blocks[1]["Status"] == "5.0.0"
    assert blocks[1]["Action"] == "failed"


def test_an_smtputf8_original_goes_back_in_rfc_6533_parts() -> None:
    whole = non_delivery_notice(original(smtputf8=True), [unknown_user()], myhostname=HOST, now=NOW)
    assert parse(whole).get_param("report-type") == "delivery-status"
    types = [part.get_content_type() for part in parts(whole)]
    assert types == ["text/plain", "message/global-delivery-status", "message/global"]
    headers = non_delivery_notice(
        original(smtputf8=True, headers_only=True, content=ORIGINAL_HEADERS),
        [unknown_user()],
        myhostname=HOST,
        now=NOW,
    )
    assert parts(headers)[2].get_content_type() == "message/global-headers"
