"""Open connections kept between deliveries to one destination (Postfix's scache, in-process).

After a clean transaction a session is stored under its destination's label (transport and
next hop) instead of being closed, and the next request for that destination takes it
(after an RSET probe, in smtp/delivery.py) instead of connecting, greeting and saying
EHLO again: connection reuse for several messages to one destination within the agent's
lifetime. A session waits at most smtp_connection_cache_time_limit idle (then QUIT), is
not stored once it is older than smtp_connection_reuse_time_limit or has carried
smtp_connection_reuse_count_limit messages, and TLS sessions are stored only with
smtp_tls_connection_reuse = yes.

When to cache (`begin`, Postfix's smtp_cache_policy): always, loading and storing, for a
destination in smtp_connection_cache_destinations (matched as Postfix does, by the first
next hop's bare domain, or the socket path of LMTP over a UNIX-domain socket, which must
be listed through a table since a `/path` item names a file of patterns); never with
smtp_connection_cache_on_demand = no; otherwise on demand, for a destination that is
busy. Postfix's qmgr decides "busy" (qmgr_entry_select) and tells the agent; here the
agent itself applies the same rule, since this one process sees every request of its
transport: caching (load and store) is turned on for a destination when a request for it
comes within a second of the previous one's end (back-to-back deliveries), and storing is
turned off again when a request comes neither back-to-back nor while another request for
the destination is in progress; loading stays on, so that no new connection is made
while cached ones wait. A destination idle for longer, with nothing cached, starts over.

Failure modes: none; a session that fails while it waits is closed and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from sdmail.smtp.session import Session
from sdmail.smtp.settings import ClientSettings

_BACK_TO_BACK = 1.0  # seconds: Postfix's BACK_TO_BACK_DELIVERY()
_DEMAND_ENTRIES = 1000  # past this many destinations, forget idle ones


@dataclass(frozen=True)
class CachePolicy:
    """Whether one request may take a cached session (LOAD) and keep its own (STORE)."""

    load: bool = False
    store: bool = False


@dataclass
class _Demand:
    """One destination's on-demand state: requests in progress, the last one's end."""

    busy: int = 0
    last_done: float = float("-inf")
    load: bool = False
    store: bool = False


class ConnectionCache:
    def __init__(self) -> None:
        self._idle: dict[str, list[tuple[Session, float]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._demand: dict[str, _Demand] = {}

    # -- when to cache ------------------------------------------------------------------------
    def begin(self, label: str, settings: ClientSettings, *, always: bool) -> CachePolicy:
        """A request for LABEL starts: what it may do with the cache. ALWAYS: the
        destination is in smtp_connection_cache_destinations. Pair with `end`."""
        now = time.monotonic()
        demand = self._demand.get(label)
        if demand is None or (
            demand.busy == 0 and demand.last_done + _BACK_TO_BACK < now and label not in self._idle
        ):
            self._forget_idle_destinations(now)
            demand = self._demand[label] = _Demand()
        demand.busy += 1
        back_to_back = demand.last_done + _BACK_TO_BACK >= now
        if not demand.store:
            if back_to_back:
                demand.load = demand.store = True
        elif demand.busy == 1 and not back_to_back:
            demand.store = False
        if always:
            return CachePolicy(load=True, store=True)
        if not settings.cache_on_demand:
            return CachePolicy()
        return CachePolicy(load=demand.load, store=demand.store)

    def end(self, label: str) -> None:
        """A request for LABEL is done (it may have stored a session)."""
        demand = self._demand.get(label)
        if demand is not None:
            demand.busy = max(0, demand.busy - 1)
            demand.last_done = time.monotonic()

    def _forget_idle_destinations(self, now: float) -> None:
        if len(self._demand) < _DEMAND_ENTRIES:
            return
        for label, demand in list(self._demand.items()):
            stale = demand.busy == 0 and demand.last_done + _BACK_TO_BACK < now
            if stale and label not in self._idle:
                del self._demand[label]

    # -- the sessions -------------------------------------------------------------------------

    def take(self, label: str) -> Session | None:
        """The most recently stored usable session for LABEL, or None."""
        stored = self._idle.get(label)
        while stored:
            session, _ = stored.pop()
            if session.usable:
                if not stored:
                    del self._idle[label]
                return session
            self._close_later(session, 0.0)
        self._idle.pop(label, None)
        return None

    def store(self, label: str, session: Session, settings: ClientSettings) -> bool:
        """Keep SESSION for LABEL when the settings allow (the caller asked `begin` whether
        to store at all); False: the caller closes it."""
        if not session.usable:
            return False
        if session.tls and not settings.tls.connection_reuse:
            return False
        age = time.monotonic() - session.created
        if age >= settings.reuse_time_limit:
            return False
        if settings.reuse_count_limit and session.deliveries >= settings.reuse_count_limit:
            return False
        stored_at = time.monotonic()
        self._idle.setdefault(label, []).append((session, stored_at))
        loop = asyncio.get_running_loop()
        loop.call_later(
            settings.cache_time_limit,
            self._expire,
            label,
            session,
            stored_at,
            settings.quit_timeout,
        )
        return True

    def _expire(self, label: str, session: Session, stored_at: float, quit_timeout: float) -> None:
        stored = self._idle.get(label, [])
        if (session, stored_at) in stored:
            stored.remove((session, stored_at))
            if not stored:
                self._idle.pop(label, None)
            self._close_later(session, quit_timeout)

    def _close_later(self, session: Session, quit_timeout: float) -> None:
        task = asyncio.get_running_loop().create_task(
            session.quit(quit_timeout, wait_for_reply=False)
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def __len__(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def close_all(self, quit_timeout: float) -> None:
        """QUIT every idle session (the agent is exiting)."""
        sessions = [s for stored in self._idle.values() for s, _ in stored]
        self._idle.clear()
        closing: list[Awaitable[None]] = [
            s.quit(quit_timeout, wait_for_reply=False) for s in sessions
        ]
        closing += list(self._closing)
        with contextlib.suppress(Exception):
            await asyncio.gather(*closing, return_exceptions=True)
