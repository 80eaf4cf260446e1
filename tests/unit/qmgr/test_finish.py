"""The end of a delivery round (sdmail/qmgr/finish.py): remove, defer, expire, notify."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from sdmail.bounce.notify import BounceSettings, Notifier
from sdmail.cleanup.api import Cleanup
from sdmail.core import bounce_log, qfile
from sdmail.core.config import bind, load_config
from sdmail.core.dsn import Status
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.qmgr.finish import Finisher, FinishSettings
from sdmail.qmgr.message import ActiveMessage, StatusLogs

HOST = "mail.example.test"
DAY = 86400
BUSY = Status("4.2.1", "mailbox busy")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Round:
    """A queue with one message in active/ and a Finisher on a fake clock."""

    def __init__(self, root: Path, main_cf: str = "") -> None:
        self.dir = root / "queue"
        self.dir.mkdir()
        (root / "main.cf").write_text(
            f"myhostname = {HOST}\nqueue_directory = {self.dir}\n" + main_cf
        )
        cfg = load_config(root)
        self.spool = Spool(self.dir)
        self.spool.create_directories()
        self.logs = StatusLogs(str(self.dir), 2)
        notifier = Notifier(Cleanup(cfg, self.spool), self.spool, bind(BounceSettings, cfg))
        self.clock = Clock(time.time())
        self.finisher = Finisher(
            self.spool, notifier, self.logs, bind(FinishSettings, cfg), clock=self.clock
        )

    def message(
        self, *recipients: str, sender: str = f"joe@{HOST}", age: float = 0
    ) -> ActiveMessage:
        envelope = Envelope(
            sender,
            tuple(Recipient(r) for r in recipients),
            arrival_sec=int(self.clock.now - age),
        )
        created = self.spool.create(QueueName.ACTIVE, envelope, b"Subject: x\n\nbody\n")
        with self.spool.open(QueueName.ACTIVE, created.queue_id) as handle:
            read = qfile.read_envelope(handle.fd).envelope
        return ActiveMessage(created.queue_id, read, 17, active_at=self.clock.now)

    def defer(self, message: ActiveMessage, index: int = 0, status: Status = BUSY) -> None:
        self.logs.deferred(message, message.envelope.recipients[index], status, log_line=False)

    def bounce(self, message: ActiveMessage, index: int = 0) -> None:
        status = Status("5.1.1", "unknown user")
        self.logs.bounced(message, message.envelope.recipients[index], status, log_line=False)

    def files(self, queue: str) -> list[str]:
        return sorted(os.listdir(self.dir / queue))


@pytest.fixture
def round_(tmp_path: Path) -> Round:
    return Round(tmp_path)


def logged(caplog: pytest.LogCaptureFixture, queue_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "queue_id", None) == queue_id]


def test_a_message_with_nothing_left_is_removed_with_its_logs(
    round_: Round, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    message = round_.message(f"ann@{HOST}")
    (round_.dir / "trace" / message.queue_id).write_text("x")
    finished = round_.finisher.finish(message)
    assert finished.deferred_until is None
    assert round_.files("active") == [] and round_.files("deferred") == []
    assert round_.files("trace") == []
    assert logged(caplog, message.queue_id) == ["removed"]


@pytest.mark.parametrize(("age", "rest"), [(0, 300), (1000, 1000), (50_000, 4000)])
def test_a_deferred_message_rests_its_age_within_the_backoff_limits(
    round_: Round, age: float, rest: float
) -> None:
    message = round_.message(f"ann@{HOST}", age=age)
    round_.defer(message)
    finished = round_.finisher.finish(message)
    assert round_.files("deferred") == [message.queue_id]
    mtime = os.stat(round_.dir / "deferred" / message.queue_id).st_mtime
    assert finished.deferred_until == pytest.approx(round_.clock.now + rest, abs=1)
    assert mtime == pytest.approx(round_.clock.now + rest, abs=1)
    [record] = bounce_log.read(round_.dir, QueueName.DEFER, message.queue_id)
    assert record.text == "mailbox busy"  # what mailq shows until the retry


def test_a_bounce_sends_the_notice_and_removes_the_message(
    round_: Round, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    message = round_.message(f"nobody@{HOST}")
    round_.bounce(message)
    finished = round_.finisher.finish(message)
    assert finished.notice is not None and finished.deferred_until is None
    assert round_.files("incoming") == [finished.notice]
    assert round_.files("active") == [] and round_.files("bounce") == []
    assert logged(caplog, message.queue_id) == [
        f"sender non-delivery notification: {finished.notice}",
        "removed",
    ]


def test_an_expired_message_returns_its_deferred_recipients(
    round_: Round, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    message = round_.message(f"ann@{HOST}", f"bob@{HOST}", age=5 * DAY)
    round_.defer(message, 0)
    round_.defer(message, 1, Status("4.4.1", "connection refused"))
    finished = round_.finisher.finish(message)
    assert finished.deferred_until is None and finished.notice is not None
    assert round_.files("active") == [] and round_.files("deferred") == []
    data = (round_.dir / "incoming" / finished.notice).read_bytes()
    parsed = qfile.decode(data)
    content = parsed.content_from(data)
    assert parsed.envelope.sender == ""
    assert b"Status: 4.2.1" in content and b"Status: 4.4.1" in content
    assert content.count(b"Action: failed") == 2
    assert logged(caplog, message.queue_id)[0] == (
        f"from=<joe@{HOST}>, status=expired, returned to sender"
    )


def test_a_message_postsuper_marked_to_expire_is_returned_however_young(
    round_: Round, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    message = round_.message(f"ann@{HOST}", age=60)
    (round_.dir / "active" / message.queue_id).chmod(0o700)  # postsuper -e's mark
    round_.defer(message)
    finished = round_.finisher.finish(message)
    assert finished.deferred_until is None and finished.notice is not None
    assert logged(caplog, message.queue_id)[0] == (
        f"from=<joe@{HOST}>, status=force-expired, returned to sender"
    )


def test_a_message_younger_than_its_lifetime_does_not_expire(round_: Round) -> None:
    message = round_.message(f"ann@{HOST}", age=5 * DAY - 10)
    round_.defer(message)
    assert round_.finisher.finish(message).deferred_until is not None
    assert round_.files("incoming") == []


def test_a_bounce_expires_after_bounce_queue_lifetime(tmp_path: Path) -> None:
    round_ = Round(tmp_path, "bounce_queue_lifetime = 1h\n")
    message = round_.message(f"ann@{HOST}", sender="", age=3600)
    round_.defer(message)
    finished = round_.finisher.finish(message)
    assert finished.deferred_until is None
    assert finished.notice is None  # no notice to the null sender
    assert round_.files("active") == [] and round_.files("incoming") == []


def test_expired_recipients_are_marked_done_before_the_notice(tmp_path: Path) -> None:
    round_ = Round(tmp_path, "maximal_queue_lifetime = 0\n")
    message = round_.message(f"ann@{HOST}")
    round_.defer(message)
    (round_.dir / "incoming").rmdir()  # the notice cannot be queued now
    finished = round_.finisher.finish(message)
    assert round_.files("deferred") == [message.queue_id]
    assert finished.deferred_until is not None
    with round_.spool.open(QueueName.DEFERRED, message.queue_id) as handle:
        [recipient] = qfile.read_envelope(handle.fd).envelope.recipients
    assert recipient.done  # never delivered again: only the notice is retried
    [record] = bounce_log.read(round_.dir, QueueName.BOUNCE, message.queue_id)
    assert (record.dsn, record.text) == ("4.2.1", "mailbox busy")
