"""A message in qmgr's memory, and what becomes of its recipients.

An `ActiveMessage` is what qmgr keeps of a queue file while it is in active/: the
envelope, the recipients still to deliver (each resolved to a transport and next
hop: a `Todo`), how many recipients still wait for a result, and the deferred
ones with their last reason (for the retry, or for the bounce when the message
expires).  The file itself is closed and unlocked while qmgr holds this: the
delivery agents open it, and take their shared lock, themselves.

`StatusLogs` keeps what qmgr learns about a recipient: deferrals in memory (for
the retry, or the bounce when the message expires) and, for outcomes qmgr decides
itself (an agent that cannot be reached, a destination that rests, an address
that cannot be resolved, an expired message), the records in `defer/`,
`bounce/` and `trace/` (core/bounce_log.logs_for says which) and the delivery
line an agent would have logged.  For an agent's results the agent wrote the
records itself, before its done marks.

Failure modes: `StatusLogs` never raises: a status log that cannot be written is
a logged warning (the recipient keeps its outcome in memory).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sdmail.core import bounce_log
from sdmail.core.deliver_request import RequestRecipient, status_word, verify_word
from sdmail.core.dsn import Status
from sdmail.core.log import format_delivery, msg_info, msg_warning
from sdmail.core.records import Envelope, QueueName, Recipient, TraceFlag


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
    unread_offset: int | None = None  # where the file's next batch of recipients begins
    flushed: bool = False  # taken by a flush: defer_transports do not hold it back
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
    """Writes recipients' outcomes to the message's status logs and the mail log.

    BY_AGENT says the result came from a delivery agent, which wrote the status log
    records itself before marking the recipient done (sdmail/agent.py): qmgr then only
    keeps the deferral in memory.  For its own decisions qmgr writes the records.
    """

    def __init__(
        self,
        queue_directory: str,
        resolution_limit: int,
        on_deferred: Callable[[str, str], None] | None = None,
    ) -> None:
        self.queue_directory = queue_directory
        self.resolution_limit = resolution_limit
        self.on_deferred = on_deferred  # (queue ID, address): the fast-flush log's hook

    def deferred(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str = "none",
        log_line: bool = True,
        by_agent: bool = False,
    ) -> None:
        """RECIPIENT is deferred with STATUS: defer log, memory, and (LOG_LINE) the mail log."""
        if recipient.offset is not None and not message.verifying:
            message.deferred[recipient.offset] = (recipient, status)
        self._result(message, recipient, status, relay, log_line=log_line, by_agent=by_agent)
        if self.on_deferred is not None and not message.verifying:
            self.on_deferred(message.queue_id, recipient.address)

    def bounced(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str = "none",
        log_line: bool = True,
        by_agent: bool = False,
    ) -> None:
        """RECIPIENT failed for good with STATUS (a 4.x.x one when the message expired): a
        record for the non-delivery notice."""
        self._result(
            message, recipient, status, relay, log_line=log_line, by_agent=by_agent, bounce=True
        )

    def sent(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        *,
        relay: str = "none",
        log_line: bool = True,
        by_agent: bool = False,
    ) -> None:
        """RECIPIENT was delivered (or, LOG_LINE, needs no delivery by qmgr's own decision):
        a trace record when the sender asked to hear of it."""
        self._result(message, recipient, status, relay, log_line=log_line, by_agent=by_agent)

    def _result(
        self,
        message: ActiveMessage,
        recipient: Recipient,
        status: Status,
        relay: str,
        *,
        log_line: bool,
        by_agent: bool,
        bounce: bool = False,
    ) -> None:
        if not by_agent:
            for log, action in bounce_log.logs_for(
                status, notify=recipient.notify, trace_flags=message.envelope.trace_flags,
                transport="", expired=bounce,
            ):  # fmt: skip
                self._append(message, log, recipient, status, relay=relay, action=action)
        if log_line:
            word = "bounced" if bounce else status_word(status)
            if message.verifying:
                word = verify_word(status)
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

    def _append(
        self,
        message: ActiveMessage,
        log: QueueName,
        recipient: Recipient,
        status: Status,
        *,
        relay: str,
        action: str = "",
    ) -> None:
        record = bounce_log.StatusRecord(
            address=recipient.address,
            status=status_word(status),
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
