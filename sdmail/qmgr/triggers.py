"""qmgr's public trigger socket: wake-ups and flush requests (Postfix's public/qmgr).

A client connects to `$socket_directory/qmgr`, writes request bytes (core/trigger:
`W` wake up, `I` scan incoming, `D` scan deferred, `A` ignore time stamps on the
next deferred scan, `F` forget dead destinations and transports) and closes.
`TriggerServer` reads at most MAX_REQUEST bytes from each connection, for at most
READ_TIMEOUT seconds, and hands them, de-duplicated and in the order qmgr acts on
them (F and A before D and I, as Postfix), to its callback.

The socket is public (any local user may connect; `postqueue -f` runs as the
user), so the flush requests (F, A, D) are honoured only for a caller that
authorized_flush_users lets in, by the uid the kernel reports (SO_PEERCRED);
root and mail_owner always may.  A wake-up (W, I) is harmless and open to all.
Unknown bytes are ignored.

Failure modes: none raised into the event loop; a refused flush is a logged
warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from sdmail.core.ipc import peer_credentials
from sdmail.core.match_list import MatchListError
from sdmail.core.tables.table import TableError
from sdmail.core.trigger import FLUSH_DEAD, SCAN_ALL, SCAN_DEFERRED, SCAN_INCOMING, WAKEUP
from sdmail.core.user_acl import refused_user

MAX_REQUEST = 1024
READ_TIMEOUT = 5.0
ORDER = (FLUSH_DEAD, SCAN_ALL, SCAN_DEFERRED, SCAN_INCOMING, WAKEUP)
FLUSH_REQUESTS = frozenset((FLUSH_DEAD, SCAN_ALL, SCAN_DEFERRED))

log = logging.getLogger("sdmail.qmgr")


def ordered_requests(data: bytes) -> list[bytes]:
    """The known requests in DATA, each once, in the order qmgr acts on them."""
    present = {data[i : i + 1] for i in range(len(data))}
    return [request for request in ORDER if request in present]


class TriggerServer:
    """Serves the listening socket SOCK; calls ON_REQUESTS(requests) for each client."""

    def __init__(
        self,
        sock: socket.socket,
        on_requests: Callable[[list[bytes]], None],
        flush_acl: Callable[[], tuple[tuple[str, ...], frozenset[int]]],
    ) -> None:
        self.sock = sock
        self.on_requests = on_requests
        self.flush_acl = flush_acl
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, sock=self.sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(reader.read(MAX_REQUEST), READ_TIMEOUT)
            uid = _peer_uid(writer)
        except (TimeoutError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        requests = ordered_requests(data)
        if any(r in FLUSH_REQUESTS for r in requests) and not self._may_flush(uid):
            requests = [r for r in requests if r not in FLUSH_REQUESTS]
        if requests:
            self.on_requests(requests)

    def _may_flush(self, uid: int | None) -> bool:
        if uid is None:
            return False
        acl, exempt = self.flush_acl()
        try:
            refused = refused_user(acl, uid, parameter="authorized_flush_users", exempt=exempt)
        except (MatchListError, TableError) as exc:
            log.warning("authorized_flush_users: %s; flush request refused", exc)
            return False
        if refused is not None:
            log.warning("flush request from %s(%d) refused by authorized_flush_users", refused, uid)
            return False
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        return peer_credentials(sock).uid
    except OSError:
        return None
