"""qmgr as a process: messages put into incoming/ are delivered, deferred, bounced or set aside.

The test plays the delivery agent (`FakeAgent`, on `$socket_directory/local`): it
speaks core/deliver_request over core/ipc, opens the queue file through core/spool
under a shared lock, writes each result's status log records (core/bounce_log) and
then marks each recipient it finished done with qfile.mark_done, counts every real
delivery, and answers sent, deferred or bounced as the test says.
Messages are put into incoming/ with core/spool, the way cleanup writes them.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from sdmail.core import bounce_log, ipc, qfile
from sdmail.core.deliver_request import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    DeliveryResult,
    RecipientStatus,
    RequestRecipient,
    status_word,
)
from sdmail.core.dsn import Status
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool, SpoolError, lock_shared
from sdmail.core.trigger import FLUSH_QUEUE, WAKEUP, trigger

HOST = "mail.example.test"

Answer = Callable[[str], tuple[str, str, str]]


def always_sent(address: str) -> tuple[str, str, str]:
    return SENT, "2.0.0", "delivered to mailbox"


class FakeAgent:
    """The local delivery agent's side of the protocol, in threads of the test process."""

    def __init__(
        self, mailsys, answer: Answer = always_sent, *, delay: float = 0.0, transport: str = "local"
    ) -> None:
        self.mailsys = mailsys
        self.answer = answer
        self.delay = delay
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.contents: dict[str, bytes] = {}
        self.senders: dict[str, str] = {}
        self.requests: list[DeliveryRequest] = []
        self._lock = threading.Lock()  # one delivery per queue file at a time, as a real
        self._spool = Spool(mailsys.queue_dir)  # agent's re-check under its lock would give
        path = mailsys.socket_path(transport)
        path.unlink(missing_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._listener.close()
        self._spool.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            try:
                frame = ipc.recv_frame(reader)
            except ipc.ProtocolError:
                return
            request = DeliveryRequest.from_header(frame.header)
            self.requests.append(request)
            result = self._deliver(request)
            if self.delay:
                time.sleep(self.delay)
            with contextlib.suppress(OSError):  # qmgr went away: the done marks count
                ipc.send_frame(conn, result.to_header())

    def _deliver(self, request: DeliveryRequest) -> DeliveryResult:
        try:
            return self._deliver_locked(request)
        except SpoolError as exc:  # moved on by a restarted qmgr, or its lock is held
            gone = Status("4.3.0", f"queue file unavailable: {exc}")
            return DeliveryResult(
                tuple(
                    RecipientStatus(r.offset, r.address, DEFERRED, gone.dsn, gone.text)
                    for r in request.recipients
                )
            )

    def _record(self, request: DeliveryRequest, rcpt: RequestRecipient, status: Status) -> None:
        for log, action in bounce_log.logs_for(
            status, notify=rcpt.notify, trace_flags=request.trace_flags, transport="local"
        ):
            record = bounce_log.StatusRecord(
                rcpt.address, status_word(status), status.dsn, status.text,
                orig_address=rcpt.orig_address, relay="local", action=action,
            )  # fmt: skip
            bounce_log.append(self._spool.path, log, request.queue_id, record)

    def _deliver_locked(self, request: DeliveryRequest) -> DeliveryResult:
        statuses = []
        with (
            self._lock,
            self._spool.open(request.queue_name, request.queue_id, writable=True) as handle,
        ):
            lock_shared(handle)
            if self.delay:
                time.sleep(self.delay)  # a delivery takes time: qmgr may die meanwhile
            parsed = qfile.read_envelope(handle.fd)
            done = {r.offset for r in parsed.envelope.recipients if r.done}
            for rcpt in request.recipients:
                status, dsn, text = self.answer(rcpt.address)
                if rcpt.offset not in done:
                    self._record(request, rcpt, Status(dsn, text))
                if status in (SENT, BOUNCED) and rcpt.offset not in done:
                    if status == SENT:
                        self.deliveries[(request.queue_id, rcpt.address)] += 1
                        self.contents[request.queue_id] = b"".join(
                            qfile.iter_content(handle.fd, parsed)
                        )
                        self.senders[request.queue_id] = request.sender
                    qfile.mark_done(handle, rcpt.offset)
                statuses.append(RecipientStatus(rcpt.offset, rcpt.address, status, dsn, text))
        return DeliveryResult(tuple(statuses))


@pytest.fixture
def agent_factory(mailsys):
    made: list[FakeAgent] = []

    def make(
        answer: Answer = always_sent, *, delay: float = 0.0, transport: str = "local"
    ) -> FakeAgent:
        agent = FakeAgent(mailsys, answer, delay=delay, transport=transport)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def put(
    mailsys, *recipients: str, sender: str = f"joe@{HOST}", arrival: float | None = None
) -> str:
    envelope = Envelope(
        sender,
        tuple(Recipient(r) for r in recipients),
        arrival_sec=int(time.time() if arrival is None else arrival),
    )
    content = f"From: {sender}\nSubject: test\nMessage-Id: <t{time.time_ns()}@x>\n\nhello\n"
    with Spool(mailsys.queue_dir) as spool:
        return spool.create(QueueName.INCOMING, envelope, content.encode()).queue_id


def start_qmgr(mailsys):
    return mailsys.start("qmgr", sockets=("qmgr",))


def kick(mailsys, requests: bytes = WAKEUP) -> None:
    trigger(str(mailsys.socket_path("qmgr")), requests)


def in_queue(mailsys, queue: str) -> list[str]:
    return sorted(os.listdir(mailsys.queue_dir / queue))


def queue_is_empty(mailsys) -> bool:
    return not mailsys.queue_files("incoming", "active", "deferred")


def test_a_message_is_delivered_and_removed(mailsys, agent_factory) -> None:
    agent = agent_factory()
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"ann@{HOST}", f"bob@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: queue_is_empty(mailsys), "the message to leave the queue")
    assert agent.deliveries == {(queue_id, f"ann@{HOST}"): 1, (queue_id, f"bob@{HOST}"): 1}
    # local takes one recipient per request
    assert sorted(len(r.recipients) for r in agent.requests) == [1, 1]
    assert {(r.transport, r.nexthop) for r in agent.requests} == {("local", HOST)}
    log = mailsys.log("qmgr")
    assert f"{queue_id}: from=<joe@{HOST}>, size=" in log
    assert "nrcpt=2 (queue active)" in log
    mailsys.wait_for(lambda: f"{queue_id}: removed" in mailsys.log("qmgr"), "the removed line")


def test_mail_is_noticed_without_a_trigger(mailsys, agent_factory) -> None:
    agent = agent_factory()
    mailsys.start_ready("qmgr", sockets=("qmgr",))  # up and watching
    queue_id = put(mailsys, f"ann@{HOST}")
    mailsys.wait_for(lambda: agent.deliveries[(queue_id, f"ann@{HOST}")] == 1, "the delivery")


def test_a_4xx_leaves_the_message_deferred_with_its_reason(mailsys, agent_factory) -> None:
    agent_factory(lambda address: (DEFERRED, "4.2.0", "mailbox temporarily unavailable"))
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"ann@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: in_queue(mailsys, "deferred") == [queue_id], "the deferral")
    [record] = bounce_log.read(mailsys.queue_dir, QueueName.DEFER, queue_id)
    assert (record.address, record.dsn, record.text) == (
        f"ann@{HOST}",
        "4.2.0",
        "mailbox temporarily unavailable",
    )
    retry_at = os.stat(mailsys.queue_dir / "deferred" / queue_id).st_mtime
    assert time.time() + 250 < retry_at < time.time() + 301  # minimal_backoff_time 300s
    assert not (mailsys.queue_dir / "bounce" / queue_id).exists()


def test_a_5xx_sends_the_sender_a_notice_from_the_null_sender(mailsys, agent_factory) -> None:
    def answer(address: str) -> tuple[str, str, str]:
        if address.startswith("nobody@"):
            return BOUNCED, "5.1.1", 'unknown user: "nobody"'
        return always_sent(address)

    agent = agent_factory(answer)
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"nobody@{HOST}", f"ann@{HOST}")
    kick(mailsys)
    # the notice comes back through the queue to the (local) sender
    mailsys.wait_for(lambda: len(agent.contents) == 2, "the notice to be delivered")
    mailsys.wait_for(lambda: queue_is_empty(mailsys), "the queue to empty")
    [notice_id] = [qid for qid in agent.contents if qid != queue_id]
    assert agent.senders[notice_id] == ""
    assert agent.deliveries[(notice_id, f"joe@{HOST}")] == 1
    notice = email.message_from_bytes(agent.contents[notice_id], policy=email.policy.compat32)
    assert notice.get_content_type() == "multipart/report"
    assert notice["Subject"] == "Undelivered Mail Returned to Sender"
    report = notice.get_payload()[1].get_payload()
    assert report[1]["Final-Recipient"] == f"rfc822; nobody@{HOST}"
    assert report[1]["Status"] == "5.1.1"
    assert report[1]["Action"] == "failed"
    assert len(report) == 2  # ann was delivered: not in the notice
    log = mailsys.log("qmgr")
    assert f"{queue_id}: sender non-delivery notification: {notice_id}" in log
    assert not (mailsys.queue_dir / "bounce" / queue_id).exists()


