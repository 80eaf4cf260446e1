"""qmgr's scheduler: which delivery goes out next, and when a destination or transport rests.

The scheduler holds the deliveries that wait (each an ENTRY: one delivery request's
worth of one message's recipients) in one queue per destination, and destinations
per transport, as Postfix's qmgr does.  `next_pick` hands out the next delivery:
transports take turns, and within a transport the destinations with work take
turns (round robin), so one busy destination cannot starve the others.  A
destination runs at most `window` deliveries at once; the window starts at
initial_destination_concurrency and moves between 1 and the destination
concurrency limit with the feedback of each finished delivery (Postfix's slow
start: a success adds `positive_feedback(window)` to a success counter, a site
failure takes `negative_feedback(window)` from a failure counter; each whole unit
moves the window by one).  A transport runs at most `process_limit` deliveries
at once (master.cf's process limit).

A destination rate delay (`*_destination_rate_delay`) pauses a destination for
that long after each delivery to it ends, so that mail trickles out; the
destination's concurrency is then 1 (transports.py sees to that).  The pause is
kept while the destination has nothing to send, so that new mail waits for it too.

A destination whose failed pseudo-cohorts (a site failure counts 1/window) reach
the failed cohort limit is DEAD for `destination_rest` seconds: what waits for it,
and what is added meanwhile, is handed back to be deferred with "delivery
temporarily suspended: <last error>".  A transport whose agent cannot be reached is
dead for `retry_time` seconds in the same way.  `forget_dead` (the `F` trigger)
revives them all.

This module does no I/O and reads no configuration: time comes from the clock it
is given (tests pass a fake one), limits from a `TransportPolicy`.  The retry and
expiry arithmetic of deferred mail (`retry_delay`, `is_expired`) lives here too.

Failure modes: `parse_feedback` raises ValueError for a feedback value it does not
know; `Scheduler.finished` and `Scheduler.transport_failed` raise ValueError for a
pick that is not out (a programming error).  Nothing else raises.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sdmail.core.dsn import Status

E = TypeVar("E")

Feedback = Callable[[float], float]

SUSPENDED_PREFIX = "delivery temporarily suspended: "
_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)?(?:\.[0-9]+)?")


def parse_feedback(text: str) -> Feedback:
    """The feedback function of a `*_concurrency_*_feedback` value.

    Postfix's forms: a number (`1`, `0.5`), `1/concurrency`, `1/sqrt_concurrency`, or
    `1/N` for a fixed N.  The function takes the current window.
    """
    value = text.strip().replace(" ", "")
    if value == "1/concurrency":
        return lambda window: 1.0 / max(window, 1.0)
    if value == "1/sqrt_concurrency":
        return lambda window: 1.0 / math.sqrt(max(window, 1.0))
    numerator, slash, denominator = value.partition("/")
    try:
        number = _positive_number(numerator)
        if slash:
            number /= _positive_number(denominator)
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"bad concurrency feedback {text!r}: expected a number, 1/N,"
            " 1/concurrency or 1/sqrt_concurrency"
        ) from None
    return lambda window: number


def _positive_number(text: str) -> float:
    if not text or not _NUMBER.fullmatch(text):
        raise ValueError(text)
    number = float(text)
    if number <= 0:
        raise ValueError(text)
    return number


def retry_delay(age: float, minimal_backoff: float, maximal_backoff: float) -> float:
    """How long deferred mail of AGE seconds rests: its age, clamped to the backoff limits.

    Because the rest equals the age, the interval roughly doubles with every retry.
    """
    return min(max(age, minimal_backoff), maximal_backoff)


def is_expired(now: float, arrival: float, lifetime: float) -> bool:
    """True when mail that arrived at ARRIVAL has been queued LIFETIME seconds (0: try once)."""
    return now >= arrival + lifetime


@dataclass(frozen=True)
class TransportPolicy:
    """How deliveries over one transport are limited (from `<transport>_*` or `default_*`)."""

    recipient_limit: int
    concurrency_limit: int
    initial_concurrency: int
    process_limit: int
    positive_feedback: Feedback
    negative_feedback: Feedback
    failed_cohort_limit: float
    retry_time: float
    destination_rest: float
    rate_delay: float = 0.0  # pause after each delivery to one destination


def destination_key(policy: TransportPolicy, nexthop: str, recipient: str) -> str:
    """The queue a recipient waits in: its next hop, or itself when each request carries one
    recipient (Postfix's rule, so that local's concurrency limit is per recipient)."""
    return (recipient if policy.recipient_limit == 1 else nexthop).lower()


@dataclass(frozen=True)
class Pick(Generic[E]):
    """A delivery handed out: give it back with `finished` or `transport_failed`."""

    transport: str
    destination: str
    entry: E


@dataclass
class _Destination(Generic[E]):
    name: str
    window: int
    todo: deque[E] = field(default_factory=deque)
    busy: int = 0
    success: float = 0.0
    failure: float = 0.0
    fail_cohorts: float = 0.0
    dead_until: float | None = None
    reason: Status | None = None
    paused_until: float | None = None  # the rate delay after a delivery
    in_ready: bool = False


@dataclass
class _Transport(Generic[E]):
    name: str
    policy: TransportPolicy
    destinations: dict[str, _Destination[E]] = field(default_factory=dict)
    ready: deque[_Destination[E]] = field(default_factory=deque)
    busy: int = 0
    dead_until: float | None = None
    reason: Status | None = None


class Scheduler(Generic[E]):
    """Per-destination queues of waiting deliveries, with concurrency windows and rests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._transports: dict[str, _Transport[E]] = {}
        self._turns: deque[str] = deque()
        self._wakeups: list[tuple[float, str, str]] = []  # (when, transport, destination or "")

    # -- adding work ---------------------------------------------------------------------
    def add(
        self, transport: str, policy: TransportPolicy, destination: str, entry: E
    ) -> Status | None:
        """Queue ENTRY for DESTINATION over TRANSPORT; the Status to defer it with when the
        destination or transport is resting (ENTRY is then not queued)."""
        self._revive_due()
        t = self._transport(transport, policy)
        if t.dead_until is not None:
            return t.reason
        d = t.destinations.get(destination)
        if d is None:
            d = _Destination(destination, min(policy.initial_concurrency, policy.concurrency_limit))
            t.destinations[destination] = d
        if d.dead_until is not None:
            return d.reason
        d.todo.append(entry)
        self._make_ready(t, d)
        return None

    def _transport(self, name: str, policy: TransportPolicy) -> _Transport[E]:
        t = self._transports.get(name)
        if t is None:
            t = _Transport(name, policy)
            self._transports[name] = t
            self._turns.append(name)
        else:
            t.policy = policy  # a reload may have changed the limits
        return t

    @staticmethod
    def _make_ready(t: _Transport[E], d: _Destination[E]) -> None:
        if (
            not d.in_ready
            and d.todo
            and d.dead_until is None
            and d.paused_until is None
            and d.busy < d.window
        ):
            d.in_ready = True
            t.ready.append(d)

    # -- handing out work ----------------------------------------------------------------
    def next_pick(self) -> Pick[E] | None:
        """The next delivery to start, or None when every queue waits or is at its limit."""
        self._revive_due()
        for _ in range(len(self._turns)):
            name = self._turns[0]
            self._turns.rotate(-1)
            pick = self._pick_from(self._transports[name])
            if pick is not None:
                return pick
        return None

    def _pick_from(self, t: _Transport[E]) -> Pick[E] | None:
        if t.dead_until is not None or t.busy >= t.policy.process_limit:
            return None
        while t.ready:
            d = t.ready.popleft()
            d.in_ready = False
            if (
                not d.todo
                or d.dead_until is not None
                or d.paused_until is not None
                or d.busy >= d.window
            ):
                continue
            entry = d.todo.popleft()
            d.busy += 1
            t.busy += 1
            self._make_ready(t, d)  # to the back of the line: round robin
            return Pick(t.name, d.name, entry)
        return None

    # -- results -------------------------------------------------------------------------
    def finished(self, pick: Pick[E], *, site_failure: Status | None = None) -> list[E]:
        """PICK is done.  SITE_FAILURE (the destination itself failed) is negative feedback,
        anything else positive; a destination still alive then pauses for the rate delay.
        Returns the entries to defer now because the destination died of it (with
        `suspension_reason`)."""
        t, d = self._release(pick)
        if site_failure is None:
            self._positive(t.policy, d)
            drained = []
        else:
            drained = self._negative(t, d, site_failure)
        if d.dead_until is None:
            self._pause(t, d)
            self._make_ready(t, d)
            self._drop_if_idle(t, d)
        return drained

    def _pause(self, t: _Transport[E], d: _Destination[E]) -> None:
        if t.policy.rate_delay > 0:
            until = self._clock() + t.policy.rate_delay
            d.paused_until = until
            heapq.heappush(self._wakeups, (until, t.name, d.name))

    def transport_failed(self, pick: Pick[E], reason: Status) -> list[E]:
        """PICK's agent could not be reached or died: the transport rests for its retry
        time.  Returns every entry that waited for the transport, to defer with REASON."""
        t, _ = self._release(pick)
        return self._kill_transport(t, reason)

    def _release(self, pick: Pick[E]) -> tuple[_Transport[E], _Destination[E]]:
        t = self._transports.get(pick.transport)
        d = t.destinations.get(pick.destination) if t is not None else None
        if t is None or d is None or d.busy == 0:
            raise ValueError(f"no delivery out for {pick.transport}/{pick.destination}")
        d.busy -= 1
        t.busy -= 1
        return t, d

    @staticmethod
    def _positive(policy: TransportPolicy, d: _Destination[E]) -> None:
        d.fail_cohorts = 0.0
        if d.window >= policy.concurrency_limit:
            d.window = policy.concurrency_limit
            return
        # Growing the window only pays while it is nearly used (Postfix's rule).
        if d.window < d.busy + 1 + policy.initial_concurrency:
            d.success += policy.positive_feedback(d.window)
            while d.success >= 1:
                d.window += 1
                d.success -= 1
                d.failure = 0.0
            d.window = min(d.window, policy.concurrency_limit)

    def _negative(self, t: _Transport[E], d: _Destination[E], failure: Status) -> list[E]:
        policy = t.policy
        d.fail_cohorts += 1.0 / max(d.window, 1)
        if d.fail_cohorts >= policy.failed_cohort_limit:
            return self._kill_destination(t, d, failure)
        d.failure -= policy.negative_feedback(d.window)
        while d.failure < 0:
            d.window -= 1
            d.failure += 1
            d.success = 0.0
        d.window = max(d.window, 1)
        return []

    def _kill_destination(self, t: _Transport[E], d: _Destination[E], failure: Status) -> list[E]:
        until = self._clock() + t.policy.destination_rest
        d.dead_until = until
        d.reason = suspension_reason(failure)
        heapq.heappush(self._wakeups, (until, t.name, d.name))
        drained = list(d.todo)
        d.todo.clear()
        return drained

    def _kill_transport(self, t: _Transport[E], reason: Status) -> list[E]:
        until = self._clock() + t.policy.retry_time
        t.dead_until = until
        t.reason = reason
        heapq.heappush(self._wakeups, (until, t.name, ""))
        drained: list[E] = []
        for d in t.destinations.values():
            drained.extend(d.todo)
            d.todo.clear()
            d.in_ready = False
        t.ready.clear()
        for d in list(t.destinations.values()):
            self._drop_if_idle(t, d)
        return drained

    def _drop_if_idle(self, t: _Transport[E], d: _Destination[E]) -> None:
        if not d.todo and d.busy == 0 and d.dead_until is None and d.paused_until is None:
            t.destinations.pop(d.name, None)

    # -- rests ---------------------------------------------------------------------------
    def reason_of(self, transport: str, destination: str) -> Status | None:
        """Why the destination (or its transport) rests, or None when it does not."""
        self._revive_due()
        t = self._transports.get(transport)
        if t is None:
            return None
        if t.dead_until is not None:
            return t.reason
        d = t.destinations.get(destination)
        return d.reason if d is not None and d.dead_until is not None else None

    def forget_dead(self) -> None:
        """Revive every resting destination and transport, and end every rate-delay
        pause (the `F` trigger)."""
        for t in self._transports.values():
            self._revive_transport(t)
            for d in list(t.destinations.values()):
                self._resume_destination(t, d)
                self._revive_destination(t, d)
        self._wakeups.clear()

    def next_wakeup(self) -> float | None:
        """When (on the scheduler's clock) the next rest ends, or None."""
        self._revive_due()
        return self._wakeups[0][0] if self._wakeups else None

    def _revive_due(self) -> None:
        now = self._clock()
        while self._wakeups and self._wakeups[0][0] <= now:
            when, transport, destination = heapq.heappop(self._wakeups)
            t = self._transports.get(transport)
            if t is None:
                continue
            if not destination:
                if t.dead_until == when:
                    self._revive_transport(t)
                continue
            d = t.destinations.get(destination)
            if d is not None and d.dead_until == when:
                self._revive_destination(t, d)
            elif d is not None and d.paused_until == when:
                self._resume_destination(t, d)

    @staticmethod
    def _revive_transport(t: _Transport[E]) -> None:
        t.dead_until = None
        t.reason = None

    def _resume_destination(self, t: _Transport[E], d: _Destination[E]) -> None:
        if d.paused_until is None:
            return
        d.paused_until = None
        self._make_ready(t, d)
        self._drop_if_idle(t, d)

    def _revive_destination(self, t: _Transport[E], d: _Destination[E]) -> None:
        if d.dead_until is None:
            return
        d.dead_until = None
        d.reason = None
        d.fail_cohorts = d.success = d.failure = 0.0
        d.window = min(t.policy.initial_concurrency, t.policy.concurrency_limit)
        self._make_ready(t, d)
        self._drop_if_idle(t, d)

    # -- counts --------------------------------------------------------------------------
    def busy(self, transport: str | None = None) -> int:
        """Deliveries out, over TRANSPORT or in all."""
        if transport is not None:
            t = self._transports.get(transport)
            return t.busy if t is not None else 0
        return sum(t.busy for t in self._transports.values())

    def waiting(self) -> int:
        """Entries queued and not yet handed out."""
        return sum(len(d.todo) for t in self._transports.values() for d in t.destinations.values())

    def window(self, transport: str, destination: str) -> int | None:
        """The destination's current concurrency window (None when it has no queue)."""
        t = self._transports.get(transport)
        d = t.destinations.get(destination) if t is not None else None
        return d.window if d is not None else None


def suspension_reason(failure: Status) -> Status:
    """The reason given to mail for a destination that rests after FAILURE: always a
    temporary one, since the mail waiting was never tried."""
    text = failure.text
    if not text.startswith(SUSPENDED_PREFIX):
        text = SUSPENDED_PREFIX + text
    dsn = failure.dsn if failure.is_temporary else "4" + failure.dsn[1:]
    return Status(dsn, text)
