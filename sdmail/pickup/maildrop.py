"""A maildrop file, read into what cleanup needs: a Submission and the message content.

postdrop writes each locally submitted message into `maildrop/` as an ordinary
queue file (core/qfile, through core/spool): the envelope sender (already the
submitting user's login name, or the `-f` address postdrop allowed), the
recipients with their DSN fields, the full name (`-F`), DSN RET and ENVID, the
arrival time, and two named attributes:

    uid                 the submitter's user ID as the kernel reported it to postdrop
                        (SO_PEERCRED), in decimal; the `from userid N` of Received:
    extract_recipients  `yes` when sendmail ran with -t (recipients from the
                        headers); absent or `no` otherwise

A file without `uid` (one put back by an administrator) is taken as submitted by
the file's owner, as Postfix's pickup does.

Failure modes: `read_maildrop` raises `MalformedMaildropFile` for a file that is
not a complete queue file (its message names the offset) or whose attributes
have values of the wrong shape; OSError when reading fails. Both say nothing
about whether the file may be removed: that is the caller's decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from sdmail.cleanup.api import Origin, Submission
from sdmail.core import qfile
from sdmail.core.records import Envelope

ATTR_UID: Final = "uid"
ATTR_EXTRACT_RECIPIENTS: Final = "extract_recipients"
_TRUE: Final = frozenset({"yes", "true", "1"})
_FALSE: Final = frozenset({"no", "false", "0", ""})
_MAX_UID: Final = 2**32 - 2  # (uid_t)-1 means "no user"

# Postfix's pickup warns about arrival times this far off (and uses its own clock
# for a time in the future, so that delays are never negative).
FUTURE_TOLERANCE: Final = 2 * 3600
PAST_WARNING: Final = 24 * 3600


class MalformedMaildropFile(Exception):
    """The file cannot be a maildrop message: cut short, garbled, or bad attributes."""


@dataclass(frozen=True)
class MaildropMessage:
    """One maildrop file, ready for cleanup.

    `sender` is the envelope sender as postdrop wrote it (what pickup logs);
    `warnings` are problems worth a log line that did not stop the message.
    """

    submission: Submission
    content: bytes
    uid: int
    sender: str
    warnings: tuple[str, ...] = ()
    requeued: bool = False


def read_maildrop(fd: int, owner_uid: int, *, now: float | None = None) -> MaildropMessage:
    """Decode the maildrop file open on FD (owned by OWNER_UID) into a MaildropMessage."""
    try:
        parsed = qfile.read_envelope(fd)
        content = b"".join(qfile.iter_content(fd, parsed))
    except qfile.CorruptQueueFile as exc:
        raise MalformedMaildropFile(f"corrupt queue file: {exc}") from None
    envelope = parsed.envelope
    uid = _uid(envelope, owner_uid)
    # A queue file put back by `postsuper -r` has no uid: it was queued once already, so
    # its finished recipients stay finished and it gets no second Received: header.
    requeued = envelope.attribute(ATTR_UID) is None
    warnings: list[str] = []
    arrival = _arrival(envelope, time.time() if now is None else now, warnings)
    submission = Submission(
        sender=envelope.sender,
        recipients=tuple(r for r in envelope.recipients if not (requeued and r.done)),
        origin=Origin.FORWARD if requeued else Origin.LOCAL,
        client=envelope.client,
        uid=uid,
        full_name=envelope.sender_fullname,
        extract_recipients=_extract_recipients(envelope),
        ret=envelope.ret,
        envid=envelope.envid,
        smtputf8=envelope.smtputf8,
        body_type=envelope.body_type,
        arrival=arrival,
        trace_flags=envelope.trace_flags,
    )
    return MaildropMessage(
        submission, content, uid, envelope.sender, tuple(warnings), requeued=requeued
    )


def _uid(envelope: Envelope, owner_uid: int) -> int:
    text = envelope.attribute(ATTR_UID)
    if text is None:
        return owner_uid
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_UID:
        raise MalformedMaildropFile(f"bad {ATTR_UID} attribute: {text!r}")
    return int(text)


def _extract_recipients(envelope: Envelope) -> bool:
    text = envelope.attribute(ATTR_EXTRACT_RECIPIENTS)
    if text is None:
        return False
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise MalformedMaildropFile(f"bad {ATTR_EXTRACT_RECIPIENTS} attribute: {text!r}")


def _arrival(envelope: Envelope, now: float, warnings: list[str]) -> float | None:
    if envelope.arrival_sec == 0:
        return None  # no time recorded: cleanup uses its own
    arrival = envelope.arrival_sec + envelope.arrival_usec / 1_000_000
    if arrival > now + FUTURE_TOLERANCE:
        warnings.append(f"message dated {int(arrival - now)} seconds into the future")
        return now
    if arrival < now - PAST_WARNING:
        warnings.append(f"message has been in maildrop for {int(now - arrival)} seconds")
    return arrival