def test_no_agent_socket_defers_with_mail_transport_unavailable(mailsys) -> None:
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"ann@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: in_queue(mailsys, "deferred") == [queue_id], "the deferral")
    [record] = bounce_log.read(mailsys.queue_dir, QueueName.DEFER, queue_id)
    assert (record.dsn, record.text) == ("4.3.0", "mail transport unavailable")
    log = mailsys.log("qmgr")
    assert f"{queue_id}: to=<ann@{HOST}>, relay=none, delay=" in log
    assert "dsn=4.3.0, status=deferred (mail transport unavailable)" in log


def test_an_agent_that_dies_without_an_answer_defers_with_unknown_transport_error(
    mailsys,
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(mailsys.socket_path("local")))
    listener.listen(8)

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"ann@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: in_queue(mailsys, "deferred") == [queue_id], "the deferral")
    [record] = bounce_log.read(mailsys.queue_dir, QueueName.DEFER, queue_id)
    assert (record.dsn, record.text) == ("4.3.0", "unknown mail transport error")
    listener.close()


def test_an_expired_message_is_returned_to_its_sender(mailsys, agent_factory) -> None:
    mailsys.write_main_cf("maximal_queue_lifetime = 0\n")

    def answer(address: str) -> tuple[str, str, str]:
        if address.startswith("busy@"):
            return DEFERRED, "4.2.1", "mailbox busy"
        return always_sent(address)

    agent = agent_factory(answer)
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"busy@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: len(agent.contents) == 1, "the notice to be delivered")
    mailsys.wait_for(lambda: queue_is_empty(mailsys), "the queue to empty")
    [notice] = agent.contents.values()
    assert b"Status: 4.2.1" in notice
    assert b"Action: failed" in notice
    assert b"mailbox busy" in notice
    log = mailsys.log("qmgr")
    assert f"{queue_id}: from=<joe@{HOST}>, status=expired, returned to sender" in log


