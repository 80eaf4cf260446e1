"""qmgr's directory scanners and crash recovery (sdmail/qmgr/scan.py), on a real queue."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.qmgr.scan import QueueScan, recover_active


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    queue = Spool(tmp_path)
    queue.create_directories()
    return queue


def put(spool: Spool, queue: QueueName, count: int) -> set[str]:
    envelope = Envelope("joe@example.org", (Recipient("ann@example.org"),), arrival_sec=1)
    return {spool.create(queue, envelope, b"x\n").queue_id for _ in range(count)}


def run_pass(scan: QueueScan) -> list[str]:
    """The names of the pass that runs, up to its end (a pass asked for meanwhile begins)."""
    names = []
    passes = scan.passes
    while scan.passes == passes:
        name = scan.next_name()
        if name is not None:
            names.append(name)
        elif scan.needs_read():
            scan.read_batch()
        elif not scan.running:
            break
    return names


def test_a_pass_reads_the_directory_in_batches(spool: Spool) -> None:
    made = put(spool, QueueName.DEFERRED, 10)
    (spool.path / "deferred" / "not-a-queue-id").write_text("")
    scan = QueueScan(spool, QueueName.DEFERRED, batch_size=3)
    scan.request()
    scan.read_batch()
    assert scan.seen == 3  # one batch at a time, never the whole directory
    names = run_pass(scan)
    assert set(names) == made and len(names) == 10
    assert not scan.running and scan.passes == 1 and scan.last_seen == 10


def test_a_request_during_a_pass_asks_for_one_more(spool: Spool) -> None:
    put(spool, QueueName.INCOMING, 2)
    scan = QueueScan(spool, QueueName.INCOMING, batch_size=1)
    scan.request()
    scan.read_batch()
    late = put(spool, QueueName.INCOMING, 1)
    scan.request()
    scan.request()  # requests in between merge
    run_pass(scan)
    assert scan.passes == 1 and scan.running  # the second pass has begun
    second = run_pass(scan)
    assert late <= set(second)
    assert scan.passes == 2 and not scan.running


def test_ignoring_time_stamps_belongs_to_the_pass_it_was_asked_for(spool: Spool) -> None:
    put(spool, QueueName.DEFERRED, 1)
    scan = QueueScan(spool, QueueName.DEFERRED)
    scan.request()
    scan.request(ignore_time=True)
    assert not scan.ignore_time
    run_pass(scan)
    assert scan.running and scan.ignore_time
    run_pass(scan)
    scan.request()
    assert not scan.ignore_time


def test_a_flush_belongs_to_the_pass_it_was_asked_for_too(spool: Spool) -> None:
    put(spool, QueueName.DEFERRED, 1)
    scan = QueueScan(spool, QueueName.DEFERRED)
    scan.request(flush=True)
    assert scan.flush and not scan.ignore_time
    scan.request(ignore_time=True)  # the next pass: ignores time stamps, no flush
    run_pass(scan)
    assert (scan.running, scan.flush, scan.ignore_time) == (True, False, True)
    run_pass(scan)
    scan.request(flush=True)
    scan.request(flush=True, ignore_time=True)
    run_pass(scan)
    assert (scan.flush, scan.ignore_time) == (True, True)


def test_no_pass_no_names(spool: Spool) -> None:
    put(spool, QueueName.INCOMING, 1)
    scan = QueueScan(spool, QueueName.INCOMING)
    assert scan.next_name() is None and not scan.needs_read() and not scan.pending()


def test_an_abandoned_pass_starts_anew_on_request(spool: Spool) -> None:
    made = put(spool, QueueName.INCOMING, 3)
    scan = QueueScan(spool, QueueName.INCOMING, batch_size=2)
    scan.request()
    scan.read_batch()
    scan.abandon()
    assert not scan.pending()
    scan.request()
    assert set(run_pass(scan)) == made


def test_recovery_moves_active_back_to_incoming_with_a_fresh_time_stamp(spool: Spool) -> None:
    made = put(spool, QueueName.ACTIVE, 3)
    for name in made:
        os.utime(spool.path / "active" / name, (1, 1))
    assert recover_active(spool) == 3
    assert set(os.listdir(spool.path / "incoming")) == made
    assert os.listdir(spool.path / "active") == []
    for name in made:
        assert os.stat(spool.path / "incoming" / name).st_mtime == pytest.approx(time.time(), abs=5)
