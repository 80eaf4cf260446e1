"""The headers cleanup writes, in Postfix's shapes (cleanup/headers.py)."""

from __future__ import annotations

import time

import pytest

from sdmail.cleanup.content import parse, render
from sdmail.cleanup.headers import (
    SmtpClient,
    add_missing_headers,
    drop_headers,
    from_header,
    message_id,
    received_from_smtp,
    received_local,
)

WHEN = 1764021061.0  # Mon, 24 Nov 2025 21:51:01 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def test_received_from_smtp_with_one_recipient():
    client = SmtpClient("client.example", "mx.client.example", "192.0.2.1", "ESMTP")
    field = received_from_smtp(
        client,
        myhostname="mail.example.com",
        mail_name="sdmail",
        queue_id="QID",
        recipients=["u@example.com"],
        when=WHEN,
    )
    assert field.raw == (
        b"Received: from client.example (mx.client.example [192.0.2.1])\n"
        b"\tby mail.example.com (sdmail) with ESMTP id QID\n"
        b"\tfor <u@example.com>; Mon, 24 Nov 2025 21:51:01 +0000 (UTC)"
    )


def test_received_from_smtp_with_two_recipients_and_ipv6_without_helo():
    client = SmtpClient(None, "unknown", "2001:db8::1", "ESMTPSA")
    field = received_from_smtp(
        client,
        myhostname="h.example",
        mail_name="sdmail",
        queue_id="QID",
        recipients=["a@x", "b@x"],
        when=WHEN,
    )
    assert field.raw == (
        b"Received: from unknown (unknown [IPv6:2001:db8::1])\n"
        b"\tby h.example (sdmail) with ESMTPSA id QID;\n"
        b"\tMon, 24 Nov 2025 21:51:01 +0000 (UTC)"
    )


TLS_COMMENTS = (
    "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))",
    "(No client certificate requested)",
    "(Authenticated sender: joe)",
)


def test_received_from_smtp_puts_smtpds_comments_between_from_and_by():
    client = SmtpClient("client.example", "mx.client.example", "192.0.2.1", "ESMTPSA")
    field = received_from_smtp(
        client,
        myhostname="mail.example.com",
        mail_name="sdmail",
        queue_id="QID",
        recipients=["u@example.com"],
        when=WHEN,
        comments=TLS_COMMENTS,
    )
    assert field.raw == (
        b"Received: from client.example (mx.client.example [192.0.2.1])\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
        b"\t(No client certificate requested)\n"
        b"\t(Authenticated sender: joe)\n"
        b"\tby mail.example.com (sdmail) with ESMTPSA id QID\n"
        b"\tfor <u@example.com>; Mon, 24 Nov 2025 21:51:01 +0000 (UTC)"
    )


def test_received_comments_with_two_recipients_keep_the_date_line():
    client = SmtpClient("client.example", "unknown", "192.0.2.1", "ESMTPA")
    field = received_from_smtp(
        client,
        myhostname="h.example",
        mail_name="sdmail",
        queue_id="QID",
        recipients=["a@x", "b@x"],
        when=WHEN,
        comments=("(Authenticated sender: joe)",),
    )
    assert field.raw == (
        b"Received: from client.example (unknown [192.0.2.1])\n"
        b"\t(Authenticated sender: joe)\n"
        b"\tby h.example (sdmail) with ESMTPA id QID;\n"
        b"\tMon, 24 Nov 2025 21:51:01 +0000 (UTC)"
    )


def test_a_line_break_in_a_comment_cannot_add_a_header():
    client = SmtpClient("client.example", "unknown", "192.0.2.1", "ESMTPA")
    field = received_from_smtp(
        client,
        myhostname="h.example",
        mail_name="sdmail",
        queue_id="QID",
        recipients=["a@x"],
        when=WHEN,
        comments=("(Authenticated sender: joe\r\nX-Injected: yes)", " \t ", ""),
    )
    message = parse(field.raw + b"\nSubject: s\n\nbody\n")
    assert [h.name for h in message.headers] == ["Received", "Subject"]
    assert field.raw.split(b"\n")[1] == b"\t(Authenticated sender: joe??X-Injected: yes)"
    assert field.raw.split(b"\n")[2].startswith(b"\tby h.example ")


def test_received_from_pickup_names_the_uid():
    field = received_local(
        myhostname="h.example", mail_name="sdmail", queue_id="QID", when=WHEN, uid=1000
    )
    assert field.raw == (
        b"Received: by h.example (sdmail, from userid 1000)\n"
        b"\tid QID; Mon, 24 Nov 2025 21:51:01 +0000 (UTC)"
    )


def test_message_id_is_utc_timestamp_queue_id_and_hostname():
    assert message_id("QID", WHEN, "h.example") == "<20251124215101.QID@h.example>"


@pytest.mark.parametrize(
    ("sender", "name", "style", "expected"),
    [
        ("joe@example.com", "Joe Bloggs", "standard", b"From: Joe Bloggs <joe@example.com>"),
        ("joe@example.com", None, "standard", b"From: joe@example.com"),
        ("", "ignored", "standard", b"From: MAILER-DAEMON"),
        ("joe@example.com", "Bloggs, Joe", "standard", b'From: "Bloggs, Joe" <joe@example.com>'),
        ("joe@example.com", "Joe (x)", "obsolete", b"From: joe@example.com (Joe \\(x\\))"),
        ("john doe@example.com", None, "standard", b'From: "john doe"@example.com'),
        ("j@example.com", "Jos\u00e9", "standard", b"From: =?utf-8?b?Sm9zw6k=?= <j@example.com>"),
    ],
)
def test_from_header_forms(sender, name, style, expected):
    assert from_header(sender, name, style).raw == expected


def test_missing_headers_are_added_at_the_end_of_the_header():
    message = parse(b"Subject: s\n\nbody\n")
    found = add_missing_headers(
        message,
        queue_id="QID",
        created=WHEN,
        arrival=WHEN,
        myhostname="h.example",
        sender="joe@h.example",
        full_name="Joe",
        header_from_format="standard",
    )
    assert found == "<20251124215101.QID@h.example>"
    assert render(message) == (
        b"Subject: s\n"
        b"Message-Id: <20251124215101.QID@h.example>\n"
        b"Date: Mon, 24 Nov 2025 21:51:01 +0000 (UTC)\n"
        b"From: Joe <joe@h.example>\n"
        b"\nbody\n"
    )


def test_present_headers_are_kept_and_resent_variants_used_when_resending():
    message = parse(b"Message-ID: <mine@x>\nDate: d\nFrom: f\nResent-To: r@x\n\n")
    found = add_missing_headers(
        message,
        queue_id="QID",
        created=WHEN,
        arrival=WHEN,
        myhostname="h",
        sender="",
        full_name=None,
        header_from_format="standard",
    )
    names = [h.name for h in message.headers]
    assert names == [
        "Message-ID",
        "Date",
        "From",
        "Resent-To",
        "Resent-Message-Id",
        "Resent-Date",
        "Resent-From",
    ]
    assert message.headers[-1].raw == b"Resent-From: MAILER-DAEMON"
    assert found == "<20251124215101.QID@h>"


def test_drop_headers_is_case_insensitive():
    message = parse(b"BCC: hidden@x\nReturn-Path: <x>\nTo: t@x\nContent-Length: 3\n\n")
    drop_headers(message, ["bcc", "content-length", "resent-bcc", "return-path"])
    assert [h.name for h in message.headers] == ["To"]
