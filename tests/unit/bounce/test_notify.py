"""Sending non-delivery notices through the real cleanup library (sdmail/bounce/notify.py)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import logging
import os
import time
from pathlib import Path

import pytest

from sdmail.bounce.notify import BounceError, BounceSettings, Notifier
from sdmail.cleanup.api import Cleanup
from sdmail.core import bounce_log, qfile
from sdmail.core.config import bind, load_config
from sdmail.core.records import DsnRet, Envelope, Notify, QueueName, Recipient
from sdmail.core.spool import Spool

CONTENT = b"From: joe@example.org\nSubject: lost\nMessage-Id: <m1@example.org>\n\nbody text\n"


class Queue:
    def __init__(self, root: Path, main_cf: str = "") -> None:
        self.root = root
        self.queue_dir = root / "queue"
        self.queue_dir.mkdir()
        (root / "main.cf").write_text(
            f"myhostname = mail.example.test\nmyorigin = example.test\n"
            f"queue_directory = {self.queue_dir}\n" + main_cf
        )
        cfg = load_config(root)
        self.spool = Spool(self.queue_dir)
        self.spool.create_directories()
        self.settings = bind(BounceSettings, cfg)
        self.notifier = Notifier(Cleanup(cfg, self.spool), self.spool, self.settings)

    def message(self, envelope: Envelope, content: bytes = CONTENT) -> str:
        return self.spool.create(QueueName.ACTIVE, envelope, content).queue_id

    def bounce(self, queue_id: str, address: str, dsn: str, text: str) -> None:
        record = bounce_log.StatusRecord(address, "bounced", dsn, text)
        bounce_log.append(self.queue_dir, QueueName.BOUNCE, queue_id, record)

    def incoming(self) -> list[tuple[qfile.QueueFile, bytes]]:
        found = []
        for name in os.listdir(self.queue_dir / "incoming"):
            data = (self.queue_dir / "incoming" / name).read_bytes()
            parsed = qfile.decode(data)
            found.append((parsed, parsed.content_from(data)))
        return found

    def bounce_log_exists(self, queue_id: str) -> bool:
        return (self.queue_dir / "bounce" / queue_id).exists()


def logged(caplog: pytest.LogCaptureFixture, queue_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "queue_id", None) == queue_id]


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path)


def envelope(sender: str = "joe@example.org", *recipients: Recipient) -> Envelope:
    rcpts = recipients or (Recipient("nobody@example.net"),)
    return Envelope(sender, rcpts, arrival_sec=int(time.time()) - 60)


def test_the_sender_gets_a_notice_from_the_null_sender(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    env = envelope()
    queue_id = queue.message(env)
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", 'unknown user: "nobody"')
    new_id = queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env)
    [(parsed, content)] = queue.incoming()
    assert parsed.envelope.sender == ""
    assert [r.address for r in parsed.envelope.recipients] == ["joe@example.org"]
    message = email.message_from_bytes(content, policy=email.policy.compat32)
    assert message.get_content_type() == "multipart/report"
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@example.test>"
    assert message["In-Reply-To"] == "<m1@example.org>"
    assert message["Message-Id"] is not None  # cleanup's
    report = message.get_payload()[1].get_payload()
    assert report[1]["Status"] == "5.1.1"
    assert report[1]["Final-Recipient"] == "rfc822; nobody@example.net"
    assert b"body text" in content  # small enough to come back whole
    assert not queue.bounce_log_exists(queue_id)
    assert f"sender non-delivery notification: {new_id}" in logged(caplog, queue_id)


def test_a_bounce_of_a_bounce_is_discarded(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    env = envelope("")
    queue_id = queue.message(env)
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", "unknown user")
    assert queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env) is None
    assert queue.incoming() == []
    assert not queue.bounce_log_exists(queue_id)
    assert logged(caplog, queue_id) == ["non-delivery notification to the null sender discarded"]


def test_no_notice_for_recipients_whose_notify_leaves_out_failure(queue: Queue) -> None:
    env = envelope(
        "joe@example.org",
        Recipient("quiet@example.net", notify=Notify.SUCCESS),
        Recipient("never@example.net", notify=Notify.NEVER),
    )
    queue_id = queue.message(env)
    queue.bounce(queue_id, "quiet@example.net", "5.1.1", "unknown user")
    queue.bounce(queue_id, "never@example.net", "5.1.1", "unknown user")
    assert queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env) is None
    assert queue.incoming() == []
    assert not queue.bounce_log_exists(queue_id)


def test_only_the_recipients_that_asked_are_reported(queue: Queue) -> None:
    env = envelope(
        "joe@example.org",
        Recipient("quiet@example.net", notify=Notify.SUCCESS),
        Recipient("loud@example.net", notify=Notify.FAILURE, orcpt="rfc822;Loud@example.net"),
    )
    queue_id = queue.message(env)
    queue.bounce(queue_id, "quiet@example.net", "5.1.1", "unknown user")
    queue.bounce(queue_id, "loud@example.net", "5.2.2", "mailbox full")
    queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env)
    [(_, content)] = queue.incoming()
    message = email.message_from_bytes(content, policy=email.policy.compat32)
    blocks = message.get_payload()[1].get_payload()
    assert len(blocks) == 2
    assert blocks[1]["Final-Recipient"] == "rfc822; loud@example.net"
    assert blocks[1]["Original-Recipient"] == "rfc822;Loud@example.net"


def test_a_large_original_comes_back_as_headers_only(tmp_path: Path) -> None:
    queue = Queue(tmp_path, "bounce_size_limit = 100\n")
    env = envelope()
    queue_id = queue.message(env, CONTENT + b"x" * 200 + b"\n")
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", "unknown user")
    queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env)
    [(_, content)] = queue.incoming()
    assert b"Content-Type: text/rfc822-headers" in content
    assert b"Subject: lost" in content
    assert b"xxxx" not in content


def test_ret_hdrs_returns_only_the_headers(queue: Queue) -> None:
    env = Envelope(
        "joe@example.org", (Recipient("nobody@example.net"),), arrival_sec=1, ret=DsnRet.HDRS
    )
    queue_id = queue.message(env)
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", "unknown user")
    queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env)
    [(_, content)] = queue.incoming()
    assert b"text/rfc822-headers" in content
    assert b"body text" not in content


def test_a_notice_that_cannot_be_queued_keeps_the_bounce_log(queue: Queue) -> None:
    env = envelope()
    queue_id = queue.message(env)
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", "unknown user")
    (queue.queue_dir / "incoming").rmdir()
    with pytest.raises(BounceError, match="queue file write error"):
        queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env)
    assert queue.bounce_log_exists(queue_id)


def test_an_unreadable_original_still_gets_its_sender_a_notice(queue: Queue) -> None:
    env = envelope()
    queue_id = queue.message(env)
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", "unknown user")
    queue.spool.remove(QueueName.ACTIVE, queue_id)
    assert queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env) is not None
    [(_, content)] = queue.incoming()
    assert b"Status: 5.1.1" in content


def test_no_bounce_log_no_notice(queue: Queue) -> None:
    env = envelope()
    queue_id = queue.message(env)
    assert queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env) is None
    assert queue.incoming() == []


def test_an_smtputf8_message_gets_its_notice_in_rfc_6533_parts(queue: Queue) -> None:
    env = dataclasses.replace(envelope(), smtputf8=True)
    queue_id = queue.message(env)
    queue.bounce(queue_id, "nobody@example.net", "5.1.1", 'unknown user: "nobody"')
    queue.notifier.send_non_delivery(QueueName.ACTIVE, queue_id, env)
    [(parsed, content)] = queue.incoming()
    assert parsed.envelope.smtputf8
    assert b"Content-Type: message/global-delivery-status" in content
    assert b"Content-Type: message/global\n" in content
