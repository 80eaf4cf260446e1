"""Being told when files arrive in incoming/ and deferred/ (inotify, or polling without it).

`QueueWatch` watches both directories for IN_MOVED_TO (every queue file arrives
by a rename: cleanup's from its temporary name, qmgr's and postsuper's from
other queues).  A name arriving in incoming/ asks for an incoming scan; a name
arriving in deferred/ is handed over by name (qmgr looks at that one file, whose
time stamp says whether it is due), so that qmgr's own deferrals do not rescan a
large deferred queue.  When the kernel dropped events (IN_Q_OVERFLOW), both
directories are rescanned.

Without inotify (no C library support, or the per-user limit of instances
reached) it looks at incoming/'s modification time every POLL_INTERVAL seconds
and asks for a scan when it changed, and says so in the log; deferred/ is then
left to the deferred-queue timer and the `D` trigger.

Failure modes: none raised; a watch that cannot be made is a logged warning and
the polling fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sdmail.core.inotify import (
    IN_DONT_FOLLOW,
    IN_MOVED_TO,
    IN_ONLYDIR,
    Inotify,
    InotifyError,
)
from sdmail.core.records import QueueName
from sdmail.core.spool import valid_queue_id

POLL_INTERVAL = 1.0
_MASK = IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW

log = logging.getLogger("sdmail.qmgr")


class QueueWatch:
    """Calls ON_INCOMING() for arrivals in incoming/, ON_DEFERRED(name) for those in
    deferred/, and ON_OVERFLOW() when events were lost."""

    def __init__(
        self,
        queue_directory: Path,
        *,
        on_incoming: Callable[[], None],
        on_deferred: Callable[[str], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.incoming = queue_directory / QueueName.INCOMING.value
        self.deferred = queue_directory / QueueName.DEFERRED.value
        self.on_incoming = on_incoming
        self.on_deferred = on_deferred
        self.on_overflow = on_overflow
        self.inotify: Inotify | None = None
        self._wds: dict[int, QueueName] = {}
        self._poller: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def polling(self) -> bool:
        return self._poller is not None

    def start(self) -> None:
        """Begin watching (in the running event loop)."""
        self._loop = asyncio.get_running_loop()
        try:
            inotify = Inotify()
        except InotifyError as exc:
            self._start_polling(f"no inotify ({exc})")
            return
        try:
            self._wds[inotify.add_watch(self.incoming, _MASK)] = QueueName.INCOMING
            self._wds[inotify.add_watch(self.deferred, _MASK)] = QueueName.DEFERRED
        except InotifyError as exc:
            inotify.close()
            self._start_polling(f"cannot watch the queue ({exc})")
            return
        self.inotify = inotify
        self._loop.add_reader(inotify.fileno(), self._readable)

    def _start_polling(self, why: str) -> None:
        log.warning("%s; polling incoming every %g s", why, POLL_INTERVAL)
        assert self._loop is not None
        self._poller = self._loop.create_task(self._poll())

    def _readable(self) -> None:
        assert self.inotify is not None
        try:
            events = self.inotify.read_events()
        except InotifyError as exc:
            log.warning("reading queue events: %s; rescanning", exc)
            self.on_overflow()
            return
        incoming = False
        for event in events:
            if event.overflow:
                self.on_overflow()
                continue
            queue = self._wds.get(event.wd)
            if queue is None or not valid_queue_id(event.name):
                continue
            if queue is QueueName.INCOMING:
                incoming = True
            else:
                self.on_deferred(event.name)
        if incoming:
            self.on_incoming()

    async def _poll(self) -> None:
        last: int | None = None
        while True:
            try:
                mtime = os.stat(self.incoming).st_mtime_ns
            except OSError:
                mtime = None
            if mtime != last:
                last = mtime
                self.on_incoming()
            await asyncio.sleep(POLL_INTERVAL)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self.inotify is not None:
            if self._loop is not None:
                with contextlib.suppress(ValueError, RuntimeError):
                    self._loop.remove_reader(self.inotify.fileno())
            self.inotify.close()
            self.inotify = None
