"""smtpd's replies: the `Reply` a verb returns, and every fixed reply text, named once.

Texts and enhanced status codes are Postfix's, word for word (reference §5.2, §5.3), so
that clients, log analysers and tests see what they see from Postfix; tests import the
names below instead of copying the texts. A reply's enhanced status code is part of its
first text line (`250 2.1.0 Ok`); replies without one (the greeting, EHLO, HELO) have none.

`Reply.adjusted` gives Postfix's rule for codes taken from tables and parameters: the
class digit of the enhanced code follows the reply code (`450 5.7.1` becomes
`450 4.7.1`). Nothing here raises except `Reply.__post_init__`, which refuses a code
outside 200..599 or an empty reply (ValueError: a programming error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_ENHANCED = re.compile(r"([245])\.(\d{1,3}\.\d{1,3})(?= |$)")
_ENHANCED_PREFIX = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: a code and one or more text lines.

    CLOSE: the server closes the connection after sending it (QUIT, 421).
    """

    code: int
    lines: tuple[str, ...]
    close: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599 or not self.lines:
            raise ValueError(f"bad reply {self.code} {self.lines!r}")

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    @property
    def text(self) -> str:
        """The first line's text (what a log line shows)."""
        return self.lines[0]

    def wire(self) -> bytes:
        """The reply as sent: `250-first` ... `250 last`, CRLF after each line.

        Bytes a client put into a reply (an address) that are not UTF-8 go back as they came.
        """
        last = len(self.lines) - 1
        out = [
            f"{self.code}{' ' if n == last else '-'}{line}\r\n" for n, line in enumerate(self.lines)
        ]
        return "".join(out).encode("utf-8", "surrogateescape")

    def logged(self) -> str:
        """`CODE text` of the first line, as reject log lines show it."""
        return f"{self.code} {self.lines[0]}"

    def adjusted(self) -> Reply:
        """The enhanced code's class made to agree with the reply code (Postfix's rule)."""
        klass = str(self.code)[0]
        match = _ENHANCED.match(self.lines[0])
        if match is None or match.group(1) == klass:
            return self
        first = f"{klass}.{match.group(2)}{self.lines[0][match.end() :]}"
        return replace(self, lines=(first, *self.lines[1:]))

    def without_enhanced_codes(self) -> Reply:
        """The reply as sent when ENHANCEDSTATUSCODES is not offered (Postfix strips them)."""
        lines = tuple(_ENHANCED_PREFIX.sub("", line, count=1) for line in self.lines)
        return self if lines == self.lines else replace(self, lines=lines)

    def with_footer(self, footer: str) -> Reply:
        """The reply with smtpd_reject_footer as a further line (nothing when empty)."""
        if not footer:
            return self
        return replace(self, lines=(*self.lines, footer))


def reply(code: int, text: str, *, close: bool = False) -> Reply:
    """A one-line reply; TEXT starts with the enhanced code where there is one."""
    return Reply(code, (text,), close)


OK = reply(250, "2.0.0 Ok")
MAIL_OK = reply(250, "2.1.0 Ok")
RCPT_OK = reply(250, "2.1.5 Ok")
START_DATA = reply(354, "End data with <CR><LF>.<CR><LF>")
BYE = reply(221, "2.0.0 Bye", close=True)

