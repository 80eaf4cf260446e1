"""The text of the notices to senders: RFC 3464 multipart/reports, in Postfix's shape.

`notice(kind, original, recipients, ...)` gives the bytes of one notice; KIND is
what it tells: NON_DELIVERY (which recipients could not be reached and why),
DELAY (which are still being retried, `delay_warning_time`), SUCCESS (DSN
NOTIFY=SUCCESS: which were delivered) or STATUS_REPORT (`sendmail -v` and `-bv`:
the result for each recipient, whatever it was).  For the non-delivery notice
(reference §8.3): headers (From: Mail Delivery System <MAILER-DAEMON>, Subject:
Undelivered Mail Returned to Sender, To: the sender, Auto-Submitted:
auto-replied, References:/In-Reply-To: the original's Message-Id), then three
parts: the text for people (one `<address>: reason` paragraph per recipient,
folded at 79 columns), the message/delivery-status for programs
(Reporting-MTA, X-Postfix-Queue-ID, X-Postfix-Sender, Arrival-Date, and per
recipient Final-Recipient, Original-Recipient, Action: failed, Status,
Remote-MTA, Diagnostic-Code), and the original: the whole message
(message/rfc822) or only its headers (text/rfc822-headers).  The other kinds
differ in subject, text, each recipient's Action: (delayed with
Will-Retry-Until:, delivered, relayed, expanded, deliverable, undeliverable)
and what they return (delay and success notices return the headers unless
RET=FULL asks for more).  The boundary is
Postfix's `QUEUEID.TIME/HOSTNAME`.  cleanup adds Received:, Message-Id: and
Date: and completes MAILER-DAEMON with $myorigin when the notice is queued.

A reason text in the shape the smtp client logs (`host H[A] said: 550 5.1.1 ...
(in reply to RCPT TO command)`) becomes `Remote-MTA: dns; H` and `Diagnostic-Code:
smtp; 550 5.1.1 ...`; any other becomes `Diagnostic-Code: X-Postfix; reason`.

Pure functions, no I/O; they do not fail for any input (control characters in
addresses and reasons, which would break the notice's lines, show as `?`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from sdmail.core.address import AddressError, quote_address
from sdmail.core.dsn import Status
from sdmail.core.maildate import mail_date

TEXT_WIDTH = 79
CONTINUATION = "    "
_SMTP_REPLY = re.compile(r"host (\S+?)\[[^\]]*\] said: (.*?)(?: \(in reply to [^)]* command\))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_SIGNATURE = "\n                   The mail system\n"
_ASSISTANCE = """
For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.
"""
_FAILURE_TEXT = (
    """\
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.
"""
    + _ASSISTANCE
    + _SIGNATURE
)
_DELAY_TEXT = (
    """\
