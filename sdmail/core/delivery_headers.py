"""The envelope headers a final delivery puts on top of a message, and the forwarding-loop
check they make possible (the header part of Postfix's mail_copy.c, and delivered_hdr.c).

A message written into a mailbox or handed to a delivery command may get, in this order,
`Return-Path: <sender>`, `X-Original-To: recipient as first given` and `Delivered-To: final
recipient` (`envelope_headers`). Addresses are printed in their external form (a local part
that is not a dot-atom is quoted), Delivered-To: folded to lower case as Postfix writes it,
and a character that could end the header line early (a control character in an address
that should never have been queued) is printed as `?`, so no address can add a header of
its own. A recipient that a `Delivered-To:` header of the message already names is a
forwarding loop (`has_delivered_to`): the agent bounces it (`5.4.6 mail forwarding loop for
ADDRESS`) instead of delivering it once more. Shared by the virtual and pipe agents.

Failure modes: none; both functions take any input (header bytes that are not UTF-8,
folded or broken header lines) without raising.
"""

from __future__ import annotations

import re
from typing import Final

from sdmail.core.address import AddressError, quote_address

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_DELIVERED_TO: Final = b"delivered-to"


def shown_address(address: str) -> str:
    """ADDRESS as a header or log shows it: quoted where RFC 5322 wants it, control
    characters as `?`."""
    try:
        return quote_address(address)
    except AddressError:
        cleaned = _CONTROL.sub("?", address)
    try:
        return quote_address(cleaned)
    except AddressError:
        return cleaned


def envelope_headers(
    *,
    return_path: str | None,
    original_to: str | None,
    delivered_to: str | None,
    eol: bytes = b"\n",
) -> bytes:
    """`Return-Path:`, `X-Original-To:`, `Delivered-To:` for the addresses given (None: that
    header is left out), each line ended by EOL. RETURN_PATH "" is the null sender (`<>`)."""
    lines = []
    if return_path is not None:
        lines.append(f"Return-Path: <{shown_address(return_path)}>")
    if original_to is not None:
        lines.append(f"X-Original-To: {shown_address(original_to)}")
    if delivered_to is not None:
        lines.append(f"Delivered-To: {shown_address(delivered_to).lower()}")
    return b"".join(line.encode("utf-8", "surrogateescape") + eol for line in lines)


def has_delivered_to(header_block: bytes, address: str) -> bool:
    """True when a Delivered-To: header in HEADER_BLOCK (the message headers) names ADDRESS,
    ignoring case, angle brackets and the folding of long header lines."""
    wanted = {address.casefold(), shown_address(address).casefold()}
    return any(value.casefold() in wanted for value in _delivered_to_values(header_block))


def _delivered_to_values(header_block: bytes) -> list[str]:
    values: list[str] = []
    current: bytes | None = None
    for raw in header_block.split(b"\n"):
        line = raw.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current += b" " + line.strip()
            continue
        if current is not None:
            values.append(_value_text(current))
        if not line:
            current = None
            break  # the empty line ends the headers
        name, colon, value = line.partition(b":")
        current = value if colon and name.strip().lower() == _DELIVERED_TO else None
    if current is not None:
        values.append(_value_text(current))
    return values


def _value_text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape").strip().strip("<>").strip()
