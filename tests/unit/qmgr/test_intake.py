"""Taking a queue file into the active queue (sdmail/qmgr/intake.py), on a real queue."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from sdmail.core import bounce_log, qfile
from sdmail.core.config import load_config
from sdmail.core.dsn import Status
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool, lock_exclusive, lock_shared
from sdmail.core.tables.table import TableError
from sdmail.qmgr.intake import (
    Intake,
    IntakeSettings,
    Outcome,
    error_transport_status,
    read_more,
    take,
)
from sdmail.qmgr.message import StatusLogs
from sdmail.trivial_rewrite.resolve import Resolver, ResolveSettings

HOST = "mail.example.test"


class Queue:
    def __init__(self, root: Path, main_cf: str = "") -> None:
        self.dir = root / "queue"
        self.dir.mkdir()
        (root / "main.cf").write_text(
            f"myhostname = {HOST}\nqueue_directory = {self.dir}\n" + main_cf
        )
        self.spool = Spool(self.dir)
        self.spool.create_directories()
        self.resolver = Resolver(ResolveSettings.from_config(load_config(root)))
        self.logs = StatusLogs(str(self.dir), 2)

    def put(self, *recipients: Recipient | str, queue: QueueName = QueueName.INCOMING) -> str:
        rcpts = tuple(r if isinstance(r, Recipient) else Recipient(r) for r in recipients)
        envelope = Envelope(f"joe@{HOST}", rcpts, arrival_sec=int(time.time()))
        return self.spool.create(queue, envelope, b"Subject: x\n\nbody\n").queue_id

    def take(self, queue_id: str, queue: QueueName = QueueName.INCOMING, **kw) -> Intake:
        kw.setdefault("now", time.time())
        kw.setdefault("ignore_time", False)
        kw.setdefault("settings", IntakeSettings("double-bounce", 20000, frozenset()))
        return take(
            self.spool,
            queue,
            queue_id,
            resolve=self.resolver.resolve,
            logs=self.logs,
            **kw,
        )

    def where(self, queue_id: str) -> QueueName | None:
        return self.spool.find(queue_id)

    def recipients(self, queue_id: str, queue: QueueName = QueueName.ACTIVE) -> list[Recipient]:
        with self.spool.open(queue, queue_id) as handle:
            return list(qfile.read_envelope(handle.fd).envelope.recipients)


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue(tmp_path)


def logged(caplog: pytest.LogCaptureFixture, queue_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "queue_id", None) == queue_id]


def test_a_ready_file_is_moved_read_resolved_and_unlocked(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    queue_id = queue.put(f"ann@{HOST}", "bob@example.net")
    intake = queue.take(queue_id)
    assert intake.outcome is Outcome.TAKEN and intake.message is not None
    assert queue.where(queue_id) is QueueName.ACTIVE
    with queue.spool.open(QueueName.ACTIVE, queue_id) as handle:
        lock_exclusive(handle)  # qmgr let go: the agent can take its shared lock
    message = intake.message
    assert message.outstanding == 2
    assert [(t.address, t.transport, t.nexthop) for t in message.todo] == [
        (f"ann@{HOST}", "local", HOST),
        ("bob@example.net", "smtp", "example.net"),
    ]
    assert logged(caplog, queue_id)[0].startswith(f"from=<joe@{HOST}>, size=17, nrcpt=2")
    assert logged(caplog, queue_id)[0].endswith("(queue active)")


def test_a_file_not_due_stays_unless_time_stamps_are_ignored(queue: Queue) -> None:
    queue_id = queue.put(f"ann@{HOST}", queue=QueueName.DEFERRED)
    later = time.time() + 600
    os.utime(queue.dir / "deferred" / queue_id, (later, later))
    intake = queue.take(queue_id, QueueName.DEFERRED)
    assert intake.outcome is Outcome.NOT_DUE
    assert intake.due == pytest.approx(later)
    assert queue.where(queue_id) is QueueName.DEFERRED
    assert queue.take(queue_id, QueueName.DEFERRED, ignore_time=True).outcome is Outcome.TAKEN


def test_a_file_an_agent_holds_goes_back_to_incoming_a_minute_ahead(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    queue_id = queue.put(f"ann@{HOST}")
    now = time.time()
    with queue.spool.open(QueueName.INCOMING, queue_id) as agent:
        lock_shared(agent)
        intake = queue.take(queue_id, now=now)
    assert intake.outcome is Outcome.LOCKED
    assert queue.where(queue_id) is QueueName.INCOMING
    assert os.stat(queue.dir / "incoming" / queue_id).st_mtime == pytest.approx(now + 60)
    assert logged(caplog, queue_id) == ["skipped, still being delivered"]


def test_a_corrupt_file_goes_to_corrupt_with_postfix_warning(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    queue_id = queue.put(f"ann@{HOST}")
    path = queue.dir / "incoming" / queue_id
    path.write_bytes(path.read_bytes()[:-1])
    assert queue.take(queue_id).outcome is Outcome.CORRUPT
    assert queue.where(queue_id) is QueueName.CORRUPT
    assert f'saving corrupt file "{queue_id}" from queue "active" to queue "corrupt"' in (
        caplog.text
    )


def test_a_symlink_in_incoming_goes_to_corrupt(queue: Queue, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("secret")
    queue_id = queue.put(f"ann@{HOST}")
    path = queue.dir / "incoming" / queue_id
    path.unlink()
    path.symlink_to(target)
    assert queue.take(queue_id).outcome is Outcome.CORRUPT
    assert (queue.dir / "corrupt" / queue_id).is_symlink()
    assert target.read_text() == "secret"


def test_a_file_that_is_gone_is_gone(queue: Queue) -> None:
    assert queue.take("4jZMRq0W6zzJF6V").outcome is Outcome.GONE


def test_taking_from_deferred_drops_the_defer_log_but_not_the_bounce_log(queue: Queue) -> None:
    queue_id = queue.put(f"ann@{HOST}", queue=QueueName.DEFERRED)
    record = bounce_log.StatusRecord(f"ann@{HOST}", "deferred", "4.2.0", "busy")
    bounce_log.append(queue.dir, QueueName.DEFER, queue_id, record)
    bounce_log.append(queue.dir, QueueName.BOUNCE, queue_id, record)
    assert queue.take(queue_id, QueueName.DEFERRED).outcome is Outcome.TAKEN
    assert not (queue.dir / "defer" / queue_id).exists()
    assert (queue.dir / "bounce" / queue_id).exists()


def test_done_recipients_are_not_delivered_again(queue: Queue) -> None:
    queue_id = queue.put(f"ann@{HOST}", f"bob@{HOST}")
    with queue.spool.open(QueueName.INCOMING, queue_id, writable=True) as handle:
        first = qfile.read_envelope(handle.fd).envelope.recipients[0]
        assert first.offset is not None
        qfile.mark_done(handle, first.offset)
    intake = queue.take(queue_id)
    assert intake.message is not None
    assert [t.address for t in intake.message.todo] == [f"bob@{HOST}"]
    assert intake.message.outstanding == 1


def test_a_large_message_is_read_in_batches_of_the_recipient_limit(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    addresses = [f"user{n}@{HOST}" for n in range(25)]
    queue_id = queue.put(*addresses)
    settings = IntakeSettings("double-bounce", 10, frozenset())
    intake = queue.take(queue_id, settings=settings)
    message = intake.message
    assert message is not None
    assert f"from=<joe@{HOST}>, size=17, nrcpt=25 (queue active)" in logged(caplog, queue_id)
    batches = [[t.address for t in message.todo]]
    while message.unread_offset is not None:
        assert message.outstanding == len(batches[-1])
        read_more(
            queue.spool, message, resolve=queue.resolver.resolve, logs=queue.logs, settings=settings
        )
        batches.append([t.address for t in message.todo])
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert [address for batch in batches for address in batch] == addresses
    assert message.outstanding == 5


def test_mail_to_double_bounce_is_discarded_as_sent(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    queue_id = queue.put(f"double-bounce@{HOST}", f"ann@{HOST}")
    intake = queue.take(queue_id)
    assert intake.message is not None
    assert [t.address for t in intake.message.todo] == [f"ann@{HOST}"]
    assert intake.message.outstanding == 1
    assert [r.done for r in queue.recipients(queue_id)] == [True, False]
    [line] = [text for text in logged(caplog, queue_id) if "to=<" in text]
    assert f"to=<double-bounce@{HOST}>, relay=none," in line
    assert line.endswith("dsn=2.0.0, status=sent (undeliverable postmaster notification discarded)")


def test_the_error_transport_bounces_with_the_next_hop_text(tmp_path: Path) -> None:
    queue = Queue(tmp_path, "virtual_alias_domains = example.com\n")
    queue_id = queue.put("nobody@example.com")
    intake = queue.take(queue_id)
    assert intake.message is not None
    assert intake.message.todo == [] and intake.message.outstanding == 0
    [record] = bounce_log.read(queue.dir, QueueName.BOUNCE, queue_id)
    assert (record.dsn, record.text) == ("5.1.1", "User unknown in virtual alias table")
    assert [r.done for r in queue.recipients(queue_id)] == [True]


def test_a_deferred_transport_is_deferred_unless_a_flush_takes_the_message(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = IntakeSettings("double-bounce", 20000, frozenset({"local", "uucp"}))
    queue_id = queue.put(f"ann@{HOST}")
    intake = queue.take(queue_id, settings=settings)
    assert intake.message is not None
    assert intake.message.todo == [] and intake.message.outstanding == 0
    [record] = bounce_log.read(queue.dir, QueueName.DEFER, queue_id)
    assert (record.address, record.dsn, record.text) == (
        f"ann@{HOST}",
        "4.3.2",
        "deferred transport",
    )
    [line] = [text for text in logged(caplog, queue_id) if "to=<" in text]
    assert f"to=<ann@{HOST}>, relay=none," in line
    assert line.endswith("dsn=4.3.2, status=deferred (deferred transport)")
    assert [r.done for r in queue.recipients(queue_id)] == [False]

    flushed = queue.put(f"bob@{HOST}")
    intake = queue.take(flushed, settings=settings, flush=True)
    assert intake.message is not None
    assert [(t.address, t.transport) for t in intake.message.todo] == [(f"bob@{HOST}", "local")]
    assert intake.message.flushed


class BrokenTable:
    """A resolver whose transport table fails, as a table read error would."""

    def resolve(self, address: str) -> object:
        raise TableError("read database /etc/sdmail/transport.db: disk I/O error")


def test_a_recipient_the_resolver_cannot_handle_is_deferred(queue: Queue) -> None:
    queue.resolver = BrokenTable()  # type: ignore[assignment]
    queue_id = queue.put(f"ann@{HOST}")
    intake = queue.take(queue_id)
    assert intake.message is not None and intake.message.outstanding == 0
    [(_, status)] = intake.message.deferred.values()
    assert status == Status("4.3.0", "address resolver failure")
    [record] = bounce_log.read(queue.dir, QueueName.DEFER, queue_id)
    assert record.text == "address resolver failure"


@pytest.mark.parametrize(
    ("nexthop", "expected"),
    [
        (
            "5.1.1 User unknown in virtual alias table",
            Status("5.1.1", "User unknown in virtual alias table"),
        ),
        ("Address is undeliverable", Status("5.0.0", "Address is undeliverable")),
        ("4.3.0 try later", Status("5.0.0", "4.3.0 try later")),
        ("", Status("5.0.0", "mail delivery error")),
    ],
)
def test_error_transport_status(nexthop: str, expected: Status) -> None:
    assert error_transport_status(nexthop) == expected