####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than {warn_hours} hour(s).
It will be retried until it is {lifetime_days} day(s) old.
"""
    + _ASSISTANCE
    + _SIGNATURE
)
_SUCCESS_TEXT = (
    """\
Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.
"""
    + _SIGNATURE
)
_STATUS_REPORT_TEXT = "Enclosed is the mail delivery report that you requested.\n" + _SIGNATURE


@dataclass(frozen=True)
class Kind:
    """What a notice tells: its subject, its text for people, how it names what it returns."""

    subject: str
    text: str
    returned: str  # the returned part's description; "... Headers" when only headers
    per_recipient: str  # "reason" (`<a>: reason`) or "delivery" (`<a>: delivery via R: text`)
    # What of the original it returns: the message unless RET=HDRS ("message"), the
    # headers unless RET=FULL ("headers"), or regardless of RET ("only headers", "all").
    returns: str = "message"
    auto_submitted: str = "auto-replied"


NON_DELIVERY = Kind(
    "Undelivered Mail Returned to Sender", _FAILURE_TEXT, "Undelivered Message", "reason"
)
DELAY = Kind(
    "Delayed Mail (still being retried)", _DELAY_TEXT, "Undelivered Message", "reason", "headers"
)
SUCCESS = Kind("Successful Mail Delivery Report", _SUCCESS_TEXT, "Message", "delivery", "headers")
STATUS_REPORT = Kind(
    "Mail Delivery Status Report", _STATUS_REPORT_TEXT, "Message", "delivery", "headers"
)
# notify_classes copies for the postmaster: no template text, never a reply to anyone.
POSTMASTER_COPY = Kind(
    "Postmaster Copy: Undelivered Mail", "", "Undelivered Message", "reason",
    "only headers", "auto-generated",
)  # fmt: skip
POSTMASTER_DELAY = Kind(
    "Postmaster Warning: Delayed Mail", "", "Undelivered Message", "reason",
    "only headers", "auto-generated",
)  # fmt: skip
DOUBLE_BOUNCE = Kind(
    "Undelivered Mail Returned to Sender", "", "Undelivered Message", "reason",
    "all", "auto-generated",
)  # fmt: skip


@dataclass(frozen=True)
class Original:
    """The message a notice is about.

    CONTENT is what is returned of it: the whole message, or with HEADERS_ONLY its
    header block (LF line ends, as queued).  MESSAGE_ID is its Message-Id header value.
    """

    queue_id: str
    sender: str
    arrival: float
    content: bytes
    headers_only: bool
    message_id: str | None = None
    envid: str | None = None
    smtputf8: bool = False  # RFC 6533: the report and the original go as message/global*


@dataclass(frozen=True)
class Failure:
    """One recipient the notice reports: its address, what became of it (ACTION, STATUS),
    and through which RELAY.  (Named for the notice it was made for first.)"""

    address: str
    status: Status
    orig_address: str | None = None
    orcpt: str | None = None
    action: str = "failed"
    relay: str = "none"


@dataclass(frozen=True)
class Timing:
    """What a delay notice says about time: the parameters, and when retries stop."""

    delay_warning_time: int = 0
    maximal_queue_lifetime: int = 0


def non_delivery_notice(
    original: Original, failures: Sequence[Failure], *, myhostname: str, now: float
) -> bytes:
    """The notice to ORIGINAL's sender about FAILURES, as queued content (LF line ends)."""
    return notice(NON_DELIVERY, original, failures, myhostname=myhostname, now=now)


def notice(
    kind: Kind,
    original: Original,
    failures: Sequence[Failure],
    *,
    myhostname: str,
    now: float,
    timing: Timing = Timing(),
    to: str | None = None,
) -> bytes:
    """The KIND notice to ORIGINAL's sender (or TO) about FAILURES, as queued content
    (LF line ends)."""
    boundary = f"{original.queue_id}.{int(now)}/{myhostname}"
    parts = [
        _part(
            "Notification",
            "text/plain; charset=us-ascii",
            _human_text(kind, failures, myhostname, timing),
        ),
        _part(
            "Delivery report",
            "message/global-delivery-status" if original.smtputf8 else "message/delivery-status",
            _report(original, failures, myhostname, timing),
        ),
    ]
    returned = _returned_part(kind, original)
    body_parts = [p.encode("utf-8", "surrogateescape") for p in parts] + [returned]
    body = b"This is a MIME-encapsulated message.\n\n"
    for part in body_parts:
        body += f"--{boundary}\n".encode() + part + b"\n"
    body += f"--{boundary}--\n".encode()
    eight_bit = any(byte >= 0x80 for byte in body)
    headers = _headers(kind, original, boundary, eight_bit, original.sender if to is None else to)
    return headers.encode("utf-8", "surrogateescape") + b"\n" + body


def is_eight_bit(notice: bytes) -> bool:
    """Whether the notice holds 8-bit octets (it is then queued as 8BITMIME)."""
    return any(byte >= 0x80 for byte in notice)


def _headers(kind: Kind, original: Original, boundary: str, eight_bit: bool, to: str) -> str:
    lines = [
        "From: Mail Delivery System <MAILER-DAEMON>",
        f"Subject: {kind.subject}",
        f"To: {_address(to)}",
    ]
    if original.message_id:
        message_id = _printable(original.message_id)
        lines += [f"References: {message_id}", f"In-Reply-To: {message_id}"]
    lines += [
        f"Auto-Submitted: {kind.auto_submitted}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
    ]
    return "".join(line + "\n" for line in lines)


def _part(description: str, content_type: str, text: str) -> str:
    return f"Content-Description: {description}\nContent-Type: {content_type}\n\n{text}"


