"""qmgr at scale, as a process: large messages read in batches, large deferred queues,
and the brakes an admin puts on a transport (defer_transports, rate delays).

The smtp agent is test_qmgr_flow's FakeAgent (the agent's side of
core/deliver_request, with real done marks under a shared lock), here also counting
the recipients qmgr has handed out and not yet had answered; new mail goes to the
real discard agent.  The deferred backlog is 100,000 copies of one queue file the
cleanup library made, under new valid queue IDs (about 3 s to write).  qmgr's peak
memory is its VmHWM.  Measured on a 2-CPU machine: new mail delivered in 0.05-0.2 s
while qmgr retries the backlog at about 1,000 messages a second (peak 31 MB), or
while 20,000 backlog messages fill the active queue for a slow site (peak 62 MB).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

from sdmail.cleanup.api import Cleanup, Origin, Submission
from sdmail.core import bounce_log
from sdmail.core.config import load_config
from sdmail.core.deliver_request import BOUNCED, DEFERRED, DeliveryRequest, DeliveryResult
from sdmail.core.records import Envelope, Notify, QueueName, Recipient
from sdmail.core.spool import Spool, make_queue_id
from sdmail.core.trigger import SCAN_ALL, SCAN_DEFERRED
from tests.process.test_qmgr_flow import HOST, FakeAgent, always_sent, kick, put, queue_is_empty

REMOTE = "remote.example"


class CountingAgent(FakeAgent):
    """A FakeAgent that records the most recipients it held at once, and when each
    delivery began and ended."""

    def __init__(self, *args, **kwargs) -> None:
        self.holding = 0
        self.most = 0
        self.spans: list[list[float]] = []  # [start, end] of each delivery
        self._counting = threading.Lock()
        super().__init__(*args, **kwargs)

    def _deliver(self, request: DeliveryRequest) -> DeliveryResult:
        with self._counting:
            self.holding += len(request.recipients)
            self.most = max(self.most, self.holding)
            self.spans.append([time.monotonic(), 0.0])
            span = self.spans[-1]
        try:
            return super()._deliver(request)
        finally:
            with self._counting:
                self.holding -= len(request.recipients)
                span[1] = time.monotonic()


def test_a_large_message_is_read_and_delivered_in_batches_of_the_recipient_limit(
    mailsys,
) -> None:
    mailsys.write_main_cf(
        "qmgr_message_recipient_limit = 100\n"
        "smtp_destination_recipient_limit = 25\n"
        "smtp_destination_concurrency_limit = 20\n"
        "initial_destination_concurrency = 20\n"
    )
    addresses = [f"user{n}@{REMOTE}" for n in range(5000)]
    bounced = {addresses[7], addresses[4321]}  # in the first batch and in batch 44

    def answer(address: str) -> tuple[str, str, str]:
        if address in bounced:
            return BOUNCED, "5.1.1", "no such user"
        return always_sent(address)

    smtp = CountingAgent(mailsys, answer, transport="smtp")
    local = FakeAgent(mailsys)  # the notices go to the local sender
    try:
        mailsys.start("qmgr", sockets=("qmgr",))
        queue_id = put(mailsys, *addresses)
        kick(mailsys)
        mailsys.wait_for(lambda: queue_is_empty(mailsys), "the message to leave", timeout=120)
        delivered = {address for (qid, address) in smtp.deliveries if qid == queue_id}
        assert delivered == set(addresses) - bounced
        assert set(smtp.deliveries.values()) == {1}  # each once
        # Without batches qmgr would hand out 20 requests of 25 at once (500 recipients).
        assert 25 <= smtp.most <= 100
        assert {len(r.recipients) for r in smtp.requests} == {25}
        # One notice per batch that had failures, as Postfix's qmgr sends them.
        log = mailsys.log("qmgr")
        assert log.count(f"{queue_id}: sender non-delivery notification: ") == 2
        assert log.count(f"{queue_id}: from=<joe@{HOST}>, size=") == 1
        assert "nrcpt=5000 (queue active)" in log
        mailsys.wait_for(lambda: len(local.contents) == 2, "both notices delivered")
        notices = b"\n".join(local.contents.values())
        assert all(f"Final-Recipient: rfc822; {a}".encode() in notices for a in bounced)
    finally:
        smtp.close()
        local.close()


def test_success_notices_of_every_batch_reach_the_sender(mailsys) -> None:
    mailsys.write_main_cf("qmgr_message_recipient_limit = 10\n")
    smtp = FakeAgent(mailsys, transport="smtp")
    local = FakeAgent(mailsys)  # the sender is local
    wanted = {3: f"user3@{REMOTE}", 25: f"user25@{REMOTE}"}  # batches 1 and 3 of 3
    recipients = tuple(
        Recipient(f"user{n}@{REMOTE}", notify=Notify.SUCCESS if n in wanted else Notify(0))
        for n in range(30)
    )
    envelope = Envelope(f"joe@{HOST}", recipients, arrival_sec=int(time.time()))
    try:
        mailsys.start("qmgr", sockets=("qmgr",))
        with Spool(mailsys.queue_dir) as spool:
            queue_id = spool.create(QueueName.INCOMING, envelope, b"Subject: s\n\nx\n").queue_id
        kick(mailsys)
        mailsys.wait_for(lambda: len(local.contents) >= 1, "the success notice")
        mailsys.wait_for(lambda: queue_is_empty(mailsys), "the queue to empty")
        assert len([qid for qid, _ in smtp.deliveries if qid == queue_id]) == 30
        [notice] = local.contents.values()
        assert notice.count(b"Final-Recipient: ") == 2
        assert all(f"Final-Recipient: rfc822; {a}".encode() in notice for a in wanted.values())
    finally:
        smtp.close()
        local.close()


# -- a large deferred queue ----------------------------------------------------------


def cleanup_made_file(mailsys) -> bytes:
    """The bytes of one queue file made by the cleanup library, for a remote recipient."""
    with Spool(mailsys.queue_dir) as spool:
        cleanup = Cleanup(load_config(mailsys.config_dir), spool)
        accepted = cleanup.submit(
            Submission(f"joe@{HOST}", (Recipient(f"someone@{REMOTE}"),), Origin.LOCAL, uid=0),
            b"Subject: backlog\n\nwaiting for the remote site\n",
        )
        path = mailsys.queue_dir / "incoming" / accepted.queue_id
        data = path.read_bytes()
        spool.remove(QueueName.INCOMING, accepted.queue_id)
    return data


def fill_deferred(mailsys, count: int, *, due: float) -> None:
    """COUNT copies of one real queue file in deferred/, under new valid queue IDs, each
    with its retry time (time stamp) DUE."""
    data = cleanup_made_file(mailsys)
    deferred = mailsys.queue_dir / "deferred"
    seconds = int(time.time()) - 3600
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for n in range(count):
        name = deferred / make_queue_id(seconds + n // 1_000_000, n % 1_000_000, n + 1)
        fd = os.open(name, flags, 0o600)
        try:
            os.write(fd, data)
            os.utime(fd, (due, due))
        finally:
            os.close(fd)


def peak_rss_mb(process) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


BACKLOG = 100_000
NEW_MAIL_WITHIN = 3.0  # seconds from cleanup's reply to the agent's delivery line
RSS_LIMIT_MB = 200


def new_mail_delivery_time(mailsys) -> float:
    """Queue a message for the local domain (the discard agent) and time its delivery."""
    with Spool(mailsys.queue_dir) as spool:
        cleanup = Cleanup(load_config(mailsys.config_dir), spool)
        started = time.monotonic()
        accepted = cleanup.submit(
            Submission(f"joe@{HOST}", (Recipient(f"ann@{HOST}"),), Origin.LOCAL, uid=0),
            b"Subject: new\n\nfresh mail\n",
        )
    line = f"{accepted.queue_id}: to=<ann@{HOST}>"
    mailsys.wait_for(
        lambda: any(line in x and "status=sent" in x for x in mailsys.log("discard").splitlines()),
        "the new message delivered",
        timeout=30,
    )
    return time.monotonic() - started


def start_with_backlog(mailsys):
    """discard as the local transport (new mail), BACKLOG due deferred messages for
    REMOTE (smtp), and qmgr started on them."""
    mailsys.write_main_cf("local_transport = discard:new mail\n")
    fill_deferred(mailsys, BACKLOG, due=time.time() - 60)
    mailsys.start("discard", sockets=("discard",))
    qmgr = mailsys.start("qmgr", sockets=("qmgr",))
    mailsys.wait_for(lambda: "(queue active)" in mailsys.log("qmgr"), "the backlog under way")
    return qmgr


def test_a_100k_backlog_retried_at_full_speed_does_not_stall_new_mail(mailsys) -> None:
    # No agent serves smtp: each deferred message is taken in, deferred again
    # ("mail transport unavailable") and moved back, as fast as qmgr can go.
    qmgr = start_with_backlog(mailsys)
    times = [new_mail_delivery_time(mailsys) for _ in range(3)]
    assert max(times) < NEW_MAIL_WITHIN, times
    taken = mailsys.log("qmgr").count(" (queue active)\n")
    assert taken < BACKLOG  # the backlog was still being worked through meanwhile
    assert peak_rss_mb(qmgr) < RSS_LIMIT_MB
    assert ": error: " not in mailsys.log("qmgr")


def test_an_active_queue_full_of_backlog_for_a_slow_site_leaves_room_for_new_mail(
    mailsys,
) -> None:
    # The smtp agent answers 4xx after a pause: qmgr_message_active_limit (20000)
    # deferred messages fill the active queue, the rest wait in deferred/.
    agent = FakeAgent(
        mailsys, lambda _: (DEFERRED, "4.4.2", "slow site"), delay=0.2, transport="smtp"
    )
    try:
        qmgr = start_with_backlog(mailsys)
        active = mailsys.queue_dir / "active"
        mailsys.wait_for(lambda: len(os.listdir(active)) >= 20_000, "a full active queue", 60)
        times = [new_mail_delivery_time(mailsys) for _ in range(3)]
        assert max(times) < NEW_MAIL_WITHIN, times
        assert len(os.listdir(active)) <= 20_000
        assert peak_rss_mb(qmgr) < RSS_LIMIT_MB
    finally:
        agent.close()


# -- defer_transports and rate delays -------------------------------------------------


def test_a_deferred_transport_waits_for_an_explicit_flush(mailsys) -> None:
    mailsys.write_main_cf("defer_transports = smtp\n")
    agent = CountingAgent(mailsys, transport="smtp")
    local = FakeAgent(mailsys)
    try:
        mailsys.start("qmgr", sockets=("qmgr",))
        held = put(mailsys, f"someone@{REMOTE}", f"ann@{HOST}")
        kick(mailsys)
        deferred = mailsys.queue_dir / "deferred"
        mailsys.wait_for(lambda: os.listdir(deferred) == [held], "the deferral")
        assert local.deliveries == {(held, f"ann@{HOST}"): 1}  # local is not held back
        [record] = bounce_log.read(mailsys.queue_dir, QueueName.DEFER, held)
        assert (record.address, record.dsn, record.text) == (
            f"someone@{REMOTE}",
            "4.3.2",
            "deferred transport",
        )
        assert "dsn=4.3.2, status=deferred (deferred transport)" in mailsys.log("qmgr")
        kick(mailsys, SCAN_ALL + SCAN_DEFERRED)  # a deferred-queue run, but no flush
        mailsys.wait_for(
            lambda: mailsys.log("qmgr").count(f"{held}: from=<") == 2, "the second try"
        )
        mailsys.wait_for(lambda: os.listdir(deferred) == [held], "the second deferral")
        assert agent.requests == []

        assert mailsys.run("postqueue", "-f").returncode == 0
        mailsys.wait_for(lambda: queue_is_empty(mailsys), "delivery on postqueue -f")
        assert agent.deliveries == {(held, f"someone@{REMOTE}"): 1}

        again = put(mailsys, f"other@{REMOTE}")
        kick(mailsys)
        mailsys.wait_for(lambda: os.listdir(deferred) == [again], "the next deferral")
        assert mailsys.run("sendmail", "-q").returncode == 0
        mailsys.wait_for(lambda: queue_is_empty(mailsys), "delivery on sendmail -q")
        assert agent.deliveries[(again, f"other@{REMOTE}")] == 1
    finally:
        agent.close()
        local.close()


def test_a_destination_rate_delay_spaces_deliveries_one_at_a_time(mailsys) -> None:
    mailsys.write_main_cf("smtp_destination_rate_delay = 1s\n")
    agent = CountingAgent(mailsys, transport="smtp")
    try:
        mailsys.start("qmgr", sockets=("qmgr",))
        made = [put(mailsys, f"user{n}@{REMOTE}") for n in range(4)]
        other = put(mailsys, "someone@other.example")
        kick(mailsys)
        mailsys.wait_for(lambda: queue_is_empty(mailsys), "every delivery", timeout=30)
        assert {qid for qid, _ in agent.deliveries} == {*made, other}
        remote = sorted(
            span
            for span, request in zip(agent.spans, agent.requests, strict=True)
            if request.nexthop == REMOTE
        )
        assert len(remote) == 4
        gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(remote)]
        assert min(gaps) >= 0.9, gaps  # one at a time, a second apart
        assert max(gaps) < 3, gaps
        # the other destination did not wait behind the paused one
        [other_span] = [
            span
            for span, request in zip(agent.spans, agent.requests, strict=True)
            if request.nexthop == "other.example"
        ]
        assert other_span[0] < remote[1][0]
    finally:
        agent.close()
