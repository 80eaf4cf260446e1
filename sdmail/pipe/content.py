"""What a pipe command reads on its stdin: the message, shaped by the transport's flags as
Postfix's mail_copy shapes it.

In this order: `F` a `From SENDER  DATE` line; `R` `Return-Path: <SENDER>`; `O`
`X-Original-To: ORIGINAL`; `D` `Delivered-To: RECIPIENT` (core/delivery_headers); then
every line of the message, with `>` before a line that starts with `From ` (flag `>`) and
a second `.` before a line that starts with `.` (flag `.`); `B` an empty line at the end.
Every line ends with the transport's `eol=` (LF by default).

Failure modes: none; `command_input` takes any content.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdmail.core.delivery_headers import envelope_headers, shown_address
from sdmail.core.mailstore import mbox_from_line


@dataclass(frozen=True)
class Envelope:
    """The envelope facts the flags can put on top: the sender as the command sees it (the
    null sender already replaced by null_sender), and the one recipient."""

    sender: str
    original: str
    recipient: str
    when: float


def command_input(content: bytes, envelope: Envelope, flags: str, eol: bytes) -> bytes:
    """CONTENT (LF line ends) as the command reads it (see the module docstring)."""
    out = bytearray()
    if "F" in flags:
        out += mbox_from_line(shown_address(envelope.sender), envelope.when).rstrip(b"\n") + eol
    out += envelope_headers(
        return_path=envelope.sender if "R" in flags else None,
        original_to=envelope.original if "O" in flags else None,
        delivered_to=envelope.recipient if "D" in flags else None,
        eol=eol,
    )
    quote_from, stuff_dots = ">" in flags, "." in flags
    lines = content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        if quote_from and line.startswith(b"From "):
            out += b">"
        elif stuff_dots and line.startswith(b"."):
            out += b"."
        out += line
        out += eol
    if "B" in flags:
        out += eol
    return bytes(out)
