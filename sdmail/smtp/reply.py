"""Replies of a remote SMTP or LMTP server, parsed the way Postfix's smtp_chat parses them.

A reply is one or more lines `ddd-text` ending with `ddd text` (or a bare `ddd`). The code
is the last line's; the RFC 3463 status is the enhanced code at the start of the last
line's text when it agrees with the reply code's class, else `X.0.0` from the reply code
(`5.5.0` for a reply that is not 2xx, 4xx or 5xx). A line that does not start with three
digits is kept in the text and skipped (a protocol error); the text handed on for logs and
notices is the reply's lines joined with spaces, as Postfix logs them (`550-5.7.1 first
550 5.7.1 second`). What a server sends is hostile input: lines are cut at
`MAX_LINE_LENGTH` octets, a reply's text at `MAX_TEXT_LENGTH`, and bytes that are not
UTF-8 are replaced.

`Features` is what an EHLO or LHLO reply offers: PIPELINING, SIZE (with its limit),
8BITMIME, SMTPUTF8, DSN, STARTTLS; keywords named in smtp_discard_ehlo_keywords are
ignored.

Failure modes: none; `ReplyParser.feed` and `ehlo_features` accept any bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

MAX_LINE_LENGTH: Final = 2048  # Postfix's line_length_limit for server replies
MAX_TEXT_LENGTH: Final = 4096
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Reply:
    """A complete reply: CODE (0 when its last line had no valid code), its LINES, its DSN."""

    code: int
    lines: tuple[str, ...]
    dsn: str

    @property
    def text(self) -> str:
        """The reply as one line, for logs and notices."""
        return " ".join(self.lines)

    @property
    def kind(self) -> int:
        """The first digit of the code: 2, 3, 4 or 5 (0 for a malformed reply)."""
        return self.code // 100

    @property
    def is_positive(self) -> bool:
        return self.kind == 2

    @property
    def is_temporary(self) -> bool:
        return self.kind == 4

    @property
    def is_permanent(self) -> bool:
        return self.kind == 5

    def with_dsn_class(self, first: str) -> Reply:
        """The reply with its status made FIRST.x.y (a 5xx greeting treated as 4xx)."""
        return Reply(self.code, self.lines, first + self.dsn[1:])


def reply_dsn(code: int, last_line: str) -> str:
    """The RFC 3463 status of a reply whose last line is LAST_LINE."""
    first = str(code)[0] if 200 <= code < 600 and str(code)[0] in "245" else None
    if first is None:
        return "5.5.0"
    match = _ENHANCED.match(last_line[4:].lstrip(" "))
    if match and match.group(1) == first:
        return ".".join(match.groups())
    return f"{first}.0.0"


class ReplyParser:
    """Collects the lines of one reply; `feed` says when it is complete."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._length = 0
        self.protocol_error = False
        self.reply: Reply | None = None

    def feed(self, raw: bytes) -> Reply | None:
        """Take one line (without its CRLF); the Reply once the last line came, else None."""
        line = raw[:MAX_LINE_LENGTH].decode("utf-8", "replace").rstrip("\r\n")
        if self._length < MAX_TEXT_LENGTH:
            kept = line[: MAX_TEXT_LENGTH - self._length]
            self.lines.append(kept)
            self._length += len(kept) + 1
        digits = len(line) - len(line.lstrip("0123456789"))
        if digits == 3:
            if line[3:4] == "-":
                return None
            if line[3:4] in (" ", ""):
                code = int(line[:3])
                self.reply = Reply(code, tuple(self.lines), reply_dsn(code, line))
                return self.reply
        self.protocol_error = True
        return None


def parse_reply(lines: list[bytes]) -> Reply | None:
    """The reply LINES make, or None when they do not end it."""
    parser = ReplyParser()
    for line in lines:
        reply = parser.feed(line)
        if reply is not None:
            return reply
    return None


@dataclass(frozen=True)
class Features:
    """What a server offered in its EHLO/LHLO reply (nothing after HELO)."""

    esmtp: bool = False
    pipelining: bool = False
    size: bool = False
    size_limit: int = 0  # 0: none announced
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    starttls: bool = False
    helo_name: str = ""
    keywords: frozenset[str] = field(default_factory=frozenset)


def ehlo_features(reply: Reply, discard: frozenset[str] = frozenset()) -> Features:
    """The features REPLY offers, minus the keywords in DISCARD (upper case)."""
    keywords: dict[str, str] = {}
    helo_name = ""
    for index, line in enumerate(reply.lines):
        words = re.split(r"[ \t=]+", line[4:].strip(), maxsplit=1) if len(line) > 4 else [""]
        if index == 0:
            helo_name = words[0]
            continue
        keyword = words[0].upper()
        if keyword and keyword not in discard:
            keywords[keyword] = words[1] if len(words) > 1 else ""
    size_text = keywords.get("SIZE", "").split()
    size_limit = int(size_text[0]) if size_text and size_text[0].isdigit() else 0
    smtputf8 = "SMTPUTF8" in keywords
    return Features(
        esmtp=True,
        pipelining="PIPELINING" in keywords,
        size="SIZE" in keywords,
        size_limit=size_limit,
        # Postfix: a server that offers SMTPUTF8 gets 8-bit mail even without 8BITMIME.
        eightbitmime="8BITMIME" in keywords or smtputf8,
        smtputf8=smtputf8,
        dsn="DSN" in keywords,
        starttls="STARTTLS" in keywords,
        helo_name=helo_name,
        keywords=frozenset(keywords),
    )
