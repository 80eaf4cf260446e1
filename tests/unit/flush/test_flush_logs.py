"""sdmail/flush/logs.py: the per-site logs in flush/, on a queue made with core/spool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.flush.logs import FlushLogs, Touched, log_name

NOW = 1_764_000_000.0


@pytest.fixture
def queue(tmp_path: Path):
    with Spool(tmp_path) as spool:
        spool.create_directories()
        yield spool


@pytest.fixture
def logs(queue: Spool) -> FlushLogs:
    made = FlushLogs(queue.path, clock=lambda: NOW)
    made.ensure_directory()
    return made


def message(queue: Spool, where: QueueName, due: float | None = None) -> str:
    envelope = Envelope("a@example.org", (Recipient("b@remote.test"),), arrival_sec=int(NOW))
    queue_id = queue.create(QueueName.INCOMING, envelope, b"Subject: x\n\nx\n").queue_id
    if where is not QueueName.INCOMING:
        queue.move(queue_id, QueueName.INCOMING, where)
    if due is not None:
        os.utime(queue.path / where / queue_id, (due, due))
    return queue_id


def test_log_names_keep_only_lower_case_letters_and_digits() -> None:
    assert log_name("Remote.Test") == "remote_test"
    assert log_name("[192.0.2.1]") == "_192_0_2_1_"
    assert log_name("../../etc") == "______etc"


def test_send_makes_deferred_mail_due_now_and_truncates(queue: Spool, logs: FlushLogs) -> None:
    later = NOW + 3600
    first, second = (
        message(queue, QueueName.DEFERRED, later),
        message(queue, QueueName.DEFERRED, later),
    )
    for queue_id in (first, second, first):  # a message deferred twice is logged twice
        logs.add("remote.test", queue_id)
    assert logs.send_site("REMOTE.test") == 2
    for queue_id in (first, second):
        assert (queue.path / "deferred" / queue_id).stat().st_mtime == NOW
    path = logs.directory / "remote_test"
    assert path.stat().st_atime == NOW  # read now, whatever the mount's atime policy
    assert path.read_text() == ""


def test_send_keeps_what_qmgr_holds_and_drops_what_is_gone(queue: Spool, logs: FlushLogs) -> None:
    busy = message(queue, QueueName.ACTIVE)
    held = message(queue, QueueName.HOLD, NOW + 3600)
    logs.add("remote.test", busy)
    logs.add("remote.test", held)
    assert logs.send_site("remote.test") == 0
    assert (logs.directory / "remote_test").read_text() == f"{busy}\n"
    assert (queue.path / "hold" / held).stat().st_mtime == NOW + 3600  # hold is left alone


def test_bad_lines_in_a_log_are_skipped(queue: Spool, logs: FlushLogs) -> None:
    good = message(queue, QueueName.DEFERRED, NOW + 3600)
    (logs.directory / "remote_test").write_text(f"../../etc/passwd\n\n{good}\nnot an id\n")
    assert logs.send_site("remote.test") == 1


def test_a_site_without_a_log_has_nothing_to_send(logs: FlushLogs) -> None:
    assert logs.send_site("never.test") == 0
    assert not (logs.directory / "never_test").exists()


def test_touch(queue: Spool, logs: FlushLogs) -> None:
    deferred = message(queue, QueueName.DEFERRED, NOW + 3600)
    assert logs.touch(deferred) is Touched.SCHEDULED
    assert logs.touch(message(queue, QueueName.INCOMING)) is Touched.ACTIVE
    assert logs.touch(message(queue, QueueName.HOLD)) is Touched.GONE
    assert logs.touch("4jZRh24lJmz2HSZT") is Touched.GONE


def test_a_log_that_is_a_link_is_refused(queue: Spool, logs: FlushLogs, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (logs.directory / "remote_test").symlink_to(target)
    with pytest.raises(OSError):
        logs.add("remote.test", message(queue, QueueName.DEFERRED))
    assert target.read_text() == ""


def test_housekeeping(queue: Spool, logs: FlushLogs) -> None:
    deferred = message(queue, QueueName.DEFERRED, NOW + 3600)
    stale, fresh = logs.directory / "stale_test", logs.directory / "fresh_test"
    for path in (stale, fresh):
        path.write_text(f"{deferred}\n")
    os.utime(stale, (NOW - 13 * 3600, NOW - 13 * 3600))
    os.utime(fresh, (NOW - 3600, NOW - 3600))
    old_empty, new_empty = logs.directory / "old_test", logs.directory / "new_test"
    old_empty.write_text("")
    new_empty.write_text("")
    os.utime(old_empty, (NOW - 8 * 86400, NOW - 8 * 86400))
    os.utime(new_empty, (NOW - 86400, NOW - 86400))
    (logs.directory / "Bad-Name").write_text("")

    assert logs.housekeeping(12 * 3600, 7 * 86400) == 1

    assert sorted(p.name for p in logs.directory.iterdir()) == [
        "fresh_test",
        "new_test",
        "stale_test",
    ]
    assert stale.read_text() == ""
    assert fresh.read_text() == f"{deferred}\n"
