"""The postdrop daemon: the socket, one request per connection, the reply.

One process serves every connection with asyncio: reading a frame costs nothing
while the client sends it, and many sendmail calls at once need no process or
thread each.  The decision and the durable write of each message (table
lookups, the password file, `Spool.create` with its fsyncs) run in the event
loop's worker threads, so concurrent submissions share directory fsyncs through
the spool's group commit and the loop never blocks on the disk.

Each connection: SO_PEERCRED gives the uid; one frame is read (header limit
core/ipc.MAX_HEADER, payload limit message_size_limit: a bigger payload is read
and thrown away, then refused); `SubmitPolicy` decides and builds the envelope;
`Spool.create(maildrop, ...)` writes the file; one reply frame goes back
(`mail_stream.accepted` or `mail_stream.refused`); the connection is closed.

Failure modes: `main` returns the exit status: 78 (EX_CONFIG) for a bad main.cf,
list or table, or when no socket named "postdrop" was passed; 0 after max_idle
seconds without a connection or after SIGTERM (connections in progress are
finished first).  A client that sends a malformed frame gets a 5xx refusal when
it can still read one; a client that goes away is forgotten; neither is more
than a warning in the log.  A table that cannot be read or a queue write that
fails is a 4xx refusal.  Nothing half-written is ever left under a queue ID.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from sdmail.core.config import Config, bind
from sdmail.core.ipc import (
    MAX_HEADER,
    ConnectionClosed,
    ProtocolError,
    parse_header,
    peer_credentials,
    write_frame,
)
from sdmail.core.log import msg_info
from sdmail.core.mail_stream import SubmitRequest, accepted, refused
from sdmail.core.match_list import MatchListError
from sdmail.core.records import QueueName
from sdmail.core.skeleton import (
    AsyncDaemonContext,
    Clients,
    ExitCode,
    passed_socket,
    run_daemon_async,
)
from sdmail.core.spool import Spool, SpoolError
from sdmail.core.tables.table import TableError
from sdmail.postdrop.policy import PostdropSettings, Refusal, SubmitPolicy, submitter_of

PROGRAM = "postdrop"
SOCKET_NAME = "postdrop"
_DISCARD_CHUNK = 1 << 16
_STOP_GRACE_SECONDS = 30.0

TOO_BIG = (552, "5.3.4", "Error: message file too big")
WRITE_ERROR = (451, "4.3.0", "Error: queue file write error")
LOOKUP_ERROR = (451, "4.3.0", "Error: temporary lookup table failure")
BAD_REQUEST = (500, "5.5.2", "Error: malformed submission request")


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon_async(PROGRAM, argv, serve, settings=PostdropSettings)


async def serve(ctx: AsyncDaemonContext[PostdropSettings]) -> int | None:
    listener = passed_socket(SOCKET_NAME, PROGRAM)
    service = Postdrop(ctx)
    ctx.add_reload_hook(service.reload)
    server = await asyncio.start_unix_server(
        service.handle_connection, sock=listener, limit=MAX_HEADER + 1
    )
    ctx.ready()
    try:
        await service.clients.run_until_idle()
    finally:
        server.close()
        await service.clients.finish(_STOP_GRACE_SECONDS)
        service.close()
    return ExitCode.OK


class Postdrop:
    """The state of the running daemon: its policy, its spool, its connections."""

    def __init__(self, ctx: AsyncDaemonContext[PostdropSettings]) -> None:
        self.ctx = ctx
        self.policy = SubmitPolicy(ctx.settings)
        self.spool = Spool(ctx.settings.queue_directory)
        self.clients = Clients(ctx)

    def close(self) -> None:
        self.policy.close()
        self.spool.close()

    def reload(self, cfg: Config) -> None:
        """A new policy (and spool, if queue_directory changed) for the new configuration;
        one whose lists or tables cannot be opened keeps the old one in force."""
        settings = bind(PostdropSettings, cfg)
        try:
            policy = SubmitPolicy(settings)
        except (MatchListError, TableError) as exc:
            self.ctx.logger.warning("%s; keeping the previous submission policy", exc)
            return
        old_policy, self.policy = self.policy, policy
        old_policy.close()
        if settings.queue_directory != str(self.spool.path):
            old_spool, self.spool = self.spool, Spool(settings.queue_directory)
            old_spool.close()

    # -- one connection --------------------------------------------------------------------
    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self.clients.serve(writer, self._serve_connection(reader, writer))

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        uid = peer_credentials(writer.get_extra_info("socket")).uid
        settings = self.policy.settings
        try:
            async with asyncio.timeout(settings.ipc_timeout):
                header, content = await read_submission(reader, settings.message_size_limit)
                if content is None:
                    reply = self._refuse(uid, *TOO_BIG)
                else:
                    reply = await self._decide(uid, header, content)
                await write_frame(writer, reply)
        except ConnectionClosed:
            return
        except ProtocolError as exc:
            self.ctx.logger.warning("uid=%d: %s", uid, exc)
            with contextlib.suppress(OSError):
                await write_frame(writer, refused(*BAD_REQUEST))
        except TimeoutError:
            self.ctx.logger.warning("uid=%d: timeout after %ds", uid, settings.ipc_timeout)
        except OSError as exc:
            self.ctx.logger.warning("uid=%d: connection lost: %s", uid, exc.strerror or exc)

    async def _decide(self, uid: int, header: dict[str, Any], content: bytes) -> dict[str, Any]:
        req = SubmitRequest.from_header(header)  # ProtocolError when malformed
        return await asyncio.to_thread(self.submit, uid, req, content)

    def submit(self, uid: int, req: SubmitRequest, content: bytes) -> dict[str, Any]:
        """Decide about REQ from UID and write it to maildrop/; the reply header (blocking)."""
        policy, spool = self.policy, self.spool
        submitter = submitter_of(uid)
        try:
            envelope = policy.envelope(submitter, req, content)
        except Refusal as refusal:
            return self._refuse(uid, refusal.code, refusal.dsn, refusal.text)
        except (TableError, MatchListError) as exc:
            self.ctx.logger.warning("uid=%d: %s", uid, exc)
            return self._refuse(uid, *LOOKUP_ERROR)
        try:
            created = spool.create(QueueName.MAILDROP, envelope, content)
        except SpoolError as exc:
            self.ctx.logger.warning("uid=%d: %s", uid, exc)
            return self._refuse(uid, *WRITE_ERROR)
        if self.ctx.invocation.verbose:
            msg_info(created.queue_id, f"uid={uid} from=<{envelope.sender}>")
        return accepted(created.queue_id)

    def _refuse(self, uid: int, code: int, dsn: str, text: str) -> dict[str, Any]:
        self.ctx.logger.warning("uid=%d: reject: %d %s %s", uid, code, dsn, text)
        return refused(code, dsn, text)


async def read_submission(
    reader: asyncio.StreamReader, size_limit: int
) -> tuple[dict[str, Any], bytes | None]:
    """One frame's header and payload; payload None when it was over SIZE_LIMIT (0: none)
    and was read and thrown away.  ConnectionClosed / ProtocolError as core/ipc's."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionClosed("connection closed") from None
        raise ProtocolError("frame header cut short") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("frame header too long") from None
    header, length = parse_header(line, None)
    try:
        if size_limit and length > size_limit:
            await _discard(reader, length)
            return header, None
        return header, await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"payload cut short: {len(exc.partial)} of {length} bytes") from None


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length > 0:
        chunk = await reader.read(min(length, _DISCARD_CHUNK))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)
