"""The flush service's socket, its requests, and its housekeeping (see the package docstring).

Failure modes: `main` returns the exit status: 78 when main.cf does not parse or no
socket named `flush` was passed; 0 after max_idle seconds without a client or on
SIGTERM.  A client's trouble (a malformed frame, a stall, a caller that went away)
ends that connection with at most a warning; a log that cannot be written or read is
answered `fail` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sdmail.core.config import Config
from sdmail.core.flush_proto import (
    OP_ADD,
    OP_REFRESH,
    OP_SEND_FILE,
    OP_SEND_SITE,
    SOCKET_NAME,
    FlushDomains,
    FlushReply,
    FlushStatus,
    valid_site,
)
from sdmail.core.ipc import (
    MAX_HEADER,
    ConnectionClosed,
    ProtocolError,
    peer_credentials,
    read_frame,
    write_frame,
)
from sdmail.core.match_list import MatchListError
from sdmail.core.skeleton import (
    AsyncDaemonContext,
    Clients,
    ExitCode,
    Fatal,
    passed_socket,
    run_daemon_async,
)
from sdmail.core.spool import valid_queue_id
from sdmail.core.tables.table import TableError
from sdmail.core.trigger import FLUSH_DEAD, SCAN_DEFERRED, trigger
from sdmail.core.user_acl import exempt_uids, refused_user
from sdmail.flush.logs import FlushLogs, Touched

PROGRAM = "flush"
QMGR_SOCKET = "qmgr"
HOUSEKEEPING_INTERVAL: Final = 1000.0  # seconds, as Postfix's master wakes flush
# Forget dead destinations (the site that sent ETRN is up again), then scan deferred/.
QMGR_REQUESTS: Final = FLUSH_DEAD + SCAN_DEFERRED
_STOP_GRACE: Final = 10.0


@dataclass(frozen=True)
class FlushSettings:
    """The parameters the service reads; field names are parameter names."""

    queue_directory: str
    socket_directory: str
    fast_flush_domains: tuple[str, ...]
    parent_domain_matches_subdomains: tuple[str, ...]
    fast_flush_refresh_time: int
    fast_flush_purge_time: int
    authorized_flush_users: tuple[str, ...]
    mail_owner: str
    ipc_timeout: int


class Flush:
    """The running service: its settings, its domain list, its logs, its connections."""

    def __init__(self, ctx: AsyncDaemonContext[FlushSettings]) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.domains = self._domains(self.settings)
        self.logs = FlushLogs(self.settings.queue_directory)
        try:
            self.logs.ensure_directory()
        except OSError as exc:
            ctx.logger.warning("cannot create %s: %s", self.logs.directory, exc.strerror or exc)
        self.clients = Clients(ctx)

    @staticmethod
    def _domains(settings: FlushSettings) -> FlushDomains:
        try:
            return FlushDomains(
                settings.fast_flush_domains, settings.parent_domain_matches_subdomains
            )
        except MatchListError as exc:
            raise Fatal(str(exc), ExitCode.CONFIG) from None

    def reload(self, cfg: Config) -> None:
        """The new settings; a domain list that cannot be built keeps the old one."""
        settings = self.ctx.settings
        try:
            domains = FlushDomains(
                settings.fast_flush_domains, settings.parent_domain_matches_subdomains
            )
        except MatchListError as exc:
            self.ctx.logger.warning("%s; keeping the previous fast_flush_domains", exc)
            return
        self.settings, self.domains = settings, domains
        self.logs = FlushLogs(settings.queue_directory)

    # -- work of its own -----------------------------------------------------------------
    async def housekeeping(self) -> None:
        """Refresh and purge at start (a timer starts the service for it) and then
        every HOUSEKEEPING_INTERVAL seconds while it runs."""
        while True:
            await self._refresh()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    # -- one connection -------------------------------------------------------------------
    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self.clients.serve(writer, self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_credentials(writer.get_extra_info("socket")).uid
        timeout = self.settings.ipc_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = await read_frame(reader, max_payload=0)
                answer = await self.answer(uid, frame.header)
                if answer is not None:
                    await write_frame(writer, answer.header())
        except ConnectionClosed:
            return
        except ProtocolError as exc:
            self.ctx.logger.warning("uid=%d: %s", uid, exc)
            with contextlib.suppress(OSError):
                await write_frame(writer, FlushReply(FlushStatus.BAD, "malformed request").header())
        except TimeoutError:
            self.ctx.logger.warning("uid=%d: timeout after %ds", uid, timeout)
        except OSError:
            pass  # the client went away (an `add` does not wait for the answer)

    async def answer(self, uid: int, request: dict[str, Any]) -> FlushReply | None:
        """The reply to REQUEST from UID (None to an `add`, whose sender does not wait)."""
        op = request.get("op")
        if op == OP_ADD:
            await self._add(uid, request.get("site"), request.get("queue_id"))
            return None
        if op not in (OP_SEND_SITE, OP_SEND_FILE, OP_REFRESH):
            return FlushReply(FlushStatus.BAD, f"unknown request {str(op)[:30]!r}")
        refused = self._refusal(uid)
        if refused is not None:
            return refused
        if op == OP_SEND_SITE:
            return await self._send_site(request.get("site"))
        if op == OP_SEND_FILE:
            return await self._send_file(request.get("queue_id"))
        return await self._refresh()

    def _refusal(self, uid: int) -> FlushReply | None:
        s = self.settings
        try:
            refused = refused_user(
                s.authorized_flush_users,
                uid,
                parameter="authorized_flush_users",
                exempt=exempt_uids(s.mail_owner),
            )
        except (MatchListError, TableError) as exc:
            self.ctx.logger.warning("authorized_flush_users: %s; request refused", exc)
            return FlushReply(FlushStatus.FAIL, "authorized_flush_users is unavailable")
        if refused is None:
            return None
        text = f"User {refused}({uid}) is not allowed to flush the mail queue"
        self.ctx.logger.warning("%s", text)
        return FlushReply(FlushStatus.REFUSED, text)

    def _eligible(self, site: str) -> bool | None:
        """Whether SITE is in fast_flush_domains; None when a table failed (logged)."""
        try:
            return self.domains.eligible(site)
        except (MatchListError, TableError) as exc:
            self.ctx.logger.warning("fast_flush_domains: %s", exc)
            return None

    async def _add(self, uid: int, site: object, queue_id: object) -> None:
        # Only qmgr (mail_owner) and root may add: a user could otherwise fill the logs.
        if uid not in exempt_uids(self.settings.mail_owner):
            self.ctx.logger.warning("uid=%d: add request refused", uid)
            return
        if not isinstance(site, str) or not valid_site(site):
            return
        if not isinstance(queue_id, str) or not valid_queue_id(queue_id):
            return
        if not self._eligible(site):
            return
        try:
            await asyncio.to_thread(self.logs.add, site, queue_id)
        except OSError as exc:
            self.ctx.logger.warning(
                "%s: cannot add to the fast flush log of %s: %s", queue_id, site, exc
            )

    async def _send_site(self, site: object) -> FlushReply:
        if not isinstance(site, str) or not valid_site(site):
            return FlushReply(FlushStatus.BAD, "invalid site name")
        eligible = self._eligible(site)
        if eligible is None:
            return FlushReply(FlushStatus.FAIL, "fast_flush_domains is unavailable")
        if not eligible:
            return FlushReply(FlushStatus.DENY)
        try:
            scheduled = await asyncio.to_thread(self.logs.send_site, site)
        except OSError as exc:
            self.ctx.logger.warning("cannot send the fast flush log of %s: %s", site, exc)
            return FlushReply(FlushStatus.FAIL, str(exc))
        self.ctx.logger.info("site %s: %d deferred messages made due", site.lower(), scheduled)
        if scheduled:
            await self._wake_qmgr()
        return FlushReply(FlushStatus.OK)

    async def _send_file(self, queue_id: object) -> FlushReply:
        if not isinstance(queue_id, str) or not valid_queue_id(queue_id):
            return FlushReply(FlushStatus.BAD, "invalid queue ID")
        try:
            touched = await asyncio.to_thread(self.logs.touch, queue_id)
        except OSError as exc:
            self.ctx.logger.warning("%s: cannot update time stamps: %s", queue_id, exc)
            return FlushReply(FlushStatus.FAIL, str(exc))
        if touched is Touched.GONE:
            return FlushReply(FlushStatus.NOT_FOUND)
        if touched is Touched.SCHEDULED:
            await self._wake_qmgr()
        return FlushReply(FlushStatus.OK)

    async def _refresh(self) -> FlushReply:
        s = self.settings
        try:
            scheduled = await asyncio.to_thread(
                self.logs.housekeeping, s.fast_flush_refresh_time, s.fast_flush_purge_time
            )
        except OSError as exc:
            self.ctx.logger.warning("fast flush housekeeping: %s", exc)
            return FlushReply(FlushStatus.FAIL, str(exc))
        if scheduled:
            await self._wake_qmgr()
        return FlushReply(FlushStatus.OK)

    async def _wake_qmgr(self) -> None:
        path = f"{self.settings.socket_directory}/{QMGR_SOCKET}"
        if not await asyncio.to_thread(trigger, path, QMGR_REQUESTS):
            # The files are due now: qmgr's next deferred scan takes them.
            self.ctx.logger.warning("cannot wake qmgr at %s; mail goes at its next scan", path)


async def serve(ctx: AsyncDaemonContext[FlushSettings]) -> int | None:
    listener = passed_socket(SOCKET_NAME, PROGRAM)
    service = Flush(ctx)
    ctx.add_reload_hook(service.reload)
    server = await asyncio.start_unix_server(
        service.handle_connection, sock=listener, limit=MAX_HEADER + 1
    )
    housekeeping = asyncio.ensure_future(service.housekeeping())
    ctx.ready()
    try:
        await service.clients.run_until_idle()
    finally:
        server.close()
        housekeeping.cancel()
        await service.clients.finish(_STOP_GRACE)
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon_async(PROGRAM, argv, serve, settings=FlushSettings)
