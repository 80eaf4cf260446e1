"""The queue's nouns: queue names, the message envelope and its recipients.

This module owns the in-memory shape of what a queue file holds about a message
(everything but its content) and the names of the queue directories. It holds
plain frozen dataclasses and enums only: no I/O, no parsing, no policy. The
queue-file codec (`sdmail.core.qfile`) turns an `Envelope` into bytes and back;
the spool (`sdmail.core.spool`) places those bytes in the queue directories
named here.

Strings are Python `str`; bytes that are not valid UTF-8 (an 8-bit address from
a client that did not say SMTPUTF8) are carried as surrogate escapes
(`bytes.decode("utf-8", "surrogateescape")`), so every octet survives the queue.

Nothing here raises: the dataclasses do not validate. The codec refuses what it
cannot store (`qfile.InvalidEnvelope`) and what it cannot read
(`qfile.CorruptQueueFile`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class QueueName(enum.StrEnum):
    """Postfix's queue directory names, below `queue_directory`."""

    MAILDROP = "maildrop"
    INCOMING = "incoming"
    ACTIVE = "active"
    DEFERRED = "deferred"
    HOLD = "hold"
    CORRUPT = "corrupt"
    BOUNCE = "bounce"
    DEFER = "defer"
    TRACE = "trace"


# Directories holding queue files (one per message). bounce/, defer/ and trace/
# hold per-message delivery-status logs named by the same queue IDs, so a queue
# ID found there is not a message.
MESSAGE_QUEUES: tuple[QueueName, ...] = (
    QueueName.MAILDROP,
    QueueName.INCOMING,
    QueueName.ACTIVE,
    QueueName.DEFERRED,
    QueueName.HOLD,
    QueueName.CORRUPT,
)
LOG_QUEUES: tuple[QueueName, ...] = (QueueName.BOUNCE, QueueName.DEFER, QueueName.TRACE)
ALL_QUEUES: tuple[QueueName, ...] = MESSAGE_QUEUES + LOG_QUEUES


class Notify(enum.Flag):
    """DSN NOTIFY= flags (RFC 3461); the empty flag means NOTIFY was not given."""

    NEVER = 1
    SUCCESS = 2
    FAILURE = 4
    DELAY = 8


class TraceFlag(enum.IntFlag):
    """What a message's delivery attempts must report besides their results (Postfix's
    DEL_REQ_FLAG_RECORD and DEL_REQ_FLAG_USR_VRFY).

    RECORD (`sendmail -v`): every result of the first delivery attempt goes into the
    trace log, and the sender gets it as a delivery status report.  VERIFY
    (`sendmail -bv`): nothing is delivered; agents say what they would do, and
    the sender gets that as the report.
    """

    RECORD = 1
    VERIFY = 2


TRACE_FLAGS_MAX = int(TraceFlag.RECORD | TraceFlag.VERIFY)


class DsnRet(enum.StrEnum):
    """DSN RET= (RFC 3461): what a notice returns of the message."""

    FULL = "FULL"
    HDRS = "HDRS"


class BodyType(enum.StrEnum):
    """The BODY= the client declared (RFC 6152)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"


class RewriteContext(enum.StrEnum):
    """Postfix's rewrite_context: which address rewriting applies to the message."""

    LOCAL = "local"
    REMOTE = "remote"


@dataclass(frozen=True)
class Recipient:
    """One envelope recipient.

    `orig_address` is the address before any rewriting (Postfix's `O` record);
    `orcpt` is the DSN ORCPT= parameter as received (`rfc822;user@example.org`).
    `done` is set once a delivery agent finished with the recipient (delivered,
    bounced or otherwise final). `offset` is where the recipient's record sits in
    its queue file (set by the reader, the argument of `qfile.mark_done`); it
    takes no part in comparisons.
    """

    address: str
    orig_address: str | None = None
    notify: Notify = field(default_factory=lambda: Notify(0))
    orcpt: str | None = None
    done: bool = False
    offset: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ClientInfo:
    """Where a message came from, as Postfix logs it; None means not known.

    The field names are Postfix's named-attribute names in the queue file.
    """

    log_client_name: str | None = None
    log_client_address: str | None = None
    log_client_port: int | None = None
    log_helo_name: str | None = None
    log_protocol_name: str | None = None
    log_message_origin: str | None = None
    sasl_method: str | None = None
    sasl_username: str | None = None
    rewrite_context: RewriteContext | None = None


@dataclass(frozen=True)
class Envelope:
    """Everything a queue file says about a message besides its content.

    `sender` is the envelope sender; the empty string is the null sender (`<>`).
    `arrival_sec`/`arrival_usec` is when the message arrived (Postfix's `T`).
    `delay_warning_time` is when a delay notice is due, in seconds since the
    epoch; 0 means no notice is scheduled and -1 that it was sent (Postfix's `W`,
    updated in place by `qfile.set_delay_warning`). `trace_flags` holds `TraceFlag`
    values (cleared in place by `qfile.clear_trace_flags`). `attributes` is a free-form
    list of `(name, value)` pairs for later components; names are unique.
    """

    sender: str
    recipients: tuple[Recipient, ...] = ()
    arrival_sec: int = 0
    arrival_usec: int = 0
    delay_warning_time: int = 0
    sender_fullname: str | None = None
    ret: DsnRet | None = None
    envid: str | None = None
    smtputf8: bool = False
    body_type: BodyType | None = None
    client: ClientInfo = field(default_factory=ClientInfo)
    attributes: tuple[tuple[str, str], ...] = ()
    trace_flags: int = 0

    def attribute(self, name: str) -> str | None:
        """The value of the free-form attribute `name`, or None."""
        for key, value in self.attributes:
            if key == name:
                return value
        return None
