"""The message as it goes after DATA: CRLF line ends, dot-stuffing, long lines folded.

The queue keeps a message's lines whole however long they are; only here, on the way out,
is a line longer than smtp_line_length_limit (998 octets by default, not counting CRLF)
broken, as Postfix's smtp_text_out breaks it: the first `limit` octets, CRLF, then a
space and the next `limit - 1` octets, and so on, so a long header line stays one folded
header and a body line gains one space per fold. A line that starts with a dot gets a
second one (RFC 5321 4.5.2); the data ends with CRLF.CRLF.

`encoding_of` decides whether the message is 8-bit (Postfix's request encoding): the
client said BODY=8BITMIME, or the content holds an octet above 127; 7-bit when the client
said BODY=7BIT; neither otherwise (no BODY= is sent). `needs_smtputf8` is
Postfix's DELIVERY_REQUIRES_SMTPUTF8: the client asked for SMTPUTF8 and the sender, a
recipient or a header holds UTF-8.

Failure modes: none.
"""

from __future__ import annotations

from collections.abc import Iterable

from sdmail.core.records import BodyType, Envelope

EIGHT_BIT = "8BIT"
SEVEN_BIT = "7BIT"


def encoding_of(envelope: Envelope, content: bytes) -> str:
    """`8BIT`, `7BIT` or "" (not declared, all ASCII): what BODY= the message goes with."""
    if envelope.body_type is BodyType.EIGHT_BIT_MIME or not content.isascii():
        return EIGHT_BIT
    return SEVEN_BIT if envelope.body_type is BodyType.SEVEN_BIT else ""


def needs_smtputf8(envelope: Envelope, recipients: Iterable[str], header_block: bytes) -> bool:
    """Whether only a server offering SMTPUTF8 may take this delivery."""
    if not envelope.smtputf8:
        return False
    addresses = [envelope.sender, *recipients]
    return not all(a.isascii() for a in addresses) or not header_block.isascii()


def xtext(text: str) -> str:
    """RFC 3461 xtext: `+`, `=` and what is not printable ASCII as `+XX` (UTF-8 octets)."""
    out = []
    for octet in text.encode("utf-8", "surrogateescape"):
        char = chr(octet)
        if 33 <= octet <= 126 and char not in "+=":
            out.append(char)
        else:
            out.append(f"+{octet:02X}")
    return "".join(out)


def orcpt_parameter(orcpt: str) -> str:
    """The ORCPT= value of a stored `type;address` (RFC 3461 xtext, RFC 6533 for utf-8)."""
    address_type, _, address = orcpt.partition(";")
    if address_type.lower() != "utf-8":
        return xtext(orcpt)
    out = []
    for char in address:
        if char.isascii() and 33 <= ord(char) <= 126 and char not in "+=\\":
            out.append(char)
        else:
            out.append(f"\\x{{{ord(char):X}}}")
    return f"{address_type};{''.join(out)}"


def data_bytes(content: bytes, line_limit: int) -> tuple[bytes, bool]:
    """CONTENT as DATA sends it, through the final CRLF.CRLF; and whether a line was folded.

    LINE_LIMIT 0 folds nothing."""
    if content.endswith(b"\n"):
        content = content[:-1]
    lines = content.split(b"\n") if content else []
    folded = line_limit > 0 and any(len(line) > line_limit for line in lines)
    if folded:
        lines = [piece for line in lines for piece in _fold(line, line_limit)]
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line
        out += b"\r\n"
    out += b".\r\n"
    return bytes(out), folded


def _fold(line: bytes, limit: int) -> list[bytes]:
    """LINE as Postfix sends it: LIMIT octets, then SPACE + LIMIT-1 octets per line."""
    if len(line) <= limit:
        return [line]
    pieces = [line[:limit]]
    rest = line[limit:]
    while rest:
        pieces.append(b" " + rest[: limit - 1])
        rest = rest[limit - 1 :]
    return pieces
