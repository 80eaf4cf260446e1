"""qmgr at scale, as a process: large messages read in batches, large deferred queues.

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

import os
import threading
import time
from pathlib import Path

from sdmail.cleanup.api import Cleanup, Origin, Submission
from sdmail.core.config import load_config
from sdmail.core.deliver_request import BOUNCED, DEFERRED, DeliveryRequest, DeliveryResult
from sdmail.core.records import QueueName, Recipient
from sdmail.core.spool import Spool, make_queue_id
from tests.process.test_qmgr_flow import HOST, FakeAgent, always_sent, kick, put, queue_is_empty

REMOTE = "remote.example"


class CountingAgent(FakeAgent):
    """A FakeAgent that records the most recipients it held at once."""

    def __init__(self, *args, **kwargs) -> None:
        self.holding = 0
        self.most = 0
        self._counting = threading.Lock()
        super().__init__(*args, **kwargs)

    def _deliver(self, request: DeliveryRequest) -> DeliveryResult:
        with self._counting:
            self.holding += len(request.recipients)
            self.most = max(self.most, self.holding)
        try:
            return super()._deliver(request)
        finally:
            with self._counting:
                self.holding -= len(request.recipients)


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
