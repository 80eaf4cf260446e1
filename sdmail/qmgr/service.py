"""qmgr's life: recover, watch, take messages in, hand them to agents, and finish them.

At start every file an earlier qmgr left in active/ goes back to incoming/
(scan.recover_active), then both queues are scanned and systemd hears READY=1
with `STATUS=active N, incoming N, deferred N` (updated about once a second
while qmgr runs).

Four feeders take messages into the active queue while it holds fewer than
qmgr_message_active_limit of them, taking turns between the incoming scan, the
deferred scan and the deferred files inotify named, so that a deferred backlog
cannot starve new mail (intake.take does the work).  A queue ID is taken by one
feeder at a time: a name found again while it is being taken or is active (the
next scan pass, inotify) is passed over.  A message is read in batches of
qmgr_message_recipient_limit recipients; when a batch has its results, its
failures are reported to the sender and the next batch is read (Postfix's
order), and no further message is taken in while that many recipients are held.
A batch's recipients are grouped by (transport, next hop) into requests of at most the transport's
recipient limit and queued in the scheduler (schedule.py); every delivery the
scheduler hands out is one connection to the agent (dispatch.py).  Results:
`sent` needs nothing more (the agent marked the recipient done and logged it),
`deferred` and `bounced` go to the defer and bounce logs (message.StatusLogs).
An agent that cannot be reached, or dies without an answer, defers its
recipients with 4.3.0 and rests its transport for transport_retry_time; a
destination whose site failures pile up rests for minimal_backoff_time, its
waiting mail deferred with "delivery temporarily suspended".  When every
recipient of a message has a result, finish.Finisher expires, notifies, defers
or removes it.

Transports in defer_transports are not delivered to (intake.py defers their
recipients with "deferred transport") unless a flush took the message in: the
`F` trigger (`postqueue -f`, `sendmail -q`) marks the next incoming and deferred
scan passes as flushes, as Postfix's qmgr does.  A destination rate delay pauses
a destination after each delivery (schedule.py).

Wake-ups: inotify on incoming/ and deferred/ (watch.py), the trigger socket
(triggers.py), a deferred scan every queue_run_delay, an incoming scan as well as
a backstop, and a timer for incoming files whose time stamp is in the future (a
message an agent of an earlier qmgr still held).  SIGHUP rebuilds the resolver,
the cleanup library used for notices and the transport limits from the re-read
main.cf (queue_directory and socket_directory are read at start only); one that
cannot be used (a table that does not open, a bad limit of a class transport)
fails the reload and qmgr goes on with the old configuration.  SIGTERM
ends qmgr at once: what is in active/ is recovered by the next start, and the
agents finish what they were given, marking recipients done under their lock.

Failure modes: `serve` returns 0 on SIGTERM; a bad main.cf or a queue directory
that cannot be read at start end it with 78 (EX_CONFIG).  A failure with one
message (an unexpected exception, a file that cannot be moved) is logged with
the message's queue ID and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import astuple, dataclass, field
from typing import Any, Final

from sdmail.bounce.notify import BounceError, BounceSettings, Notifier
from sdmail.cleanup.api import Cleanup
from sdmail.core import systemd
from sdmail.core.config import Config, ConfigError, bind
from sdmail.core.deliver_request import (
    DEFERRED,
    SENT,
    DeliveryRequest,
    DeliveryResult,
)
from sdmail.core.dsn import Status
from sdmail.core.log import log_traceback
from sdmail.core.records import QueueName
from sdmail.core.skeleton import AsyncDaemonContext, ExitCode, Fatal
from sdmail.core.spool import Spool, SpoolError, valid_queue_id
from sdmail.core.trigger import FLUSH_DEAD, SCAN_ALL, SCAN_DEFERRED, SCAN_INCOMING, WAKEUP
from sdmail.core.user_acl import exempt_uids
from sdmail.qmgr import dispatch
from sdmail.qmgr.fastflush import FastFlushLog
from sdmail.qmgr.finish import Finished, Finisher, FinishSettings
from sdmail.qmgr.intake import (
    STILL_BEING_DELIVERED_DELAY,
    Intake,
    IntakeSettings,
    Outcome,
    read_all_recipients,
    read_more,
    take,
)
from sdmail.qmgr.message import ActiveMessage, StatusLogs, Todo
from sdmail.qmgr.scan import QueueScan, recover_active
from sdmail.qmgr.schedule import Pick, Scheduler, destination_key, suspension_reason
from sdmail.qmgr.transports import TransportPolicies
from sdmail.qmgr.triggers import TriggerServer
from sdmail.qmgr.watch import QueueWatch
from sdmail.trivial_rewrite.resolve import ResolveError, Resolver, ResolveSettings

PROGRAM: Final = "qmgr"
TRIGGER_SOCKET: Final = "qmgr"
FEEDERS: Final = 4
STATUS_INTERVAL: Final = 1.0
CONFIG_TROUBLE = Status("4.3.5", "mail system configuration error")
CLASS_TRANSPORTS: Final = (
    "local_transport",
    "virtual_transport",
    "relay_transport",
    "default_transport",
)

log = logging.getLogger("sdmail.qmgr")


@dataclass(frozen=True)
class QmgrSettings:
    """The parameters qmgr reads itself; field names are parameter names."""

    queue_directory: str
    socket_directory: str
    qmgr_message_active_limit: int
    qmgr_message_recipient_limit: int
    queue_run_delay: int
    daemon_timeout: int
    delay_logging_resolution_limit: int
    double_bounce_sender: str
    authorized_flush_users: tuple[str, ...]
    mail_owner: str
    defer_transports: tuple[str, ...]


class Setup:
    """What qmgr builds from one configuration; a reload builds a new one."""

    def __init__(self, cfg: Config, queue: Spool) -> None:
        self.settings = bind(QmgrSettings, cfg)
        try:
            self.resolver = Resolver(ResolveSettings.from_config(cfg))
        except ResolveError as exc:
            raise ConfigError(str(exc)) from None
        self.policies = TransportPolicies(cfg)
        for name in CLASS_TRANSPORTS:  # a bad limit of a transport in use stops a start or reload
            self.policies.policy(cfg.get(name).partition(":")[0])
        self.logs = StatusLogs(
            self.settings.queue_directory,
            self.settings.delay_logging_resolution_limit,
            FastFlushLog(cfg),
        )
        self.notifier = Notifier(Cleanup(cfg, queue), queue, bind(BounceSettings, cfg))
        self.finisher = Finisher(queue, self.notifier, self.logs, bind(FinishSettings, cfg))
        self.intake = IntakeSettings(
            self.settings.double_bounce_sender,
            self.settings.qmgr_message_recipient_limit,
            frozenset(self.settings.defer_transports),
        )
        self.flush_exempt = exempt_uids(self.settings.mail_owner)


@dataclass
class Entry:
    """One delivery request's worth: a message's recipients for one transport and next hop."""

    message: ActiveMessage
    todos: list[Todo]
    transport: str
    nexthop: str


@dataclass
class _Counts:
    deferred: int = 0
    deferred_passes: int = -1
    incoming: int = 0
    shown: str = ""


@dataclass(frozen=True)
class _Candidate:
    """A queue file to take in, with the flags of the scan pass that found it."""

    queue: QueueName
    name: str
    ignore_time: bool = False
    flush: bool = False


@dataclass
class _IncomingTimer:
    due: float | None = None
    handle: asyncio.TimerHandle | None = None


@dataclass
class _NamedDeferred:
    names: deque[str] = field(default_factory=deque)
    known: set[str] = field(default_factory=set)

    def add(self, name: str) -> None:
        if name not in self.known:
            self.known.add(name)
            self.names.append(name)

    def pop(self) -> str | None:
        if not self.names:
            return None
        name = self.names.popleft()
        self.known.discard(name)
        return name


class Qmgr:
    """The queue manager of one process; `run` serves until asked to stop."""

    def __init__(
        self,
        ctx: AsyncDaemonContext[QmgrSettings],
        queue: Spool,
        trigger_socket: socket.socket | None,
    ) -> None:
        self.ctx = ctx
        self.spool = queue
        self.setup = Setup(ctx.config, queue)
        self.settings = self.setup.settings  # queue and socket directories: from the start
        self.scheduler: Scheduler[Entry] = Scheduler()
        self.active: dict[str, ActiveMessage] = {}
        self.taking: set[str] = set()  # queue IDs a feeder is taking in now
        # Deferred files a flush found while their message was still active (its move
        # to deferred/ done, its end not yet seen here): taken once the end is seen, so
        # that a flush right after a deferral is not lost.  (Other passes would find
        # them not yet due.)
        self._found_early: dict[str, _Candidate] = {}
        self._found_again: deque[_Candidate] = deque()
        self._batched: set[str] = set()  # active messages read in more than one batch
        self.incoming = QueueScan(queue, QueueName.INCOMING)
        self.deferred = QueueScan(queue, QueueName.DEFERRED)
        self.named = _NamedDeferred()
        self.stopping = False
        self._trigger_socket = trigger_socket
        self._reserved = 0
        self._held = 0  # recipients of active messages without a result yet
        self._turn = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._read_locks = {
            QueueName.INCOMING: asyncio.Lock(),
            QueueName.DEFERRED: asyncio.Lock(),
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ignore_time_next = {QueueName.INCOMING: False, QueueName.DEFERRED: False}
        self._flush_next = dict.fromkeys(self._ignore_time_next, False)
        self._incoming_timer = _IncomingTimer()
        self._pump_handle: asyncio.TimerHandle | None = None
        self._counts = _Counts()
        self._config_warned: set[str] = set()

    # -- life ----------------------------------------------------------------------------
    async def run(self) -> int:
        moved = await asyncio.to_thread(recover_active, self.spool)
        if moved:
            log.info("moved %d message(s) left in the active queue back to incoming", moved)
        self.ctx.add_reload_hook(self._reload)
        watch = QueueWatch(
            self.spool.path,
            on_incoming=self._incoming_arrived,
            on_deferred=self._deferred_arrived,
            on_overflow=self._rescan_all,
        )
        watch.start()
        trigger = None
        if self._trigger_socket is not None:
            trigger = TriggerServer(self._trigger_socket, self._on_requests, self._flush_acl)
            await trigger.start()
        self.incoming.request()
        self.deferred.request()
        await self._update_counts()
        self.ctx.ready(self._counts.shown)
        for _ in range(FEEDERS):
            self._spawn(self._feeder())
        self._spawn(self._every(self.settings.queue_run_delay, self._deferred_timer))
        self._spawn(self._every(self.settings.queue_run_delay, self._incoming_backstop))
        self._spawn(self._status_loop())
        try:
            await self.ctx.stopped()
        finally:
            self.stopping = True
            watch.close()
            if trigger is not None:
                trigger.close()
            await self._cancel_all()
        return ExitCode.OK

    def _reload(self, cfg: Config) -> None:
        # A configuration error raised here fails the reload: the skeleton keeps the old one.
        self.setup = Setup(cfg, self.spool)
        self._config_warned.clear()

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("internal error: %s: %s", type(exc).__name__, exc)
            log_traceback(log, exc)

    async def _cancel_all(self) -> None:
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        if self._incoming_timer.handle is not None:
            self._incoming_timer.handle.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _every(self, seconds: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(seconds)
            action()

    # -- wake-ups ------------------------------------------------------------------------
    def _on_requests(self, requests: list[bytes]) -> None:
        for request in requests:
            if request == FLUSH_DEAD:
                self.scheduler.forget_dead()
                self._flush_next = dict.fromkeys(self._flush_next, True)
                self._pump()
            elif request == SCAN_ALL:
                self._ignore_time_next = dict.fromkeys(self._ignore_time_next, True)
            elif request == SCAN_DEFERRED:
                self._request_scan(self.deferred)
            elif request in (SCAN_INCOMING, WAKEUP):
                self._request_scan(self.incoming)

    def _request_scan(self, scan: QueueScan) -> None:
        ignore_time = self._ignore_time_next[scan.queue]
        flush = self._flush_next[scan.queue]
        self._ignore_time_next[scan.queue] = self._flush_next[scan.queue] = False
        scan.request(ignore_time=ignore_time, flush=flush)
        self._wake.set()

    def _flush_acl(self) -> tuple[tuple[str, ...], frozenset[int]]:
        return self.setup.settings.authorized_flush_users, self.setup.flush_exempt

    def _incoming_arrived(self) -> None:
        self._request_scan(self.incoming)

    def _deferred_arrived(self, name: str) -> None:
        self.named.add(name)
        self._wake.set()

    def _rescan_all(self) -> None:
        self._request_scan(self.incoming)
        self._request_scan(self.deferred)

    def _deferred_timer(self) -> None:
        self._request_scan(self.deferred)

    def _incoming_backstop(self) -> None:
        self._request_scan(self.incoming)

    def _incoming_due_at(self, due: float) -> None:
        """Scan incoming/ again when a file there with time stamp DUE is ready."""
        timer = self._incoming_timer
        if timer.due is not None and timer.due <= due and timer.due > time.time():
            return
        if timer.handle is not None:
            timer.handle.cancel()
        timer.due = due
        delay = max(0.0, due - time.time()) + 0.1
        timer.handle = asyncio.get_running_loop().call_later(delay, self._incoming_timer_fired)

    def _incoming_timer_fired(self) -> None:
        self._incoming_timer.due = self._incoming_timer.handle = None
        self._request_scan(self.incoming)

    # -- intake --------------------------------------------------------------------------
    async def _feeder(self) -> None:
        while True:
            while self._active_full():
                self._room.clear()
                await self._room.wait()
            self._reserved += 1
            try:
                candidate = await self._next_candidate()
                if candidate is not None:
                    await self._take(*astuple(candidate))
            finally:
                self._reserved -= 1
            if candidate is None and not self._has_candidates():
                self._wake.clear()
                await self._wake.wait()

    def _active_full(self) -> bool:
        """No room for one more message: qmgr_message_active_limit messages, or (with one
        message at least) qmgr_message_recipient_limit recipients are held."""
        settings = self.setup.settings
        messages = len(self.active) + self._reserved
        if messages >= settings.qmgr_message_active_limit:
            return True
        return messages > 0 and self._held >= settings.qmgr_message_recipient_limit

    def _has_candidates(self) -> bool:
        return (
            self.incoming.pending()
            or self.deferred.pending()
            or bool(self.named.names)
            or bool(self._found_again)
        )

    async def _next_candidate(self) -> _Candidate | None:
        for _ in range(3):
            turn, self._turn = self._turn, (self._turn + 1) % 3
            if turn == 0:
                found = await self._from_scan(self.incoming)
            elif turn == 1:
                found = await self._from_scan(self.deferred)
            elif self._found_again:
                found = self._found_again.popleft()
            else:
                name = self.named.pop()
                found = _Candidate(QueueName.DEFERRED, name) if name is not None else None
            if found is not None:
                return found
        return None

    async def _from_scan(self, scan: QueueScan) -> _Candidate | None:
        while True:
            name = scan.next_name()
            if name is not None:
                return _Candidate(scan.queue, name, scan.ignore_time, scan.flush)
            if not scan.needs_read():
                return None
            async with self._read_locks[scan.queue]:
                if not scan.needs_read():
                    continue
                try:
                    await asyncio.to_thread(scan.read_batch)
                except (SpoolError, OSError) as exc:
                    log.warning("cannot scan the %s queue: %s", scan.queue, exc)
                    scan.abandon()
                    return None

    async def _take(
        self, queue: QueueName, queue_id: str, ignore_time: bool, flush: bool = False
    ) -> None:
        # A name comes again while a feeder still takes it: the next scan pass lists the
        # file until it has left its queue, and inotify names deferred files the deferred
        # scan finds too.  A second take would find active/ID taken, fail, and put the
        # first one's file back to rest in incoming/.
        if queue_id in self.active and queue is QueueName.DEFERRED and (ignore_time or flush):
            self._found_early[queue_id] = _Candidate(queue, queue_id, ignore_time, flush)
            return
        if queue_id in self.active or queue_id in self.taking or not valid_queue_id(queue_id):
            return
        self.taking.add(queue_id)
        try:
            await self._take_one(_Candidate(queue, queue_id, ignore_time, flush))
        finally:
            self.taking.discard(queue_id)

    async def _take_one(self, candidate: _Candidate) -> None:
        setup = self.setup
        queue, queue_id = candidate.queue, candidate.name
        try:
            intake: Intake = await asyncio.to_thread(
                take,
                self.spool,
                queue,
                queue_id,
                now=time.time(),
                ignore_time=candidate.ignore_time,
                flush=candidate.flush,
                resolve=setup.resolver.resolve,
                logs=setup.logs,
                settings=setup.intake,
            )
        except Exception as exc:  # never let one file stop the daemon
            log.error("%s: cannot take from %s: %s: %s", queue_id, queue, type(exc).__name__, exc)
            log_traceback(log, exc)
            await asyncio.to_thread(_put_back, self.spool, queue_id)
            self._incoming_due_at(time.time() + STILL_BEING_DELIVERED_DELAY)
            return
        if intake.outcome is Outcome.TAKEN and intake.message is not None:
            if queue is QueueName.DEFERRED:
                self._counts.deferred = max(0, self._counts.deferred - 1)
            self.active[queue_id] = intake.message
            self._held += intake.message.outstanding
            self._schedule(intake.message)
        elif intake.due is not None and (
            queue is QueueName.INCOMING or intake.outcome is Outcome.LOCKED
        ):
            self._incoming_due_at(intake.due)

    # -- scheduling ----------------------------------------------------------------------
    def _schedule(self, message: ActiveMessage) -> None:
        groups: dict[tuple[str, str], list[Todo]] = {}
        for todo in message.todo:
            groups.setdefault((todo.transport, todo.nexthop), []).append(todo)
        message.todo = []
        refused: list[tuple[list[Todo], Status]] = []
        for (transport, nexthop), todos in groups.items():
            try:
                policy = self.setup.policies.policy(transport)
            except ConfigError as exc:
                if transport not in self._config_warned:
                    self._config_warned.add(transport)
                    log.warning("transport %s: %s", transport, exc)
                refused.append((todos, CONFIG_TROUBLE))
                continue
            for chunk in _chunks(todos, policy.recipient_limit):
                destination = destination_key(policy, nexthop, chunk[0].address)
                entry = Entry(message, chunk, transport, nexthop)
                reason = self.scheduler.add(transport, policy, destination, entry)
                if reason is not None:
                    refused.append((chunk, reason))
        if refused:
            self._spawn(self._defer_now(message, refused))
        elif message.outstanding == 0:
            self._round_done(message)
        self._pump()

    def _pump(self) -> None:
        if self.stopping:
            return
        while (pick := self.scheduler.next_pick()) is not None:
            self._spawn(self._deliver(pick))
        wakeup = self.scheduler.next_wakeup()
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        if wakeup is not None:
            self._pump_handle = asyncio.get_running_loop().call_at(wakeup, self._pump)

    async def _deliver(self, pick: Pick[Entry]) -> None:
        entry = pick.entry
        message = entry.message
        request = DeliveryRequest(
            queue_name=QueueName.ACTIVE.value,
            queue_id=message.queue_id,
            transport=entry.transport,
            nexthop=entry.nexthop,
            sender=message.sender,
            recipients=tuple(todo.request_recipient() for todo in entry.todos),
            arrival=message.arrival,
            queue_active_at=message.active_at,
            trace_flags=message.envelope.trace_flags,
        )
        settings = self.settings
        try:
            result = await dispatch.deliver(
                settings.socket_directory, request, timeout=self.setup.settings.daemon_timeout
            )
        except dispatch.TransportUnavailable as exc:
            log.warning("%s", exc)
            await self._transport_down(pick, dispatch.TRANSPORT_UNAVAILABLE)
            return
        except dispatch.TransportFailed as exc:
            log.warning("%s: %s", message.queue_id, exc)
            await self._transport_down(pick, dispatch.TRANSPORT_ERROR)
            return
        site_failure = _site_failure(result)
        drained = self.scheduler.finished(pick, site_failure=site_failure)
        self._pump()
        logs = self.setup.logs
        await asyncio.to_thread(_record_result, logs, entry, result)
        self._account(message, len(entry.todos))
        if drained and site_failure is not None:
            await self._defer_entries(drained, suspension_reason(site_failure))

    async def _transport_down(self, pick: Pick[Entry], reason: Status) -> None:
        drained = self.scheduler.transport_failed(pick, reason)
        self._pump()
        await self._defer_entries([pick.entry, *drained], reason)

    async def _defer_entries(self, entries: Iterable[Entry], reason: Status) -> None:
        by_message: dict[str, tuple[ActiveMessage, list[Todo]]] = {}
        for entry in entries:
            by_message.setdefault(entry.message.queue_id, (entry.message, []))[1].extend(
                entry.todos
            )
        for message, todos in by_message.values():
            await self._defer_now(message, [(todos, reason)])

    async def _defer_now(
        self, message: ActiveMessage, batches: list[tuple[list[Todo], Status]]
    ) -> None:
        logs = self.setup.logs

        def record() -> None:
            for todos, status in batches:
                for todo in todos:
                    logs.deferred(message, todo.settled(), status)

        await asyncio.to_thread(record)
        self._account(message, sum(len(todos) for todos, _ in batches))

    def _account(self, message: ActiveMessage, results: int) -> None:
        message.outstanding -= results
        self._held -= results
        if self._held < self.setup.settings.qmgr_message_recipient_limit:
            self._room.set()
        if message.outstanding == 0:
            self._round_done(message)

    def _round_done(self, message: ActiveMessage) -> None:
        """Every recipient of MESSAGE's batch has a result: the next batch, or the end."""
        if message.unread_offset is not None:
            self._spawn(self._next_batch(message))
        else:
            self._spawn(self._finish(message))

    async def _next_batch(self, message: ActiveMessage) -> None:
        setup = self.setup

        def read() -> str | None:
            # Postfix's order: this batch's failures are reported while the envelope
            # still holds their DSN details, then the next batch is read.
            notice = None
            try:
                notice = setup.notifier.send_non_delivery(
                    QueueName.ACTIVE, message.queue_id, message.envelope
                )
            except BounceError as exc:  # the log stays: the end of the message tries again
                log.warning("%s: %s; will try again", message.queue_id, exc)
            read_more(
                self.spool,
                message,
                resolve=setup.resolver.resolve,
                logs=setup.logs,
                settings=setup.intake,
            )
            return notice

        try:
            notice = await asyncio.to_thread(read)
        except Exception as exc:  # the file stays in active/ for the next start
            _left_in_active(message, "cannot read more recipients", exc)
            self.active.pop(message.queue_id, None)
            self._found_early.pop(message.queue_id, None)
            self._batched.discard(message.queue_id)
            self._room.set()
            return
        if notice is not None:
            self._request_scan(self.incoming)
        self._batched.add(message.queue_id)
        self._held += message.outstanding
        self._schedule(message)

    async def _finish(self, message: ActiveMessage) -> None:
        deferred = False
        batched = message.queue_id in self._batched
        self._batched.discard(message.queue_id)
        finisher = self.setup.finisher

        def finish() -> Finished:
            if batched:  # the notices match their records to every recipient's DSN details
                read_all_recipients(self.spool, message)
            return finisher.finish(message)

        try:
            finished = await asyncio.to_thread(finish)
        except Exception as exc:  # the file stays in active/ for the next start
            _left_in_active(message, "cannot finish the delivery round", exc)
        else:
            deferred = finished.deferred_until is not None
            if deferred:
                self._counts.deferred += 1
            if finished.notice is not None:
                self._request_scan(self.incoming)
        finally:
            self.active.pop(message.queue_id, None)
            self._room.set()
        early = self._found_early.pop(message.queue_id, None)
        if early is not None and deferred:
            self._found_again.append(early)
            self._wake.set()

    # -- status --------------------------------------------------------------------------
    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            shown = self._counts.shown
            await self._update_counts()
            if self._counts.shown != shown:
                self.ctx.set_status(self._counts.shown)

    async def _update_counts(self) -> None:
        counts = self._counts
        counts.incoming = await asyncio.to_thread(_count, self.spool, QueueName.INCOMING)
        if counts.deferred_passes != self.deferred.passes:
            counts.deferred_passes = self.deferred.passes
            counts.deferred = await asyncio.to_thread(_count, self.spool, QueueName.DEFERRED)
        counts.shown = (
            f"active {len(self.active)}, incoming {counts.incoming}, deferred {counts.deferred}"
        )