SEND_HELO_FIRST = reply(503, "5.5.1 Error: send HELO/EHLO first")
NESTED_MAIL = reply(503, "5.5.1 Error: nested MAIL command")
NEED_MAIL = reply(503, "5.5.1 Error: need MAIL command")
NEED_RCPT = reply(503, "5.5.1 Error: need RCPT command")
NO_VALID_RECIPIENTS = reply(554, "5.5.1 Error: no valid recipients")
MAIL_SYNTAX = reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = reply(501, "5.5.4 Syntax: RCPT TO:<address>")
HELO_SYNTAX = reply(501, "Syntax: HELO hostname")
EHLO_SYNTAX = reply(501, "Syntax: EHLO hostname")
DATA_SYNTAX = reply(501, "5.5.4 Syntax: DATA")
BDAT_SYNTAX = reply(501, "5.5.4 Syntax: BDAT count [LAST]")
RSET_SYNTAX = reply(501, "5.5.4 Syntax: RSET")
QUIT_SYNTAX = reply(501, "5.5.4 Syntax: QUIT")
VRFY_SYNTAX = reply(501, "5.5.4 Syntax: VRFY address")
BAD_SENDER = reply(501, "5.1.7 Bad sender address syntax")
BAD_RECIPIENT = reply(501, "5.1.3 Bad recipient address syntax")
UNKNOWN_COMMAND = reply(500, "5.5.2 Error: command not recognized")
BAD_SYNTAX = reply(500, "5.5.2 Error: bad syntax")
NOT_IMPLEMENTED = reply(502, "5.5.1 Error: command not implemented")
VRFY_DISABLED = reply(502, "5.5.1 VRFY command is disabled")
TOO_MANY_RECIPIENTS = reply(452, "4.5.3 Error: too many recipients")
SIZE_EXCEEDS_LIMIT = reply(552, "5.3.4 Message size exceeds fixed limit")
MESSAGE_TOO_BIG = reply(552, "5.3.4 Error: message file too big")
INSUFFICIENT_STORAGE = reply(452, "4.3.1 Insufficient system storage")
SYNCHRONIZATION = reply(554, "5.5.0 Error: SMTP protocol synchronization", close=True)
FORBIDDEN_COMMAND = reply(221, "2.7.0 Error: I can break rules, too. Goodbye.", close=True)
MIXED_DATA_BDAT = reply(503, "5.5.1 Error: DATA and BDAT in one transaction")
UNICODE_ADDRESS = reply(553, "5.6.7 Must declare SMTPUTF8 to send unicode address")
SMTPUTF8_DISABLED = reply(501, "5.5.4 SMTPUTF8 is not enabled")
LOOKUP_FAILURE_TEXT = "Temporary lookup failure"
CONFIGURATION_ERROR = reply(451, "4.3.5 Server configuration error")
READY_TO_START_TLS = reply(220, "2.0.0 Ready to start TLS")
STARTTLS_SYNTAX = reply(501, "5.5.4 Syntax: STARTTLS")
TLS_ALREADY_ACTIVE = reply(554, "5.5.1 Error: TLS already active")
TLS_UNAVAILABLE = reply(454, "4.7.0 TLS not available due to local problem")
STARTTLS_FIRST = reply(530, "5.7.0 Must issue a STARTTLS command first")
MAIL_IN_PROGRESS = reply(503, "5.5.1 Error: MAIL transaction in progress")
AUTH_NOT_ENABLED = reply(503, "5.5.1 Error: authentication not enabled")
ALREADY_AUTHENTICATED = reply(503, "5.5.1 Error: already authenticated")
AUTH_SYNTAX = reply(501, "5.5.4 Syntax: AUTH mechanism")
AUTH_ABORTED = reply(501, "5.7.0 Authentication aborted")
AUTHENTICATED = reply(235, "2.7.0 Authentication successful")
# ETRN (RFC 1985): Postfix's texts, which carry no enhanced status codes.
ETRN_STARTED = reply(250, "Queuing started")
ETRN_SEND_HELO_FIRST = reply(503, "Error: send HELO/EHLO first")
ETRN_MAIL_IN_PROGRESS = reply(503, "Error: MAIL transaction in progress")
ETRN_SYNTAX = reply(500, "Syntax: ETRN domain")
ETRN_BAD_SITE = reply(501, "Error: invalid parameter syntax")
ETRN_UNABLE = reply(458, "Unable to queue messages")


def unsupported_option(name: str) -> Reply:
    return reply(555, f"5.5.4 Unsupported option: {name}")


def bad_parameter(name: str) -> Reply:
    return reply(501, f"5.5.4 Bad {name} parameter syntax")


def queued(queue_id: str) -> Reply:
    return reply(250, f"2.0.0 Ok: queued as {queue_id}")


def bytes_queued(size: int, queue_id: str) -> Reply:
    return reply(250, f"2.0.0 Ok: {size} bytes queued as {queue_id}")


def bdat_chunk_ok(size: int) -> Reply:
    return reply(250, f"2.0.0 Ok: {size} bytes")


def auth_challenge(text: str) -> Reply:
    """334 and a base64 challenge (empty for PLAIN without an initial response)."""
    return reply(334, text)


def auth_failed(reason: str) -> Reply:
    return reply(535, f"5.7.8 Error: authentication failed: {reason}")


def auth_failed_temporarily(reason: str) -> Reply:
    return reply(454, f"4.7.0 Temporary authentication failure: {reason}")


def etrn_not_eligible(site: str) -> Reply:
    return reply(459, f"<{site}>: service unavailable")


def too_many_errors(myhostname: str) -> Reply:
    return reply(421, f"4.7.0 {myhostname} Error: too many errors", close=True)


def timeout_exceeded(myhostname: str) -> Reply:
    return reply(421, f"4.4.2 {myhostname} Error: timeout exceeded", close=True)


def too_many_connections(myhostname: str, address: str) -> Reply:
    return reply(421, f"4.7.0 {myhostname} Error: too many connections from {address}", close=True)


def service_unavailable(myhostname: str) -> Reply:
    return reply(421, f"4.3.2 {myhostname} Service shutting down", close=True)
