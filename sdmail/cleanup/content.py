"""cleanup's view of message content: lines, the header section, the body.

Content arrives as bytes from any front end (SMTP with CRLF, sendmail with LF,
anything at all from a hostile client).  This module makes it one clean shape
and never fails on any input:

- CRLF becomes LF; a CR elsewhere becomes a space (`cleanup_replace_stray_cr_lf`),
  so no bare CR or LF survives inside a line.  NUL bytes and 8-bit text are kept
  as Postfix keeps them.  Lines of any length stay whole.
- The header section is the run of `Name: value` lines (with their folded
  continuation lines) at the start.  The first line that is neither a header
  nor a continuation ends it; when that line is not empty the missing blank
  line is supplied (`non_empty_end_of_header_action = fix_quietly`), so the
  line starts the body.  Header text past `header_size_limit` is discarded.
- An empty message is a message with no headers and an empty body.

`render()` puts it back together as LF-terminated bytes: headers, one empty
line, body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


@dataclass(frozen=True)
class HeaderField:
    """One logical header: its name as written and its whole text, folded lines joined by LF."""

    name: str
    raw: bytes

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """The text after the colon, with folding white space as written."""
        return self.raw.split(b":", 1)[1].strip()

    def text(self) -> str:
        """The value unfolded, as text (8-bit bytes shown as UTF-8 where they are)."""
        unfolded = re.sub(rb"\n[ \t]+", b" ", self.value)
        return unfolded.decode("utf-8", "replace")


@dataclass
class Message:
    headers: list[HeaderField] = field(default_factory=list)
    body: bytes = b""
    header_truncated: bool = False

    def first(self, name: str) -> HeaderField | None:
        lname = name.lower()
        return next((h for h in self.headers if h.lname == lname), None)

    def has(self, name: str) -> bool:
        return self.first(name) is not None

    def count(self, name: str) -> int:
        lname = name.lower()
        return sum(1 for h in self.headers if h.lname == lname)

    def has_resent_headers(self) -> bool:
        return any(h.lname.startswith("resent-") for h in self.headers)


def header(name: str, value: str | bytes) -> HeaderField:
    """A new header NAME: VALUE (VALUE may hold folded lines joined by LF + tab)."""
    raw_value = value.encode("utf-8") if isinstance(value, str) else value
    return HeaderField(name, name.encode("ascii") + b": " + raw_value)


def normalize(content: bytes) -> bytes:
    """LF line endings; stray CR replaced by a space."""
    data = content.replace(b"\r\n", b"\n")
    if b"\r" in data:
        data = data.replace(b"\r", b" ")
    return data


def parse(content: bytes, header_size_limit: int = 102400) -> Message:
    """Split CONTENT into header fields and body; never fails (see the module doc)."""
    data = normalize(content)
    message = Message()
    size = 0
    pos = 0
    lines: list[bytes] = []  # physical lines of the header being collected
    while pos < len(data):
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline
        line = data[pos:end]
        following = end + 1
        if line[:1] in (b" ", b"\t") and lines:
            lines.append(line)
        elif _HEADER_NAME.match(line):
            size = _flush(message, lines, size, header_size_limit)
            lines = [line]
        else:
            size = _flush(message, lines, size, header_size_limit)
            lines = []
            # An empty line ends the headers; any other line ends them and is body.
            message.body = data[following:] if line == b"" else data[pos:]
            return message
        pos = following
    _flush(message, lines, size, header_size_limit)
    return message


def _flush(message: Message, lines: list[bytes], size: int, limit: int) -> int:
    if not lines:
        return size
    raw = b"\n".join(lines)
    size += len(raw) + 1
    if size > limit:
        message.header_truncated = True
        return size
    name = _HEADER_NAME.match(lines[0])
    assert name is not None
    message.headers.append(HeaderField(name.group(1).decode("ascii"), raw))
    return size


def render(message: Message) -> bytes:
    """Headers, an empty line, the body: LF-terminated bytes."""
    head = b"".join(h.raw + b"\n" for h in message.headers)
    return head + b"\n" + message.body
