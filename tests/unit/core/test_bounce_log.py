"""Per-message status logs in bounce/, defer/, trace/ (core/bounce_log.py)."""

from __future__ import annotations

import pytest

from sdmail.core import bounce_log
from sdmail.core.bounce_log import StatusRecord
from sdmail.core.records import QueueName
from sdmail.core.spool import Spool


@pytest.fixture
def queue(tmp_path):
    with Spool(tmp_path) as spool:
        spool.create_directories()
    return tmp_path


def test_append_and_read_back_in_order(queue):
    first = StatusRecord("a@x", "deferred", "4.4.1", "connect to x: Connection refused", "A@x")
    second = StatusRecord(
        "b@x", "deferred", "4.2.0", "host said: 451 try again later", relay="x[1.2.3.4]:25"
    )
    bounce_log.append(queue, QueueName.DEFER, "QID", first)
    bounce_log.append(queue, QueueName.DEFER, "QID", second)
    records = bounce_log.read(queue, QueueName.DEFER, "QID")
    assert [(r.address, r.text, r.relay) for r in records] == [
        ("a@x", first.text, "none"),
        ("b@x", second.text, "x[1.2.3.4]:25"),
    ]
    assert all(r.when > 0 for r in records)
    assert (queue / "defer" / "QID").stat().st_mode & 0o777 == 0o600


def test_missing_log_reads_as_empty_and_torn_line_is_skipped(queue):
    assert bounce_log.read(queue, QueueName.BOUNCE, "NONE") == []
    bounce_log.append(
        queue, QueueName.BOUNCE, "QID", StatusRecord("a@x", "bounced", "5.1.1", "unknown")
    )
    with open(queue / "bounce" / "QID", "a") as handle:
        handle.write('{"address": "half')
    assert [r.address for r in bounce_log.read(queue, QueueName.BOUNCE, "QID")] == ["a@x"]


def test_remove_takes_every_log(queue):
    for log in (QueueName.BOUNCE, QueueName.DEFER, QueueName.TRACE):
        bounce_log.append(queue, log, "QID", StatusRecord("a@x", "sent", "2.0.0", "ok"))
    bounce_log.remove(queue, "QID")
    assert not any((queue / q / "QID").exists() for q in ("bounce", "defer", "trace"))


def test_only_log_queues_are_logs(queue):
    with pytest.raises(ValueError, match="not a status log queue"):
        bounce_log.log_path(queue, QueueName.INCOMING, "QID")
