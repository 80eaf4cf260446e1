"""pickup's life: watch maildrop/, drain it, and exit when it has stayed empty.

The loop: watch maildrop/ with inotify (IN_MOVED_TO: postdrop's rename;
IN_CLOSE_WRITE and IN_CREATE: anything else put there, a symlink or a FIFO
included), then drain it once; after that, drain again whenever an event names a
queue ID (or the kernel's event queue overflowed), and every `--wakeup`
seconds (60, the wakeup column of Postfix's master.cf for pickup) retry what was
deferred and rescan, as the backstop for events inotify could not deliver. Each
drain that moved a file counts as one use of `max_use` and restarts the
`max_idle` clock. pickup exits when max_idle passed (or max_use was reached)
with no file left to retry, no event pending, and a last look finding maildrop/
empty of anything it could process; never in the middle of a message. systemd's
path unit (DirectoryNotEmpty) starts it again for the next file.

SIGTERM ends the drain between two files; SIGHUP builds a new cleanup from the
re-read main.cf (queue_directory and socket_directory are read at start only).
Without inotify (the per-user limit of instances reached) pickup scans at every
wakeup, and says so.

Failure modes: `main` returns the exit status: 0 after an idle exit or SIGTERM,
78 for a bad main.cf or a queue directory it cannot open at start, 75 when
maildrop/ cannot be read any more while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sdmail.cleanup.api import Cleanup
from sdmail.core.config import Config
from sdmail.core.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DONT_FOLLOW,
    IN_IGNORED,
    IN_MOVED_TO,
    IN_ONLYDIR,
    Event,
    Inotify,
    InotifyError,
)
from sdmail.core.records import QueueName
from sdmail.core.skeleton import (
    CONFIGURATION_ERRORS,
    ExitCode,
    Fatal,
    PlainDaemonContext,
    option_parser,
    run_daemon,
)
from sdmail.core.spool import Spool, SpoolError, valid_queue_id
from sdmail.pickup.drain import Drain, DrainReport

PROGRAM: Final = "pickup"
WAKEUP_INTERVAL: Final = 60.0  # Postfix's master.cf: pickup unix n - y 60 1 pickup
WATCHED_EVENTS: Final = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE
QMGR_SOCKET: Final = "qmgr"


@dataclass(frozen=True)
class PickupSettings:
    """The parameters pickup reads itself; field names are parameter names."""

    queue_directory: str
    socket_directory: str


class MaildropWatch:
    """The inotify watch on maildrop/, re-made when it is lost; None-safe without inotify."""

    def __init__(self, inotify: Inotify | None, maildrop: Path, logger: logging.Logger) -> None:
        self.inotify = inotify
        self.maildrop = maildrop
        self.logger = logger
        self.wd: int | None = None

    @property
    def active(self) -> bool:
        return self.wd is not None

    def ensure(self) -> bool:
        """Watch maildrop/ if it is not watched; True when a watch was (re)made."""
        if self.inotify is None or self.wd is not None:
            return False
        try:
            self.wd = self.inotify.add_watch(
                self.maildrop, WATCHED_EVENTS | IN_ONLYDIR | IN_DONT_FOLLOW
            )
        except InotifyError as exc:
            self.logger.warning("cannot watch %s: %s; scanning it on wakeups", self.maildrop, exc)
            return False
        return True

    def descriptors(self) -> list[int]:
        return [self.inotify.fileno()] if self.inotify is not None else []

    def news(self) -> bool:
        """Read pending events; True when one asks for a drain."""
        if self.inotify is None:
            return False
        return any([self._asks_for_drain(event) for event in self.inotify.read_events()])

    def _asks_for_drain(self, event: Event) -> bool:
        if event.overflow:
            return True
        if event.wd == self.wd and event.mask & IN_IGNORED:
            self.logger.warning("%s is no longer watched; scanning it on wakeups", self.maildrop)
            self.wd = None
            return False
        return event.wd == self.wd and bool(event.name) and valid_queue_id(event.name)


class Pickup:
    """The loop of one pickup process."""

    def __init__(
        self,
        ctx: PlainDaemonContext[PickupSettings],
        drain: Drain,
        watch: MaildropWatch,
        wakeup: float,
    ) -> None:
        self.ctx = ctx
        self.drain = drain
        self.watch = watch
        self.wakeup = wakeup

    def run(self) -> int:
        self.watch.ensure()  # before the first scan, so that no file slips between the two
        self.ctx.ready()  # watching: what a test (or an admin) may rely on from here
        full, news = True, False
        next_wakeup = time.monotonic() + self.wakeup
        while True:
            if full or news:
                self._drain(retry=full)
            if self.ctx.stopping:
                return ExitCode.OK
            full, news = False, self.watch.news()
            if not news and self._may_exit():
                return ExitCode.OK
            if not news:
                self._sleep(next_wakeup)
                if self.ctx.wait(0):
                    return ExitCode.OK
                news = self.watch.news()
            if time.monotonic() >= next_wakeup:
                self.watch.ensure()
                full = True
                next_wakeup = time.monotonic() + self.wakeup

    def _drain(self, *, retry: bool) -> DrainReport:
        try:
            report = self.drain.drain(retry=retry, stop=lambda: self.ctx.stopping)
        except (SpoolError, OSError) as exc:
            raise Fatal(f"cannot read the maildrop queue: {exc}", ExitCode.TEMPFAIL) from None
        if report.handled:
            with self.ctx.lifetime.use():
                pass  # one use, and the idle clock starts again now
        return report

    def _may_exit(self) -> bool:
        if self.drain.deferred or not self.ctx.lifetime.should_exit():
            return False
        try:
            return not self.drain.waiting()  # the last look: a file may be between events
        except (SpoolError, OSError):
            return True

    def _sleep(self, next_wakeup: float) -> None:
        """Wait for an event, a signal, the next wakeup or the idle exit, whichever is first."""
        timeout = max(0.0, next_wakeup - time.monotonic())
        if not self.drain.deferred:
            idle = self.ctx.lifetime.seconds_until_idle_exit()
            if idle is not None:
                timeout = min(timeout, idle)
        wakeup_fd = self.ctx.wakeup_fd
        readable, _, _ = select.select([*self.watch.descriptors(), wakeup_fd], [], [], timeout)
        if wakeup_fd in readable:
            _empty_pipe(wakeup_fd)


def _empty_pipe(fd: int) -> None:
    # The signal handlers have run by now (before select returned); the skeleton's wait(0)
    # acts on them but leaves their bytes in its wake-up pipe, which would keep every later
    # select() returning at once.
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def serve(ctx: PlainDaemonContext[PickupSettings]) -> int:
    settings = ctx.settings
    wakeup: float = ctx.options.wakeup
    spool = Spool(settings.queue_directory)
    with spool:
        _check_maildrop(spool)
        drain = Drain(
            spool, Cleanup(ctx.config, spool), Path(settings.socket_directory) / QMGR_SOCKET
        )

        def reload(cfg: Config) -> None:
            try:
                drain.cleanup = Cleanup(cfg, spool)
            except CONFIGURATION_ERRORS as exc:
                ctx.logger.warning("%s; cleanup keeps the previous configuration", exc)

        ctx.add_reload_hook(reload)
        inotify = _inotify(ctx)
        try:
            watch = MaildropWatch(inotify, spool.path / QueueName.MAILDROP.value, ctx.logger)
            return Pickup(ctx, drain, watch, wakeup).run()
        finally:
            if inotify is not None:
                inotify.close()


def _check_maildrop(spool: Spool) -> None:
    try:
        for _queue_id in spool.list_queue(QueueName.MAILDROP):
            break
    except (SpoolError, OSError) as exc:
        raise Fatal(f"cannot read the maildrop queue: {exc}", ExitCode.CONFIG) from None


def _inotify(ctx: PlainDaemonContext[PickupSettings]) -> Inotify | None:
    try:
        return Inotify()
    except InotifyError as exc:
        ctx.logger.warning("no inotify (%s); scanning maildrop on wakeups only", exc)
        return None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad number of seconds: {text!r}") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"wakeup must be between 0 and 86400 seconds: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "Move locally submitted mail from maildrop/ through cleanup.")
    parser.add_argument(
        "--wakeup",
        type=_seconds,
        default=WAKEUP_INTERVAL,
        metavar="SECONDS",
        help="rescan and retry interval (master.cf's wakeup column)",
    )
    return run_daemon(PROGRAM, argv, serve, settings=PickupSettings, parser=parser)
