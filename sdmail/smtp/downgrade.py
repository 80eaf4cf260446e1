"""8-bit MIME to 7-bit, for a server that does not offer 8BITMIME (Postfix's MIME downgrade).

Postfix converts only what MIME labels as 8-bit, and so does this: a leaf part (or a whole
message) whose Content-Transfer-Encoding is `8bit` or `binary` gets its body
quoted-printable encoded and its label changed to `quoted-printable` (or just relabelled
`7bit` when its body is ASCII after all); a multipart or message/* part labelled 8-bit or
binary is relabelled `7bit`, its parts converted in turn. Everything else passes octet
for octet: headers (8-bit header text cannot be converted), parts that are already 7bit,
quoted-printable or base64, and a message without MIME labels (sent as it is, as Postfix
sends it). Nesting deeper than the safety limit refuses the conversion, as Postfix's
`MIME nesting exceeds safety limit` (5.6.0) does.

The content is what a client sent, so any bytes may come: unterminated multiparts, missing
boundaries, broken Content-Type parameters are all passed through as text.

Failure modes: `downgrade` raises `DowngradeError` (with its Status) only for nesting
deeper than NESTING_LIMIT.
"""

from __future__ import annotations

import email.message
import quopri
from dataclasses import dataclass, field
from typing import Final

from sdmail.core.dsn import Status

NESTING_LIMIT: Final = 100  # Postfix's mime_nesting_limit
_EIGHT_BIT_ENCODINGS: Final = frozenset({"8bit", "binary"})


class DowngradeError(Exception):
    """The message cannot be converted; STATUS is the bounce."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.text)
        self.status = status


@dataclass
class _Header:
    lines: list[bytes]  # the first line and its continuation lines

    @property
    def name(self) -> str:
        return self.lines[0].split(b":", 1)[0].strip().decode("latin-1").lower()

    @property
    def value(self) -> str:
        joined = b" ".join(line.strip() for line in self.lines)
        return joined.split(b":", 1)[1].decode("latin-1").strip() if b":" in joined else ""


@dataclass
class _Entity:
    headers: list[_Header] = field(default_factory=list)

    def value_of(self, name: str) -> str | None:
        for header in self.headers:
            if header.name == name:
                return header.value
        return None

    @property
    def content_type(self) -> tuple[str, str | None]:
        """The type/subtype (lower case; empty when not labelled) and the boundary."""
        value = self.value_of("content-type")
        if value is None:
            return "", None
        parsed = email.message.Message()
        parsed["Content-Type"] = value
        boundary = parsed.get_param("boundary")
        text = boundary if isinstance(boundary, str) else None
        return parsed.get_content_type(), text

    @property
    def transfer_encoding(self) -> str:
        value = self.value_of("content-transfer-encoding") or ""
        return value.split(";", 1)[0].strip().lower()


def downgrade(content: bytes) -> bytes:
    """CONTENT (LF line ends) with its 8-bit MIME parts made 7-bit (see module docstring)."""
    lines = content.split(b"\n")
    ends_with_newline = content.endswith(b"\n")
    if ends_with_newline:
        lines.pop()
    converter = _Converter(lines)
    out = converter.entity(0, (), default_type="text/plain")
    text = b"\n".join(out)
    return text + b"\n" if ends_with_newline else text


class _Converter:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.pos = 0

    def entity(
        self, depth: int, boundaries: tuple[bytes, ...], *, default_type: str
    ) -> list[bytes]:
        """Convert the entity at the current line, up to the next enclosing boundary."""
        if depth > NESTING_LIMIT:
            raise DowngradeError(Status("5.6.0", "MIME nesting exceeds safety limit"))
        entity, header_lines = self._headers(boundaries)
        ctype, boundary = entity.content_type
        ctype = ctype or default_type
        encoding = entity.transfer_encoding
        if ctype.startswith("multipart/") and boundary:
            body = self._multipart(depth, boundaries, boundary.encode("latin-1", "replace"), ctype)
            return self._relabel(entity, header_lines, encoding, b"7bit") + body
        if ctype == "message/rfc822":
            if self._at_body_end(boundaries):
                return header_lines
            body = self.entity(depth + 1, boundaries, default_type="text/plain")
            return self._relabel(entity, header_lines, encoding, b"7bit") + body
        body = self._leaf_body(boundaries)
        if encoding not in _EIGHT_BIT_ENCODINGS:
            return header_lines + body
        if all(line.isascii() for line in body):
            return self._relabel(entity, header_lines, encoding, b"7bit") + body
        encoded = quopri.encodestring(b"\n".join(body) + b"\n").split(b"\n")
        if encoded and encoded[-1] == b"":
            encoded.pop()
        return self._relabel(entity, header_lines, encoding, b"quoted-printable") + encoded

    # -- pieces ------------------------------------------------------------------------------
    def _headers(self, boundaries: tuple[bytes, ...]) -> tuple[_Entity, list[bytes]]:
        """The header block (through its empty line, when there is one)."""
        entity = _Entity()
        start = self.pos
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            if line in (b"", b"\r") or _delimiter(line, boundaries) is not None:
                break
            if line[:1] in (b" ", b"\t") and entity.headers:
                entity.headers[-1].lines.append(line)
            elif b":" in line:
                entity.headers.append(_Header([line]))
            else:
                break  # not a header: the body starts here, without an empty line
            self.pos += 1
        if self.pos < len(self.lines) and self.lines[self.pos] in (b"", b"\r"):
            self.pos += 1
        return entity, self.lines[start : self.pos]

    def _relabel(
        self, entity: _Entity, header_lines: list[bytes], encoding: str, new: bytes
    ) -> list[bytes]:
        if encoding not in _EIGHT_BIT_ENCODINGS:
            return header_lines
        out: list[bytes] = []
        skipping = False
        for line in header_lines:
            if line[:1] in (b" ", b"\t") and skipping:
                continue
            skipping = line.split(b":", 1)[0].strip().lower() == b"content-transfer-encoding"
            out.append(b"Content-Transfer-Encoding: " + new if skipping else line)
        return out

    def _at_body_end(self, boundaries: tuple[bytes, ...]) -> bool:
        return (
            self.pos >= len(self.lines) or _delimiter(self.lines[self.pos], boundaries) is not None
        )

    def _leaf_body(self, boundaries: tuple[bytes, ...]) -> list[bytes]:
        start = self.pos
        while not self._at_body_end(boundaries):
            self.pos += 1
        return self.lines[start : self.pos]

    def _multipart(
        self, depth: int, boundaries: tuple[bytes, ...], boundary: bytes, ctype: str
    ) -> list[bytes]:
        inner = (*boundaries, boundary)
        part_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        out = self._leaf_body(inner)  # the preamble
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            found = _delimiter(line, inner)
            if found != boundary:
                break  # an enclosing boundary: this multipart ends unclosed
            out.append(line)
            self.pos += 1
            if _is_close(line, boundary):
                out += self._leaf_body(boundaries)  # the epilogue
                break
            out += self.entity(depth + 1, inner, default_type=part_type)
        return out


def _delimiter(line: bytes, boundaries: tuple[bytes, ...]) -> bytes | None:
    """The boundary LINE delimits (the innermost that matches), or None."""
    if not line.startswith(b"--"):
        return None
    text = line.rstrip(b" \t\r")
    for boundary in reversed(boundaries):
        if text == b"--" + boundary or text == b"--" + boundary + b"--":
            return boundary
    return None


def _is_close(line: bytes, boundary: bytes) -> bool:
    return line.rstrip(b" \t\r") == b"--" + boundary + b"--"
