"""Delivery status: the X.Y.Z code and text that say how one attempt for one recipient ended.

A `Status` pairs an RFC 3463 enhanced status code (`2.0.0`, `4.4.1`, `5.1.1`) with the
human-readable reason Postfix logs in parentheses after `status=` and writes into bounce
notices. Its class is the outcome: 2 delivered, 4 try again later, 5 give up.

Inside one process a failed attempt is raised as `TempFail(status)` or `PermFail(status)`;
between processes (a socket to qmgr, a status log on disk) a Status travels as the
versioned text record of `encode_status` / `decode_status`, never as a pickled exception.
The record is one line of printable text, so a hostile reason text from a remote server
cannot forge a second record or a second line.

Failure modes:
- `Status(dsn, text)` raises `DsnError` when `dsn` is not `class.subject.detail` with class
  2, 4 or 5 and subject and detail 0..999 written without leading zeros (RFC 3463, section 2).
- `TempFail(status)` raises `DsnError` for a status whose class is not 4, `PermFail(status)`
  for one whose class is not 5.
- `decode_status(record)` raises `DsnError` naming what is wrong with the record: unknown
  version, missing fields, a bad code, a bad escape, a raw control character.
- `is_valid_dsn(text)` never raises.
- `split_dsn(text, default)` raises `DsnError` only when DEFAULT is not a valid code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

RECORD_TAG: Final = "status"
RECORD_VERSION: Final = 1

# One to three digits without a leading zero, so 0..999 ("0" itself is allowed).
_SUBCODE = r"(?:0|[1-9][0-9]{0,2})"
_DSN_SHAPE: Final = re.compile(rf"[245]\.{_SUBCODE}\.{_SUBCODE}")
_LEADING_DSN: Final = re.compile(rf"([245]\.{_SUBCODE}\.{_SUBCODE})(?=\s|$)")

# What the record writes as an escape instead of the character itself: the escape
# character, line breaks and every other control character, and lone surrogates (which
# appear when undecodable bytes were read with surrogateescape and cannot be UTF-8 encoded).
_NEEDS_ESCAPE: Final = re.compile(r"[\\\x00-\x1f\x7f\ud800-\udfff]")
# A record itself never holds them raw: a raw line break would be a forged second record.
_RAW_FORBIDDEN: Final = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_ESCAPE: Final = re.compile(r"\\(?:(\\)|x([0-9a-f]{2})|u([0-9a-f]{4})|(.?))", re.DOTALL)


class DsnError(ValueError):
    """A malformed status code or status record; the message says what is wrong."""


def is_valid_dsn(text: str) -> bool:
    """True when TEXT is exactly an RFC 3463 status code such as `4.4.1`."""
    return _DSN_SHAPE.fullmatch(text) is not None


@dataclass(frozen=True)
class Status:
    """One delivery outcome: an enhanced status code and the reason text."""

    dsn: str
    text: str

    def __post_init__(self) -> None:
        if not is_valid_dsn(self.dsn):
            raise DsnError(
                f"bad enhanced status code {self.dsn!r}: expected class.subject.detail "
                "with class 2, 4 or 5 and subject and detail 0..999 without leading zeros"
            )

    @property
    def is_success(self) -> bool:
        return self.dsn[0] == "2"

    @property
    def is_temporary(self) -> bool:
        return self.dsn[0] == "4"

    @property
    def is_permanent(self) -> bool:
        return self.dsn[0] == "5"

    def __str__(self) -> str:
        return f"{self.dsn} {self.text}"


def split_dsn(text: str, default: str) -> Status:
    """TEXT as a Status, the way Postfix's dsn_split reads a reason such as the next hop of
    `error:5.1.1 User unknown`: a leading enhanced status code followed by white space (or
    nothing) is the code and the rest the text; otherwise DEFAULT is the code and TEXT, white
    space removed, the text."""
    stripped = text.strip()
    match = _LEADING_DSN.match(stripped)
    if match is not None:
        return Status(match.group(1), stripped[match.end() :].lstrip())
    return Status(default, stripped)


class DeliveryFailure(Exception):
    """A failed delivery attempt inside one process; `status` says why and how badly."""

    def __init__(self, status: Status) -> None:
        super().__init__(str(status))
        self.status = status


class TempFail(DeliveryFailure):
    """A failure that may go away: the recipient is deferred and tried again later."""

    def __init__(self, status: Status) -> None:
        if not status.is_temporary:
            raise DsnError(f"TempFail needs a 4.X.X status, not {status.dsn}")
        super().__init__(status)


class PermFail(DeliveryFailure):
    """A failure that will not go away: the recipient is bounced."""

    def __init__(self, status: Status) -> None:
        if not status.is_permanent:
            raise DsnError(f"PermFail needs a 5.X.X status, not {status.dsn}")
        super().__init__(status)


def encode_status(status: Status) -> str:
    """The one-line record `status 1 DSN TEXT` (no line end) for a socket or a status log."""
    return f"{RECORD_TAG} {RECORD_VERSION} {status.dsn} {_escape(status.text)}"


def decode_status(record: str) -> Status:
    """The Status in a record written by `encode_status`; a trailing line end is allowed."""
    line = record.removesuffix("\n")
    raw = _RAW_FORBIDDEN.search(line)
    if raw is not None:
        raise DsnError(f"status record holds a raw control character {raw.group()!r}")
    fields = line.split(" ", 3)
    if len(fields) < 3 or fields[0] != RECORD_TAG:
        raise DsnError(f"not a status record: {_preview(line)}")
    if fields[1] != str(RECORD_VERSION):
        raise DsnError(
            f"status record version {_preview(fields[1])} is not supported "
            f"(this program reads version {RECORD_VERSION})"
        )
    text = _unescape(fields[3]) if len(fields) == 4 else ""
    return Status(fields[2], text)


def _escape(text: str) -> str:
    return _NEEDS_ESCAPE.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unescape(text: str) -> str:
    return _ESCAPE.sub(_unescape_one, text)


def _unescape_one(match: re.Match[str]) -> str:
    backslash, byte, wide, bad = match.groups()
    if backslash:
        return "\\"
    if byte:
        return chr(int(byte, 16))
    if wide:
        return chr(int(wide, 16))
    raise DsnError(f"bad escape {_preview(chr(92) + bad)} in status record text")


def _preview(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))