def _human_text(kind: Kind, failures: Sequence[Failure], myhostname: str, timing: Timing) -> str:
    boilerplate = kind.text.format(
        warn_hours=_whole(timing.delay_warning_time / 3600),
        lifetime_days=_whole(timing.maximal_queue_lifetime / 86400),
    )
    text = f"This is the mail system at host {_printable(myhostname)}.\n\n{boilerplate}"
    for failure in failures:
        who = f"<{_address(failure.address)}>"
        if failure.orig_address and failure.orig_address.lower() != failure.address.lower():
            who += f" (expanded from <{_address(failure.orig_address)}>)"
        reason = _printable(failure.status.text)
        if kind.per_recipient == "delivery":
            reason = f"delivery via {_printable(failure.relay)}: {reason}"
        text += "\n" + _fold(f"{who}: {reason}") + "\n"
    return text


def _whole(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def _report(
    original: Original, failures: Sequence[Failure], myhostname: str, timing: Timing
) -> str:
    lines = [f"Reporting-MTA: dns; {_printable(myhostname)}"]
    if original.envid:
        lines.append(f"Original-Envelope-Id: {_printable(original.envid)}")
    lines += [
        f"X-Postfix-Queue-ID: {original.queue_id}",
        f"X-Postfix-Sender: rfc822; {_address(original.sender)}",
        f"Arrival-Date: {mail_date(original.arrival)}",
    ]
    text = "".join(line + "\n" for line in lines)
    retry_until = original.arrival + timing.maximal_queue_lifetime
    for failure in failures:
        fields = _recipient_fields(failure)
        if failure.action == "delayed" and timing.maximal_queue_lifetime:
            fields.append(f"Will-Retry-Until: {mail_date(retry_until)}")
        text += "\n" + "".join(_fold(line) + "\n" for line in fields)
    return text


def _recipient_fields(failure: Failure) -> list[str]:
    fields = [f"Final-Recipient: rfc822; {_address(failure.address)}"]
    if failure.orcpt:
        fields.append(f"Original-Recipient: {_printable(failure.orcpt)}")
    elif failure.orig_address and failure.orig_address != failure.address:
        fields.append(f"Original-Recipient: rfc822; {_address(failure.orig_address)}")
    fields += [f"Action: {failure.action}", f"Status: {failure.status.dsn}"]
    diag_type, diagnostic, remote_mta = diagnostic_of(failure.status.text)
    if remote_mta is not None:
        fields.append(f"Remote-MTA: dns; {_printable(remote_mta)}")
    fields.append(f"Diagnostic-Code: {diag_type}; {_printable(diagnostic)}")
    return fields


def diagnostic_of(reason: str) -> tuple[str, str, str | None]:
    """(diagnostic type, diagnostic text, remote MTA or None) of a logged reason text."""
    match = _SMTP_REPLY.fullmatch(reason)
    if match is not None:
        return "smtp", match[2], match[1]
    return "X-Postfix", reason, None


def _returned_part(kind: Kind, original: Original) -> bytes:
    if original.headers_only:
        content_type = "message/global-headers" if original.smtputf8 else "text/rfc822-headers"
        head = f"Content-Description: {kind.returned} Headers\nContent-Type: {content_type}\n"
    else:
        content_type = "message/global" if original.smtputf8 else "message/rfc822"
        head = f"Content-Description: {kind.returned}\nContent-Type: {content_type}\n"
    content = original.content
    if any(byte >= 0x80 for byte in content):
        head += "Content-Transfer-Encoding: 8bit\n"
    return_path = f"Return-Path: <{_address(original.sender)}>\n"
    if content and not content.endswith(b"\n"):
        content += b"\n"
    return (head + "\n" + return_path).encode("utf-8", "surrogateescape") + content


def _fold(line: str) -> str:
    """LINE broken at spaces before column 79, continued with four spaces (Postfix's way)."""
    if len(line) <= TEXT_WIDTH:
        return line
    pieces = textwrap.wrap(
        line,
        width=TEXT_WIDTH,
        subsequent_indent=CONTINUATION,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(pieces) if pieces else line


def _address(address: str) -> str:
    try:
        return quote_address(address)
    except AddressError:
        return _printable(address)


def _printable(text: str) -> str:
    return _CONTROL.sub("?", text)
