"""A message in qmgr's memory, and what becomes of its recipients.

An `ActiveMessage` is what qmgr keeps of a queue file while it is in active/: the
envelope, the recipients still to deliver (each resolved to a transport and next
hop: a `Todo`), how many recipients still wait for a result, and the deferred
ones with their last reason (for the retry, or for the bounce when the message
expires).  The file itself is closed and unlocked while qmgr holds this: the
delivery agents open it, and take their shared lock, themselves.

`StatusLogs` writes what qmgr learns about a recipient: a record in
`defer/QUEUEID` (what mailq shows) or `bounce/QUEUEID` (what the notice reports),
through core/bounce_log, and, for outcomes qmgr decides itself (an agent that
cannot be reached, a destination that rests, an address that cannot be
resolved), the delivery line an agent would have logged.  `trace/QUEUEID` gets
what the sender's report needs (Postfix's trace service): every result of a
`sendmail -v` message's attempt, every answer for a `sendmail -bv` message (which
then writes nothing else: nothing is deferred or bounced, only verified), and
each delivery to a recipient that asked for DSN NOTIFY=SUCCESS.

Failure modes: `StatusLogs` never raises: a status log that cannot be written is
a logged warning (the recipient keeps its outcome in memory).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from sdmail.core import bounce_log
from sdmail.core.deliver_request import BOUNCED, DEFERRED, SENT, RequestRecipient
from sdmail.core.dsn import Status
from sdmail.core.log import format_delivery, msg_info, msg_warning
from sdmail.core.records import Envelope, Notify, QueueName, Recipient, TraceFlag

# Transports whose deliveries hand the message on rather than deliver it (DSN "relayed").
RELAYING_TRANSPORTS = frozenset({"smtp", "relay"})


@dataclass(frozen=True)
class Todo:
    """A recipient to deliver: the queue file's record, and where it resolved to."""

    recipient: Recipient
    address: str  # the resolved recipient (trivial-rewrite may have completed it)
    transport: str
    nexthop: str

    def settled(self) -> Recipient:
        """The recipient as logged and reported: the queue file's, with the resolved address."""
        return dataclasses.replace(self.recipient, address=self.address)

    def request_recipient(self) -> RequestRecipient:
        r = self.recipient
        assert r.offset is not None  # recipients read from a file always have one
        return RequestRecipient(self.address, r.offset, r.orig_address, r.notify.value, r.orcpt)


@dataclass
class ActiveMessage:
    """One message of the active queue, as qmgr schedules it."""

    queue_id: str
    envelope: Envelope
    size: int
    active_at: float
    todo: list[Todo] = field(default_factory=list)
    outstanding: int = 0  # recipients without a result yet
    deferred: dict[int, tuple[Recipient, Status]] = field(default_factory=dict)

    @property
    def arrival(self) -> float:
        return self.envelope.arrival_sec + self.envelope.arrival_usec / 1_000_000

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def verifying(self) -> bool:
        """`sendmail -bv`: results are reported, never acted on."""
        return bool(self.envelope.trace_flags & TraceFlag.VERIFY)

    @property
    def recording(self) -> bool:
        """`sendmail -v`: this attempt's results are reported as well as acted on."""
        return bool(self.envelope.trace_flags & TraceFlag.RECORD)


class StatusLogs:
    """Writes recipients' outcomes to the message's status logs and the mail log."""

    def __init__(self, queue_directory: str, resolution_limit: int) -> None:
        self.queue_directory = queue_directory
        self.resolution_limit = resolution_limit

    def deferred(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str = "none",
        log_line: bool = True,
    ) -> None:
        """RECIPIENT is deferred with STATUS: defer log, memory, and (LOG_LINE) the mail log."""
        if message.verifying:
            self._trace(message, recipient, status, relay=relay, action="undeliverable")
            if log_line:
                self.log_line(message, recipient, "undeliverable", status, relay)
            return
        if recipient.offset is not None:
            message.deferred[recipient.offset] = (recipient, status)
        self._append(message, QueueName.DEFER, DEFERRED, recipient, status, relay=relay)
        if message.recording:
            self._trace(message, recipient, status, relay=relay, action="delayed")
        if log_line:
            self.log_line(message, recipient, DEFERRED, status, relay)

    def bounced(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str = "none",
        log_line: bool = True,
    ) -> None:
        """RECIPIENT failed for good with STATUS: a record for the non-delivery notice."""
        if message.verifying:
            self._trace(message, recipient, status, relay=relay, action="undeliverable")
            if log_line:
                self.log_line(message, recipient, "undeliverable", status, relay)
            return
        self._append(message, QueueName.BOUNCE, BOUNCED, recipient, status, relay=relay)
        if message.recording:
            self._trace(message, recipient, status, relay=relay, action="failed")
        if log_line:
            self.log_line(message, recipient, BOUNCED, status, relay)

    def sent(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str = "none",
        transport: str | None = None,
        log_line: bool = True,
    ) -> None:
        """RECIPIENT was delivered (or, LOG_LINE, needs no delivery by qmgr's own decision):
        a trace record when the sender asked to hear of it."""
        if message.verifying:
            self._trace(message, recipient, status, relay=relay, action="deliverable")
        elif message.recording or Notify.SUCCESS in recipient.notify:
            action = "relayed" if transport in RELAYING_TRANSPORTS else "delivered"
            self._trace(message, recipient, status, relay=relay, action=action)
        if log_line:
            word = "deliverable" if message.verifying else SENT
            self.log_line(message, recipient, word, status, relay)

    def log_line(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        outcome: str,
        status: Status,
        relay: str,
    ) -> None:
        now = time.time()
        arrival = message.arrival
        in_queue = max(0.0, message.active_at - arrival)
        msg_info(
            message.queue_id,
            format_delivery(
                message.queue_id,
                to=recipient.address,
                orig_to=recipient.orig_address,
                relay=relay,
                delay_total=now - arrival,
                delays=(in_queue, max(0.0, now - message.active_at), 0.0, 0.0),
                dsn=status.dsn,
                status=outcome,
                text=status.text,
                resolution_limit=self.resolution_limit,
            ),
        )

    def _trace(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str,
        action: str,
    ) -> None:
        outcome = DEFERRED if status.is_temporary else BOUNCED if status.is_permanent else SENT
        self._append(
            message, QueueName.TRACE, outcome, recipient, status, relay=relay, action=action
        )

    def _append(
        self,
        message: ActiveMessage,
        log: QueueName,
        outcome: str,
        recipient: Recipient,
        status: Status,
        *,
        relay: str,
        action: str = "",
    ) -> None:
        record = bounce_log.StatusRecord(
            address=recipient.address,
            status=outcome,
            dsn=status.dsn,
            text=status.text,
            orig_address=recipient.orig_address,
            relay=relay,
            action=action,
        )
        try:
            bounce_log.append(self.queue_directory, log, message.queue_id, record)
        except OSError as exc:
            msg_warning(message.queue_id, f"cannot write the {log} log: {exc.strerror or exc}")
