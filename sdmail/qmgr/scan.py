"""qmgr's directory scanners: passes over incoming/ or deferred/, a batch of names at a time.

A `QueueScan` walks one queue directory in passes (Postfix's qmgr_scan).  A pass
reads the directory lazily, BATCH_SIZE names at a time, so a deferred queue of a
million files costs a million names over time, never at once.  Asking for a scan
while a pass runs asks for one more pass after it (requests in between merge),
so a file that arrived after the pass began is not missed.  A pass may ignore
the files' time stamps (`A` trigger), and a flush pass (`F` trigger) delivers
over defer_transports too: each flag belongs to the pass it was asked for.

`recover_active` is qmgr's start: every file left in active/ by an earlier qmgr
goes back to incoming/ with its time stamp set to now.

`next_name()` is non-blocking; `read_batch()` does the directory reading and
belongs in a worker thread.  Failure modes: `read_batch` and `recover_active`
pass on `SpoolError`/`OSError` when the directory cannot be read.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Iterator

from sdmail.core.records import QueueName
from sdmail.core.spool import NoSuchQueueFile, Spool, SpoolError

BATCH_SIZE = 1000

log = logging.getLogger("sdmail.qmgr")


class QueueScan:
    """Passes over one queue directory; see the module docstring."""

    def __init__(self, queue: Spool, name: QueueName, batch_size: int = BATCH_SIZE) -> None:
        self.spool = queue
        self.queue = name
        self.batch_size = batch_size
        self.running = False
        self.ignore_time = False  # this pass takes files whatever their time stamp
        self.flush = False  # this pass delivers over defer_transports too
        self.passes = 0  # passes finished
        self.seen = 0  # names the current pass read so far
        self.last_seen: int | None = None  # names the last finished pass read
        self._names: Iterator[str] | None = None
        self._exhausted = False
        self._buffer: deque[str] = deque()
        self._again = False
        self._again_ignore_time = False
        self._again_flush = False

    def request(self, *, ignore_time: bool = False, flush: bool = False) -> None:
        """Start a pass, or ask for one more after the pass that runs."""
        if self.running:
            self._again = True
            self._again_ignore_time |= ignore_time
            self._again_flush |= flush
            return
        self._start(ignore_time, flush)

    def _start(self, ignore_time: bool, flush: bool) -> None:
        self.running = True
        self.ignore_time = ignore_time
        self.flush = flush
        self.seen = 0
        self._names = None
        self._exhausted = False

    def next_name(self) -> str | None:
        """The next name of the pass if one was read; None when a read is needed or no
        pass runs (see `needs_read`)."""
        if self._buffer:
            return self._buffer.popleft()
        if self.running and self._exhausted:
            self._end_pass()
        return None

    def needs_read(self) -> bool:
        return self.running and not self._buffer and not self._exhausted

    def pending(self) -> bool:
        """True while names are buffered or a pass runs."""
        return bool(self._buffer) or self.running

    def read_batch(self) -> None:
        """Read the next batch of names into the buffer (blocking)."""
        if not self.needs_read():
            return
        if self._names is None:
            self._names = self.spool.list_queue(self.queue)
        batch = list(itertools.islice(self._names, self.batch_size))
        self._buffer.extend(batch)
        self.seen += len(batch)
        if len(batch) < self.batch_size:
            self._close_names()
            self._exhausted = True

    def abandon(self) -> None:
        """End the pass now (its directory could not be read); a later request starts anew."""
        self._close_names()
        self._buffer.clear()
        self._again = self._again_ignore_time = self._again_flush = False
        self.running = False
        self._exhausted = False

    def _close_names(self) -> None:
        names, self._names = self._names, None
        if names is not None and hasattr(names, "close"):
            names.close()

    def _end_pass(self) -> None:
        self.running = False
        self.passes += 1
        self.last_seen = self.seen
        if self._again:
            again = (self._again_ignore_time, self._again_flush)
            self._again = self._again_ignore_time = self._again_flush = False
            self._start(*again)


def recover_active(queue: Spool) -> int:
    """Move every file of active/ back to incoming/, time stamp now; return how many."""
    moved = 0
    active = queue.path / QueueName.ACTIVE.value
    for queue_id in list(queue.list_queue(QueueName.ACTIVE)):
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            os.utime(active / queue_id, (now, now), follow_symlinks=False)
        try:
            queue.move(queue_id, QueueName.ACTIVE, QueueName.INCOMING)
        except NoSuchQueueFile:
            continue
        except SpoolError as exc:
            log.warning("%s; left in active", exc)
            continue
        moved += 1
    return moved