def test_a_flush_retries_deferred_mail_at_once(mailsys, agent_factory) -> None:
    busy = {"yes": True}

    def answer(address: str) -> tuple[str, str, str]:
        if busy["yes"]:
            return DEFERRED, "4.2.1", "mailbox busy"
        return always_sent(address)

    agent = agent_factory(answer)
    start_qmgr(mailsys)
    queue_id = put(mailsys, f"ann@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: in_queue(mailsys, "deferred") == [queue_id], "the deferral")
    busy["yes"] = False
    kick(mailsys, FLUSH_QUEUE)  # postqueue -f: F A D I
    mailsys.wait_for(lambda: queue_is_empty(mailsys), "the retry")
    assert agent.deliveries == {(queue_id, f"ann@{HOST}"): 1}
    assert not (mailsys.queue_dir / "defer" / queue_id).exists()


def test_a_corrupt_file_goes_to_corrupt_and_the_rest_flows(mailsys, agent_factory) -> None:
    agent = agent_factory()
    bad = put(mailsys, f"ann@{HOST}")
    path = mailsys.queue_dir / "incoming" / bad
    path.write_bytes(path.read_bytes()[:-5])  # cut short: no end record
    good = put(mailsys, f"bob@{HOST}")
    start_qmgr(mailsys)
    mailsys.wait_for(lambda: agent.deliveries[(good, f"bob@{HOST}")] == 1, "the good message")
    mailsys.wait_for(lambda: in_queue(mailsys, "corrupt") == [bad], "the bad one in corrupt/")
    assert f'warning: saving corrupt file "{bad}" from queue "active" to queue "corrupt"' in (
        mailsys.log("qmgr")
    )
    mailsys.wait_for(lambda: queue_is_empty(mailsys), "the queue to empty")
    assert start_qmgr  # qmgr is still running
    assert mailsys.processes[-1].poll() is None


def test_a_file_an_agent_still_holds_is_skipped_and_put_back(mailsys, agent_factory) -> None:
    queue_id = put(mailsys, f"ann@{HOST}")
    with Spool(mailsys.queue_dir) as spool, spool.open("incoming", queue_id) as handle:
        lock_shared(handle)  # an agent of an earlier qmgr at work
        start_qmgr(mailsys)
        mailsys.wait_for(
            lambda: f"{queue_id}: skipped, still being delivered" in mailsys.log("qmgr"),
            "the skip",
        )
        mailsys.wait_for(lambda: in_queue(mailsys, "incoming") == [queue_id], "the file back")
        retry_at = os.stat(mailsys.queue_dir / "incoming" / queue_id).st_mtime
        assert time.time() + 50 < retry_at <= time.time() + 60
    agent = agent_factory()
    kick(mailsys, FLUSH_QUEUE)  # ignores the time stamp
    mailsys.wait_for(lambda: agent.deliveries[(queue_id, f"ann@{HOST}")] == 1, "the delivery")


def test_status_reaches_the_notify_socket(mailsys, monkeypatch) -> None:
    notify_path = mailsys.root / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    start_qmgr(mailsys)
    seen: list[str] = []

    def status_seen(wanted: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen.append(receiver.recv(4096).decode())
            lines = seen[-1].splitlines()
            status = [line for line in lines if line.startswith("STATUS=")]
            if status and status[0].endswith(wanted) and status[0].startswith("STATUS=config "):
                return
        raise AssertionError(f"no STATUS ending in {wanted!r}: {seen}")

    status_seen("; active 0, incoming 0, deferred 0")
    assert any("READY=1" in datagram.splitlines() for datagram in seen)
    put(mailsys, f"ann@{HOST}")  # no agent: it ends in deferred/
    kick(mailsys)
    status_seen("; active 0, incoming 0, deferred 1")
    receiver.close()


def test_sigterm_ends_qmgr_cleanly(mailsys) -> None:
    process = mailsys.start_ready("qmgr", sockets=("qmgr",))
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert "terminating on signal 15" in mailsys.log("qmgr")


def test_qmgr_kill_loses_nothing_and_delivers_nothing_twice(mailsys, agent_factory) -> None:
    agent = agent_factory(delay=0.02)
    qmgr = start_qmgr(mailsys)
    expected = set()
    for round_ in range(3):
        for n in range(10):
            expected.add((put(mailsys, f"user{round_}x{n}@{HOST}", f"other{n}@{HOST}"), n))
        time.sleep(0.15 + 0.1 * round_)  # deliveries are under way
        qmgr.send_signal(signal.SIGKILL)
        qmgr.wait()
        qmgr = start_qmgr(mailsys)

    def all_delivered() -> bool:
        kick(mailsys, FLUSH_QUEUE)  # an impatient admin: no 60 s wait for skipped files
        return queue_is_empty(mailsys) and len(agent.deliveries) == 60

    mailsys.wait_for(all_delivered, "every message delivered", timeout=90)
    assert set(agent.deliveries.values()) == {1}, agent.deliveries
    assert {qid for qid, _ in agent.deliveries} == {qid for qid, _ in expected}
    assert not mailsys.queue_files("corrupt")
    # the kills did land while messages were in active/ (else this proved nothing)
    assert "left in the active queue back to incoming" in mailsys.log("qmgr")


def test_the_active_queue_never_holds_more_than_its_limit(mailsys, agent_factory) -> None:
    mailsys.write_main_cf("qmgr_message_active_limit = 2\n")
    agent = agent_factory(delay=0.03)
    made = {put(mailsys, f"u{n}@{HOST}") for n in range(8)}
    start_qmgr(mailsys)
    most = 0
    deadline = time.monotonic() + 30
    while not queue_is_empty(mailsys) and time.monotonic() < deadline:
        most = max(most, len(in_queue(mailsys, "active")))
        time.sleep(0.005)
    assert queue_is_empty(mailsys)
    assert {qid for qid, _ in agent.deliveries} == made
    assert most == 2


def test_a_reload_changes_where_mail_goes(mailsys, agent_factory) -> None:
    agent_factory()
    mine = agent_factory(transport="mine")
    qmgr = mailsys.start_ready("qmgr", sockets=("qmgr",))
    mailsys.write_main_cf("local_transport = mine:$myhostname\n")
    qmgr.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload -- configuration" in mailsys.log("qmgr"), "the reload")
    queue_id = put(mailsys, f"ann@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: mine.deliveries[(queue_id, f"ann@{HOST}")] == 1, "the delivery")
    assert [r.transport for r in mine.requests] == ["mine"]


def test_a_reload_qmgr_cannot_use_keeps_the_old_configuration(mailsys, agent_factory) -> None:
    agent = agent_factory()
    qmgr = mailsys.start_ready("qmgr", sockets=("qmgr",))
    mailsys.write_main_cf("default_destination_concurrency_negative_feedback = lots\n")
    qmgr.send_signal(signal.SIGHUP)
    mailsys.wait_for(
        lambda: "keeping the previous configuration" in mailsys.log("qmgr"), "the refusal"
    )
    assert "default_destination_concurrency_negative_feedback" in mailsys.log("qmgr")
    queue_id = put(mailsys, f"ann@{HOST}")
    kick(mailsys)
    mailsys.wait_for(lambda: agent.deliveries[(queue_id, f"ann@{HOST}")] == 1, "the delivery")
    assert qmgr.poll() is None


def test_a_bad_limit_at_start_exits_with_ex_config(mailsys) -> None:
    mailsys.write_main_cf("default_destination_concurrency_failed_cohort_limit = none\n")
    qmgr = start_qmgr(mailsys)
    assert qmgr.wait(20) == 78
    assert "default_destination_concurrency_failed_cohort_limit" in mailsys.log("qmgr")
