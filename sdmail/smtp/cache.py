"""Open connections kept between deliveries to one destination (Postfix's scache, in-process).

After a clean transaction a session is stored under its destination's label (transport and
next hop) instead of being closed, and the next request for that destination takes it
(after an RSET probe, in smtp/delivery.py) instead of connecting, greeting and saying
EHLO again: connection reuse for several messages to one destination within the agent's
lifetime. A session waits at most smtp_connection_cache_time_limit idle (then QUIT), is
not stored once it is older than smtp_connection_reuse_time_limit or has carried
smtp_connection_reuse_count_limit messages, and TLS sessions are stored only with
smtp_tls_connection_reuse = yes. Postfix stores connections only when qmgr says a
destination is busy (smtp_connection_cache_on_demand); qmgr sends no such hint here, so
every clean session is stored for that short idle time when on-demand caching is on.

Failure modes: none; a session that fails while it waits is closed and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

from sdmail.smtp.session import Session
from sdmail.smtp.settings import ClientSettings


class ConnectionCache:
    def __init__(self) -> None:
        self._idle: dict[str, list[tuple[Session, float]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

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
        """Keep SESSION for LABEL when the settings allow; False: the caller closes it."""
        if not settings.cache_on_demand or not session.usable:
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
