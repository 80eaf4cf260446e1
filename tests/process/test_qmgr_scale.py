"""qmgr at scale, as a process: large messages read in batches, large deferred queues.

The delivery agents are test_qmgr_flow's FakeAgent (the agent's side of
core/deliver_request, with real done marks under a shared lock), here counting the
recipients qmgr has handed out and not yet had answered.
"""

from __future__ import annotations

import threading

from sdmail.core.deliver_request import BOUNCED, DeliveryRequest, DeliveryResult
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
