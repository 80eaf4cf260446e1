"""qmgr's feeders taking queue files (sdmail/qmgr/service.py), on a real queue."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from sdmail.core.config import Config, load_config
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.qmgr.service import Qmgr

HOST = "mail.example.test"
MOVE_DELAY = 0.05


class SlowMoves(Spool):
    """A queue whose moves take a moment to begin, as under load: a feeder that has seen
    the file in incoming/ reaches the move after another feeder has already moved it."""

    def move(self, queue_id: str, from_queue: QueueName | str, to_queue: QueueName | str) -> None:
        time.sleep(MOVE_DELAY)
        super().move(queue_id, from_queue, to_queue)


class Context:
    """The skeleton's side of qmgr, as far as taking files needs it: the configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config


@pytest.fixture
def queue(tmp_path: Path) -> SlowMoves:
    directory = tmp_path / "queue"
    directory.mkdir()
    (tmp_path / "main.cf").write_text(
        f"myhostname = {HOST}\nqueue_directory = {directory}\n"
        f"socket_directory = {tmp_path / 'run'}\n"
    )
    spool = SlowMoves(directory)
    spool.create_directories()
    return spool


def put(spool: Spool) -> str:
    envelope = Envelope(f"joe@{HOST}", (Recipient(f"ann@{HOST}"),), arrival_sec=int(time.time()))
    return spool.create(QueueName.INCOMING, envelope, b"Subject: x\n\nbody\n").queue_id


def test_a_file_found_twice_at_once_is_taken_once_without_error(
    queue: SlowMoves, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two feeders with the same name: one from an incoming scan pass, one from the next
    # pass (or inotify) that listed the file again while the first was still taking it.
    caplog.set_level(logging.INFO)
    queue_id = put(queue)
    qmgr = Qmgr(Context(load_config(tmp_path)), queue, None)  # type: ignore[arg-type]
    qmgr.stopping = True  # no agent here: intake only, nothing handed out

    async def take_twice() -> None:
        await asyncio.gather(
            qmgr._take(QueueName.INCOMING, queue_id, False),
            qmgr._take(QueueName.INCOMING, queue_id, False),
        )

    asyncio.run(take_twice())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert queue.find(queue_id) is QueueName.ACTIVE
    assert list(qmgr.active) == [queue_id]
    taken = [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "queue_id", None) == queue_id and r.getMessage().endswith("(queue active)")
    ]
    assert len(taken) == 1