def _chunks(todos: list[Todo], size: int) -> Iterable[list[Todo]]:
    for start in range(0, len(todos), size):
        yield todos[start : start + size]


def _site_failure(result: DeliveryResult) -> Status | None:
    if not result.site_failure:
        return None
    for status in result.recipients:
        if status.status == DEFERRED:
            return status.as_status()
    return dispatch.TRANSPORT_ERROR


def _left_in_active(message: ActiveMessage, what: str, exc: Exception) -> None:
    """Log an unexpected failure that leaves MESSAGE's file in active/ for the next start."""
    log.error(
        "%s: %s: %s: %s; left in the active queue",
        message.queue_id,
        what,
        type(exc).__name__,
        exc,
    )
    log_traceback(log, exc)


def _record_result(logs: StatusLogs, entry: Entry, result: DeliveryResult) -> None:
    """The agent's answer into memory (the agent logged the delivery lines and wrote the
    status log records before its done marks)."""
    by_offset = {status.offset: status for status in result.recipients}
    message = entry.message
    for todo in entry.todos:
        status = by_offset.get(todo.request_recipient().offset)
        if status is None:
            logs.deferred(message, todo.settled(), dispatch.TRANSPORT_ERROR)
            continue
        record = logs.sent if status.status == SENT else logs.bounced
        if status.status == DEFERRED:
            record = logs.deferred
        record(
            message,
            todo.settled(),
            status.as_status(),
            relay=status.relay,
            log_line=False,
            by_agent=True,
        )


