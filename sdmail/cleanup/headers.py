"""The headers cleanup writes: Received:, Message-Id:, Date:, From:, and which it drops.

Shapes are Postfix's (cleanup_message.c, smtpd.c, pickup.c):

    Received: from HELO (NAME [ADDR])              mail from an SMTP client
        (using TLSv1.3 with cipher ...)            smtpd's comment lines, when it has any
        (Authenticated sender: USER)               (smtpd_tls_received_header, ..._sasl_...)
        by MYHOSTNAME (MAIL_NAME) with ESMTP id QUEUEID
        for <rcpt@example.org>; DATE               ("id QUEUEID;" and DATE alone
                                                    when there is not exactly one recipient)
    Received: by MYHOSTNAME (MAIL_NAME, from userid UID)
        id QUEUEID; DATE                           mail from sendmail (pickup)
    Received: by MYHOSTNAME (MAIL_NAME)
        id QUEUEID; DATE                           mail sdmail writes itself (notices)
    Message-Id: <YYYYMMDDHHMMSS.QUEUEID@MYHOSTNAME>   (UTC time the queue file was made)
    Date: Wed, 25 Nov 2026 13:45:16 +0000 (UTC)
    From: Full Name <sender@example.org>  |  From: sender@example.org  |  From: MAILER-DAEMON

When the message has any Resent- header, the Resent- variants are added instead.
Nothing here fails: every input is text already checked by the caller, except that
a control character in a comment line (a line break above all, which would end the
header early) is written as `?`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header

from sdmail.cleanup.content import HeaderField, Message, header
from sdmail.core.address import quote_address
from sdmail.core.maildate import mail_date

_PHRASE_SPECIALS = re.compile(r'[()<>@,;:\\".\[\]]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SmtpClient:
    """What the Received: header of mail from an SMTP client says about the client."""

    helo: str | None
    name: str
    address: str
    protocol: str


def received_from_smtp(
    client: SmtpClient,
    *,
    myhostname: str,
    mail_name: str,
    queue_id: str,
    recipients: list[str],
    when: float,
    comments: Sequence[str] = (),
) -> HeaderField:
    """Received: for mail from an SMTP client; each of COMMENTS (smtpd's lines such as
    `(Authenticated sender: joe)`) on a line of its own between `from` and `by` (a blank
    one is left out: a header line of white space alone would end the header early)."""
    literal = f"IPv6:{client.address}" if ":" in client.address else client.address
    lines = [
        f"from {client.helo or client.name} ({client.name} [{literal}])",
        *(f"\t{_CONTROL.sub('?', comment)}" for comment in comments if comment.strip()),
        f"\tby {myhostname} ({mail_name}) with {client.protocol} id {queue_id}",
    ]
    _add_for_and_date(lines, recipients, when)
    return header("Received", "\n".join(lines))


def received_local(
    *,
    myhostname: str,
    mail_name: str,
    queue_id: str,
    when: float,
    uid: int | None = None,
) -> HeaderField:
    who = f"{mail_name}, from userid {uid}" if uid is not None else mail_name
    return header("Received", f"by {myhostname} ({who})\n\tid {queue_id}; {mail_date(when)}")


def _add_for_and_date(lines: list[str], recipients: list[str], when: float) -> None:
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {mail_date(when)}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{mail_date(when)}")


def message_id(queue_id: str, created: float, myhostname: str) -> str:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(created))
    return f"<{stamp}.{queue_id}@{myhostname}>"


def from_header(sender: str, full_name: str | None, header_from_format: str) -> HeaderField:
    if not sender:
        return header("From", "MAILER-DAEMON")
    address = quote_address(sender)
    if not full_name:
        return header("From", address)
    if header_from_format == "obsolete":
        return header("From", f"{address} ({_comment(full_name)})")
    return header("From", f"{_phrase(full_name)} <{address}>")


def _phrase(name: str) -> str:
    if not name.isascii():
        return Header(name, "utf-8").encode()
    if _PHRASE_SPECIALS.search(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return name


def _comment(name: str) -> str:
    if not name.isascii():
        return Header(name, "utf-8").encode()
    return re.sub(r"([()\\])", r"\\\1", name)


def add_missing_headers(
    message: Message,
    *,
    queue_id: str,
    created: float,
    arrival: float,
    myhostname: str,
    sender: str,
    full_name: str | None,
    header_from_format: str,
) -> str | None:
    """Append Message-Id:, Date:, From: (or Resent- ones) that MESSAGE lacks.

    Returns the Message-Id the message ends up with (its own or the added one),
    or None when it has none.
    """
    prefix = "Resent-" if message.has_resent_headers() else ""
    existing = message.first(prefix + "Message-Id")
    if existing is None:
        added = message_id(queue_id, created, myhostname)
        message.headers.append(header(prefix + "Message-Id", added))
        found: str | None = added
    else:
        found = existing.text()
    if not message.has(prefix + "Date"):
        message.headers.append(header(prefix + "Date", mail_date(arrival)))
    if not message.has(prefix + "From"):
        made = from_header(sender, full_name, header_from_format)
        message.headers.append(HeaderField(prefix + "From", (prefix.encode() + made.raw)))
    return found


def drop_headers(message: Message, names: list[str]) -> None:
    """Remove every header named in NAMES (message_drop_headers), case-insensitively."""
    drop = {name.lower() for name in names}
    message.headers = [h for h in message.headers if h.lname not in drop]


def message_id_of(message: Message) -> str | None:
    prefix = "Resent-" if message.has_resent_headers() else ""
    found = message.first(prefix + "Message-Id")
    return found.text() if found else None
