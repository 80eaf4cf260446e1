"""The per-message delivery-status logs in bounce/, defer/ and trace/ (Postfix's bounce_log).

When a delivery attempt ends for a recipient with a result the sender may hear
of, one record goes to the message's log: `defer/QUEUEID` for a temporary
failure (its reason is what `mailq` shows), `bounce/QUEUEID` for a permanent one
(read back to build the non-delivery notice), `trace/QUEUEID` for the reports
that were asked for (`sendmail -v`, `-bv`, DSN NOTIFY=SUCCESS).  `logs_for`
decides which logs, and which DSN action, a result goes to.  A log is named by
the message's queue ID and removed with the message.

Who writes: the delivery agent that reached the result, BEFORE it marks the
recipient done (so that no crash can leave a bounced recipient done without its
record: at worst a record is repeated), and qmgr for the results it decides itself
(an unreachable agent, an address it cannot resolve, an expired message).

A record is one line of JSON: address, original address, DSN status, the
status word (`deferred`, `bounced`, `sent`), the text, the relay, the time and,
in trace/, the DSN action the report gives (RFC 3464's delivered, relayed,
expanded, failed, delayed, and Postfix's deliverable/undeliverable for `-bv`).
Lines are appended with O_APPEND in one write each, so a reader sees whole
records; a torn last line (a crash mid-append) is skipped when read.

OWNS the format of these files and the rule of what goes where; who reads them
(showq, the bounce notice builder) uses `read`.  A record appended by root (the
local agent's serving process) is given to the owner of its directory, so that
qmgr can read and remove it.

Failure modes: `append` raises OSError from the file system; `read` returns []
for a log that does not exist and skips lines it cannot parse.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sdmail.core.dsn import Status
from sdmail.core.records import Notify, QueueName, TraceFlag

LOG_QUEUES = (QueueName.BOUNCE, QueueName.DEFER, QueueName.TRACE)
# Transports whose deliveries hand the message on rather than deliver it (DSN "relayed").
RELAYING_TRANSPORTS = frozenset({"smtp", "relay"})


@dataclass(frozen=True)
class StatusRecord:
    address: str
    status: str  # deferred | bounced | sent
    dsn: str
    text: str
    orig_address: str | None = None
    relay: str = "none"
    when: float = 0.0
    action: str = ""  # the DSN Action: of a trace record (delivered, relayed, deliverable...)


def logs_for(
    status: Status,
    *,
    notify: Notify | int,
    trace_flags: int,
    transport: str,
    expired: bool = False,
) -> list[tuple[QueueName, str]]:
    """The logs a recipient's result goes to, each with the DSN action a trace record
    names ("" outside trace/), as Postfix's bounce/defer/trace services decide.
    EXPIRED: a deferral that turns into a bounce (it keeps its 4.x.x status)."""
    if trace_flags & TraceFlag.VERIFY:  # sendmail -bv: reported, never acted on
        return [(QueueName.TRACE, "deliverable" if status.is_success else "undeliverable")]
    recording = bool(trace_flags & TraceFlag.RECORD)  # sendmail -v
    if status.is_temporary and not expired:
        return [(QueueName.DEFER, "")] + ([(QueueName.TRACE, "delayed")] if recording else [])
    if not status.is_success:
        return [(QueueName.BOUNCE, "")] + ([(QueueName.TRACE, "failed")] if recording else [])
    if recording or Notify.SUCCESS in Notify(notify):
        return [(QueueName.TRACE, "relayed" if transport in RELAYING_TRANSPORTS else "delivered")]
    return []


def log_path(queue_directory: Path | str, log: QueueName, queue_id: str) -> Path:
    """The log's path; QUEUE_ID must already be valid (core/spool.valid_queue_id)."""
    if log not in LOG_QUEUES:
        raise ValueError(f"not a status log queue: {log}")
    return Path(queue_directory) / log.value / queue_id


def append(
    queue_directory: Path | str, log: QueueName, queue_id: str, record: StatusRecord
) -> None:
    """Add RECORD to the message's LOG (creating it, mode 0600)."""
    if not record.when:
        record = StatusRecord(**{**asdict(record), "when": time.time()})
    line = json.dumps(asdict(record), ensure_ascii=False, separators=(",", ":")) + "\n"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    path = log_path(queue_directory, log, queue_id)
    fd = os.open(path, flags, 0o600)
    try:
        if os.geteuid() == 0:
            owner = os.stat(path.parent)
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.write(fd, line.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)


def read(queue_directory: Path | str, log: QueueName, queue_id: str) -> list[StatusRecord]:
    """Every whole record of the message's LOG, oldest first; [] when there is none."""
    try:
        fd = os.open(log_path(queue_directory, log, queue_id), os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with os.fdopen(fd, "rb") as handle:
        data = handle.read()
    records = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        try:
            fields = json.loads(line)
            records.append(StatusRecord(**fields))
        except (ValueError, TypeError):
            continue
    return records


def remove(
    queue_directory: Path | str, queue_id: str, logs: tuple[QueueName, ...] = LOG_QUEUES
) -> None:
    """Remove the message's logs (those that exist)."""
    for log in logs:
        with contextlib.suppress(FileNotFoundError):
            log_path(queue_directory, log, queue_id).unlink()