def _count(queue: Spool, name: QueueName) -> int:
    try:
        return sum(1 for _ in queue.list_queue(name))
    except (SpoolError, OSError):
        return 0


def _put_back(queue: Spool, queue_id: str) -> None:
    """After an unexpected failure: the file (if in active/) rests in incoming/ for a while."""
    due = time.time() + STILL_BEING_DELIVERED_DELAY
    with contextlib.suppress(OSError):
        os.utime(queue.path / QueueName.ACTIVE.value / queue_id, (due, due), follow_symlinks=False)
    with contextlib.suppress(SpoolError):
        queue.move(queue_id, QueueName.ACTIVE, QueueName.INCOMING)


def _check_queue(queue: Spool) -> None:
    for name in (QueueName.INCOMING, QueueName.ACTIVE, QueueName.DEFERRED):
        try:
            for _queue_id in queue.list_queue(name):
                break
        except (SpoolError, OSError) as exc:
            raise Fatal(f"cannot read the {name} queue: {exc}", ExitCode.CONFIG) from None


def _trigger_socket() -> socket.socket | None:
    for passed in systemd.listen_fds():
        if passed.name == TRIGGER_SOCKET:
            return socket.socket(fileno=passed.fd)
    return None


async def serve(ctx: AsyncDaemonContext[QmgrSettings]) -> int:
    settings = ctx.settings
    queue = Spool(settings.queue_directory)
    with queue:
        _check_queue(queue)
        try:
            trigger = _trigger_socket()
        except systemd.SystemdError as exc:
            raise Fatal(str(exc), ExitCode.CONFIG) from None
        if trigger is None:
            log.warning("no %s socket passed (LISTEN_FDS); wake-ups by timer only", TRIGGER_SOCKET)
        return await Qmgr(ctx, queue, trigger).run()
