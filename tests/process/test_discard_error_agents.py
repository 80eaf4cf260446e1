"""The discard, error and retry agents as processes: the test plays qmgr.

Each test starts the real agent with its socket passed the systemd way, puts a queue file
into active/, sends a DeliveryRequest over the socket and checks what qmgr and an admin
would see: the per-recipient result, the done marks in the queue file, the log line.
"""

from __future__ import annotations

import re
import time

from sdmail.core import bounce_log, ipc, qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool


def queue_message(mailsys, transport: str, nexthop: str, *recipients: str) -> DeliveryRequest:
    envelope = Envelope(
        sender="ann@example.org",
        recipients=tuple(Recipient(r, orig_address=r) for r in recipients),
        arrival_sec=int(time.time()),
    )
    with Spool(mailsys.queue_dir) as spool:
        created = spool.create(QueueName.ACTIVE, envelope, b"Subject: x\n\nbody\n")
        with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
            stored = qfile.read_envelope(handle.fd).envelope
    return DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport=transport,
        nexthop=nexthop,
        sender=envelope.sender,
        recipients=tuple(RequestRecipient(r.address, r.offset or 0) for r in stored.recipients),
        arrival=float(envelope.arrival_sec),
        queue_active_at=time.time(),
    )


def ask(mailsys, request: DeliveryRequest) -> DeliveryResult:
    path = mailsys.socket_path(request.transport)
    mailsys.wait_for(path.exists, f"socket {path}")
    frame = ipc.request(str(path), request.to_header(), timeout=30)
    return DeliveryResult.from_header(frame.header)


def done_marks(mailsys, queue_id: str) -> list[bool]:
    data = (mailsys.queue_dir / "active" / queue_id).read_bytes()
    return [r.done for r in qfile.decode(data).envelope.recipients]


def logged(mailsys, component: str, pattern: str) -> bool:
    return mailsys.wait_for(
        lambda: any(re.search(pattern, line) for line in mailsys.log(component).splitlines()),
        f"log line {pattern!r}",
        timeout=10,
    )


def test_discard_marks_every_recipient_sent_with_relay_none(mailsys):
    mailsys.start("discard", sockets=("discard",))
    request = queue_message(mailsys, "discard", "dropped by policy", "a@spam.test", "b@spam.test")
    result = ask(mailsys, request)
    assert [(r.status, r.dsn, r.text, r.relay) for r in result.recipients] == [
        ("sent", "2.0.0", "dropped by policy", "none")
    ] * 2
    assert done_marks(mailsys, request.queue_id) == [True, True]
    assert logged(
        mailsys,
        "discard",
        rf"sdmail/discard\[\d+\]: {request.queue_id}: to=<a@spam\.test>, relay=none, .*"
        r"dsn=2\.0\.0, status=sent \(dropped by policy\)",
    )


def test_error_bounces_with_the_code_the_next_hop_gives(mailsys):
    mailsys.start("error", sockets=("error",), args=("-n", "error"))
    request = queue_message(mailsys, "error", "5.1.1 mailbox moved", "old@x.test")
    result = ask(mailsys, request)
    assert [(r.status, r.dsn, r.text) for r in result.recipients] == [
        ("bounced", "5.1.1", "mailbox moved")
    ]
    assert done_marks(mailsys, request.queue_id) == [True]
    assert logged(
        mailsys,
        "error",
        rf"{request.queue_id}: to=<old@x\.test>, relay=none, .*dsn=5\.1\.1, "
        r"status=bounced \(mailbox moved\)",
    )


def test_retry_defers_and_leaves_the_recipient_to_do(mailsys):
    mailsys.start("error", sockets=("retry",), args=("-n", "retry"))
    request = queue_message(mailsys, "retry", "try again tomorrow", "busy@x.test")
    result = ask(mailsys, request)
    assert [(r.status, r.dsn, r.text) for r in result.recipients] == [
        ("deferred", "4.0.0", "try again tomorrow")
    ]
    assert done_marks(mailsys, request.queue_id) == [False]


def test_the_error_program_under_another_name_refuses_to_start(mailsys):
    process = mailsys.start("error", sockets=("smtp",), args=("-n", "smtp"))
    assert process.wait(30) == 64
    assert "bad error service name: smtp" in mailsys.log("error")


def test_the_agent_writes_the_status_logs_before_it_answers(mailsys) -> None:
    """The bounce record is the agent's, written before its done mark: a qmgr killed
    right after the agent answered (here: no qmgr at all) cannot lose the notice."""
    mailsys.start("error", sockets=("error",), args=("-n", "error"))
    request = queue_message(mailsys, "error", "5.1.2 gone away", "a@example.test")
    result = ask(mailsys, request)
    assert [(r.status, r.dsn) for r in result.recipients] == [("bounced", "5.1.2")]
    assert done_marks(mailsys, request.queue_id) == [True]
    [record] = bounce_log.read(mailsys.queue_dir, QueueName.BOUNCE, request.queue_id)
    assert (record.address, record.status, record.dsn, record.text) == (
        "a@example.test",
        "bounced",
        "5.1.2",
        "gone away",
    )
    assert bounce_log.read(mailsys.queue_dir, QueueName.DEFER, request.queue_id) == []


def test_a_deferral_goes_to_the_defer_log_and_leaves_the_recipient_open(mailsys) -> None:
    mailsys.start("error", sockets=("retry",), args=("-n", "retry"))
    request = queue_message(mailsys, "retry", "4.4.1 try later", "b@example.test")
    result = ask(mailsys, request)
    assert [(r.status, r.dsn) for r in result.recipients] == [("deferred", "4.4.1")]
    assert done_marks(mailsys, request.queue_id) == [False]
    [record] = bounce_log.read(mailsys.queue_dir, QueueName.DEFER, request.queue_id)
    assert (record.status, record.dsn, record.text) == ("deferred", "4.4.1", "try later")
