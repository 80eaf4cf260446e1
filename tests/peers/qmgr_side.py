"""Playing qmgr for a delivery agent under test: queue a message in active/, send the
DeliveryRequest to the agent's socket, read the DeliveryResult, the done marks and the
agent's log lines. Used by the smtp and lmtp process tests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from sdmail.core import ipc, qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.records import Envelope, Notify, QueueName, Recipient
from sdmail.core.spool import Spool

CONTENT = b"Subject: hello\nFrom: Ann <ann@example.org>\n\nFrom the start\nbody line\n"
SENDER = "ann@example.org"


def queue_message(
    mailsys,
    recipients: Iterable[str | Recipient],
    *,
    transport: str = "smtp",
    nexthop: str,
    content: bytes = CONTENT,
    sender: str = SENDER,
    envelope_changes: dict | None = None,
    arrival: float | None = None,
) -> DeliveryRequest:
    wanted = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
    arrived = time.time() if arrival is None else arrival
    envelope = Envelope(
        sender=sender,
        recipients=tuple(wanted),
        arrival_sec=int(arrived),
        **(envelope_changes or {}),
    )
    with Spool(mailsys.queue_dir) as spool:
        created = spool.create(QueueName.ACTIVE, envelope, content)
        with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
            stored = qfile.read_envelope(handle.fd).envelope
    return DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport=transport,
        nexthop=nexthop,
        sender=sender,
        recipients=tuple(
            RequestRecipient(
                r.address, r.offset or 0, r.orig_address, Notify(r.notify).value, r.orcpt
            )
            for r in stored.recipients
        ),
        arrival=float(int(arrived)),
        queue_active_at=time.time(),
    )


def ask(mailsys, request: DeliveryRequest, socket_name: str | None = None) -> DeliveryResult:
    path = str(mailsys.socket_path(socket_name or request.transport))
    frame = ipc.request(path, request.to_header(), timeout=120)
    return DeliveryResult.from_header(frame.header)


def done_marks(mailsys, queue_id: str) -> list[bool]:
    data = (mailsys.queue_dir / "active" / queue_id).read_bytes()
    return [r.done for r in qfile.decode(data).envelope.recipients]


def log_lines(mailsys, component: str, queue_id: str | None = None) -> list[str]:
    program = re.compile(rf"sdmail/{component}\[\d+\]: (.*)")
    lines = [m.group(1) for m in map(program.search, mailsys.log(component).splitlines()) if m]
    if queue_id is None:
        return lines
    return [line for line in lines if line.startswith(f"{queue_id}: ")]


def delivery_line(
    queue_id: str, to: str, *, relay: str, dsn: str, status: str, text: str
) -> re.Pattern[str]:
    """Postfix's delivery line, field for field (delays are any numbers)."""
    return re.compile(
        rf"{re.escape(queue_id)}: to=<{re.escape(to)}>, relay={re.escape(relay)}, "
        rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn={re.escape(dsn)}, "
        rf"status={status} \({re.escape(text)}\)"
    )


def wait_for_line(mailsys, component: str, pattern: re.Pattern[str], timeout: float = 30) -> str:
    def found() -> str | None:
        for line in log_lines(mailsys, component):
            if pattern.fullmatch(line):
                return line
        return None

    return str(mailsys.wait_for(found, f"a log line matching {pattern.pattern}", timeout))
