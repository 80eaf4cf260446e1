"""smtpd's engine: aiosmtpd's protocol class, and every override of aiosmtpd's internals.

DESIGN.md asks that whatever replaces a part of aiosmtpd lives in one module: this one.
`SmtpdProtocol` subclasses `aiosmtpd.smtp.SMTP` for what it does well (the asyncio
protocol and stream plumbing, connection bookkeeping, and the end of the STARTTLS
transport switch, whose CVE-2024-34083 fix drops what a client pipelined after STARTTLS)
and replaces its command loop, because aiosmtpd's loop cannot give Postfix's behaviour:
it sends no enhanced status codes, upper-cases MAIL/RCPT parameters (DSN's ENVID and
ORCPT are case-sensitive), answers unknown parameters with 555 before any hook, has no
BDAT, refuses lines over 1001 octets, times a whole DATA transfer with one timer, and
cancels the session on a half-close even when commands are still buffered.

The overrides, each with why:
- `_handle_client`: the command loop. Reads a line (CRLF or bare LF; longer than
  line_length_limit it is cut, the rest of it thrown away, as Postfix's smtpd does), hands
  it to the Session in a worker thread, writes the Reply. Each read has its own
  smtpd_timeout (`421 4.4.2 ... timeout exceeded`, `timeout after STAGE from ...`).
  Detects improper pipelining by looking into the reader's buffer (`_reader._buffer`) after
  a command the client must wait on, and before the greeting (pregreet): logged as
  Postfix's `improper command pipelining after CMD from NAME[ADDR]: TEXT`, and with
  smtpd_forbid_unauth_pipelining answered `554 5.5.0 Error: SMTP protocol synchronization`
  and disconnected.
- message content: read with `readuntil(b"\\r\\n")` exactly as the CVE-2024-27305 fix
  does: only a line that is exactly `.` CRLF, starting right after a CRLF, ends DATA, so a
  bare LF, `\\n.\\n`, `\\r.\\n` or `\\n.\\r\\n` never ends a message and one DATA is never two
  messages. Lines of any length are kept whole (read in fragments of `line_length_limit`
  octets, the StreamReader's limit); content over message_size_limit is read and thrown
  away. BDAT chunks are read by count (`readexactly` in pieces), never as lines.
- `eof_received`: aiosmtpd cancels the session at once; here the reader gets its EOF and
  the loop first answers every command already received (a client that sends `QUIT` and
  half-closes gets its `221`). Over TLS a half-close cannot be kept open.
- STARTTLS (`_start_tls`): the body of aiosmtpd's `smtp_STARTTLS`, whose reply has no
  enhanced status code: `220 2.0.0 Ready to start TLS`, the plaintext read buffer dropped,
  the transport handed to an SSLProtocol whose handshake is timed by smtpd_timeout.
  aiosmtpd's `connection_made` (not overridden) finishes the switch once the handshake is
  done and drops the buffer again (its CVE-2024-34083 fix). A handshake that fails is
  logged (`SSL_accept error from NAME[ADDR]: reason`) and ends that session only.
- aiosmtpd's own session timer is given a duration no session reaches: each read is timed
  here instead.

`SmtpdServer` owns the process-wide state: the listeners' Services, the worker threads,
the per-client connection counts (smtpd_client_connection_count_limit, with
smtpd_client_event_limit_exceptions) and the lifetime (max_use, max_idle).

Failure modes: nothing a client sends raises out of a session; an unexpected exception in
a session is logged with its traceback and ends that session only (`421 4.3.0`), never
the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from asyncio import sslproto
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP

from sdmail.core.log import log_traceback
from sdmail.core.match_list import MatchListError, NetworkList
from sdmail.core.skeleton import Lifetime
from sdmail.smtpd import replies
from sdmail.smtpd.listeners import Service
from sdmail.smtpd.replies import Reply
from sdmail.smtpd.session import ChunkExpected, Client, Session
from sdmail.smtpd.tls import TlsInfo

log = logging.getLogger("sdmail.smtpd")

T = TypeVar("T")

# aiosmtpd times the whole session with one timer; ours times each read instead.
_ENGINE_TIMER_SECONDS = 365 * 24 * 3600.0
# The StreamReader's limit: the largest piece of a line read at once (lines may be longer).
READ_FRAGMENT = 64 * 1024
_CHUNK_PIECE = 64 * 1024
_SHOWN_PENDING = 100  # octets of unexpected input shown in the pipelining log line
_WORKER_THREADS = 32
_SETTLE_SECONDS = 0.05
_CUT_OFF_SECONDS = 5


class _Lost(Exception):
    """The client closed the connection or reset it."""


class _Stop(Exception):
    """The session ends now (after QUIT, 421, a synchronization error)."""


def lookup_client_name(address: str) -> str:
    """The verified host name of ADDRESS (reverse, then forward confirmed), else `unknown`."""
    try:
        name, _ = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return "unknown"
    if any(info[4][0] == address for info in infos):
        return name
    return "unknown"


class SmtpdServer:
    """The process: listeners' Services, worker threads, connection counts, lifetime."""

    def __init__(self, services: dict[str, Service], lifetime: Lifetime) -> None:
        self.services = services
        self.lifetime = lifetime
        self.executor = ThreadPoolExecutor(_WORKER_THREADS, thread_name_prefix="smtpd")
        self.connections: Counter[str] = Counter()
        self.protocols: set[SmtpdProtocol] = set()
        self._exceptions: dict[str, NetworkList] = {}

    def replace_services(self, services: dict[str, Service]) -> None:
        """A reload: new sessions use SERVICES; running ones keep theirs."""
        old, self.services = self.services, services
        for service in old.values():
            service.checks.close()  # idle policy connections; a running session opens anew
        self._exceptions = {}

    def protocol_factory(self, listener: str) -> Callable[[], SmtpdProtocol]:
        return lambda: SmtpdProtocol(self, listener)

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def exempt(self, service: Service, address: str) -> bool:
        """Whether ADDRESS is in smtpd_client_event_limit_exceptions."""
        if service.listener not in self._exceptions:
            items = service.config.get_list("smtpd_client_event_limit_exceptions")
            try:
                self._exceptions[service.listener] = NetworkList(
                    items, name="smtpd_client_event_limit_exceptions"
                )
            except MatchListError as exc:
                log.warning("%s", exc)
                self._exceptions[service.listener] = NetworkList([])
        return self._exceptions[service.listener].matches(address)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class SmtpdProtocol(SMTP):
    """One client connection; the dialogue itself is `session.Session`'s."""

    line_length_limit = READ_FRAGMENT

    def __init__(self, server: SmtpdServer, listener: str) -> None:
        self.server = server
        self.service = server.services[listener]
        super().__init__(
            _NoHooks(),
            hostname=self.service.settings.myhostname,
            timeout=_ENGINE_TIMER_SECONDS,
            loop=asyncio.get_running_loop(),
        )
        self.dialogue: Session | None = None
        self._message_octets = 0

    # -- aiosmtpd overrides ----------------------------------------------------------------
    def eof_received(self) -> bool | None:
        # aiosmtpd cancels the session here; buffered commands must still be answered.
        keep_open = bool(asyncio.StreamReaderProtocol.eof_received(self))
        # Over TLS a half-close cannot be kept (asyncio's SSL transport warns if asked to).
        return keep_open and self._tls_protocol is None

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session is not None else None
        address, port = _peer_address(peer)
        settings = self.service.settings
        lifetime = self.server.lifetime
        lifetime.begin_use()
        self.server.protocols.add(self)
        self.server.connections[address] += 1
        session: Session | None = None
        try:
            name = "unknown"
            if address and settings.smtpd_peername_lookup:
                name = await self.server.in_thread(lookup_client_name, address)
            local = self.transport.get_extra_info("sockname") if self.transport else None
            local_address, local_port = _peer_address(local)
            client = Client(name, address or "unknown", port, local_address or None, local_port)
            session = Session(self.service, client)
            self.dialogue = session
            log.info("connect from %s", session.namaddr)
            await self._serve(session)
        except asyncio.CancelledError:
            if session is not None:
                self._log_ending(session, "lost connection")
            raise
        except _Lost:
            if session is not None:
                self._log_ending(session, "lost connection")
        except TimeoutError:
            if session is not None:
                self._log_ending(session, "timeout")
                await self._send_last(session, replies.timeout_exceeded(settings.myhostname))
        except _Stop:
            pass
        except Exception as exc:
            log.error("unexpected error in a session: %s", exc)
            log_traceback(log, exc)
            if session is not None:
                await self._send_last(session, replies.reply(421, "4.3.0 Error: internal error"))
        finally:
            if session is not None:
                log.info("%s", session.disconnect_line())
            self.server.connections[address] -= 1
            if self.server.connections[address] <= 0:
                del self.server.connections[address]
            self.server.protocols.discard(self)
            lifetime.end_use()
            if self.transport is not None:
                self.transport.close()

    # -- the dialogue ----------------------------------------------------------------------
    async def _serve(self, session: Session) -> None:
        settings = self.service.settings
        limit = settings.smtpd_client_connection_count_limit
        count = self.server.connections[session.client.address]
        if limit and count > limit and not self.server.exempt(self.service, session.client.address):
            log.warning(
                "Connection concurrency limit exceeded: %d from %s for service %s",
                count,
                session.namaddr,
                self.service.listener,
            )
            await self._send(
                session, replies.too_many_connections(settings.myhostname, session.client.address)
            )
            raise _Stop
        await asyncio.sleep(0)  # let input that came with the connection reach the buffer
        greeting = await self.server.in_thread(session.greeting)
        if await self._improper_pipelining(session, "CONNECT"):
            raise _Stop
        await self._send(session, greeting)
        while True:
            if session.too_many_errors():
                log.info("too many errors after %s from %s", session.where, session.namaddr)
                await self._send(session, session.too_many_errors_reply())
                raise _Stop
            line = await self._read_command(session)
            if session.sasl_pending:
                await self._send(session, await self.server.in_thread(session.sasl_response, line))
                continue
            verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
            if session.must_wait_after(verb) and await self._improper_pipelining(session, verb):
                raise _Stop
            outcome = await self.server.in_thread(session.command, line)
            if isinstance(outcome, ChunkExpected):
                outcome = await self._receive_chunk(session, outcome)
            if outcome is replies.READY_TO_START_TLS:
                await self._start_tls(session, outcome)
                continue
            await self._send(session, outcome)
            if outcome is replies.START_DATA:
                await self._send(session, await self._receive_message(session))
            if outcome.close:
                raise _Stop

    async def _send(self, session: Session, reply: Reply) -> None:
        if reply.is_error:
            delay = session.reply_delay()
            if delay:
                await asyncio.sleep(delay)
        if self.transport is None or self.transport.is_closing():
            raise _Lost
        if not session.offers("ENHANCEDSTATUSCODES"):
            reply = reply.without_enhanced_codes()
        try:
            self._writer.write(reply.wire())
            await self._writer.drain()
        except ConnectionError:
            raise _Lost from None

    async def _send_last(self, session: Session, reply: Reply) -> None:
        """A parting reply to a client that may be gone already."""
        with contextlib.suppress(_Lost):
            await self._send(session, reply)

    async def _improper_pipelining(self, session: Session, after: str) -> bool:
        """Whether input came before the reply it must wait for; logs it as Postfix does."""
        buffered: bytearray = self._reader._buffer  # type: ignore[attr-defined]
        pending = bytes(buffered[:_SHOWN_PENDING])
        if not pending:
            return False
        shown = pending.decode("ascii", "backslashreplace").replace("\r", "\\r")
        shown = shown.replace("\n", "\\n")
        if session.improper_pipelining:
            return False  # logged once, as Postfix does
        session.improper_pipelining = True
        log.info("improper command pipelining after %s from %s: %s", after, session.namaddr, shown)
        if not self.service.settings.smtpd_forbid_unauth_pipelining:
            return False
        await self._send(session, replies.SYNCHRONIZATION)
        return True

    # -- STARTTLS --------------------------------------------------------------------------
    async def _start_tls(self, session: Session, ready: Reply) -> None:
        """Send READY (220), then switch the connection to TLS as aiosmtpd's smtp_STARTTLS does.

        aiosmtpd's own smtp_STARTTLS cannot be called: its 220 has no enhanced status code.
        What the client sent after STARTTLS is plaintext that must never run as a command once
        TLS is up (CVE-2024-34083). It is dropped here, with no await between the drop and the
        switch, and aiosmtpd's connection_made() (which the SSL protocol calls once the
        handshake is done, and which this class does not override) drops the buffer again.
        """
        context = self.service.tls.context
        assert context is not None  # Session.starttls offers READY only with a context
        transport = self.transport
        if transport is None or transport.is_closing():
            raise _Lost
        self._writer.write(ready.wire())
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        tls_protocol = sslproto.SSLProtocol(
            loop,
            self,
            context,
            handshake,
            server_side=True,
            ssl_handshake_timeout=self.service.settings.smtpd_timeout,
        )
        self._original_transport = transport
        transport.set_protocol(tls_protocol)
        self._tls_protocol = tls_protocol
        self.transport = tls_protocol._app_transport
        tls_protocol.connection_made(transport)
        try:
            await handshake
        except (OSError, EOFError) as exc:
            log.info("SSL_accept error from %s: %s", session.namaddr, _tls_error_text(exc))
            raise _Lost from None
        secured: asyncio.BaseTransport | None = self.transport
        ssl_object = secured.get_extra_info("ssl_object") if secured is not None else None
        session.tls_started(TlsInfo.of(ssl_object))

    # -- reading ---------------------------------------------------------------------------
    async def _timed(self, read: Any) -> bytes:
        async with asyncio.timeout(self.service.settings.smtpd_timeout):
            data: bytes = await read
            return data

    async def _read_command(self, session: Session) -> bytes:
        """One command line without its line end, cut to line_length_limit octets."""
        limit = self.service.settings.line_length_limit
        kept = bytearray()
        while True:
            try:
                piece = await self._timed(self._reader.readuntil(b"\n"))
            except asyncio.LimitOverrunError as exc:
                piece = await self._timed(self._reader.read(exc.consumed))
            except asyncio.IncompleteReadError:
                raise _Lost from None
            except ConnectionError:
                raise _Lost from None
            if len(kept) < limit:
                kept += piece[: limit - len(kept)]
            if piece.endswith(b"\n"):
                break
        line = bytes(kept)
        if line.endswith(b"\n"):
            line = line[:-1]
        return line.removesuffix(b"\r")

    async def _receive_message(self, session: Session) -> Reply:
        """Message content up to CRLF.CRLF (the CVE-2024-27305 rules), then its reply."""
        limit = self.service.settings.message_size_limit
        content = bytearray()
        received = 0
        too_big = False
        at_line_start = True
        self._message_octets = 0
        while True:
            try:
                line = await self._timed(self._reader.readuntil(b"\r\n"))
            except asyncio.LimitOverrunError as exc:
                line = await self._timed(self._reader.read(exc.consumed))
            except (asyncio.IncompleteReadError, ConnectionError):
                raise _Lost from None
            if at_line_start and line == b".\r\n":
                break
            received += len(line)
            self._message_octets = received
            piece = line[1:] if at_line_start and line.startswith(b".") else line
            if not session.bare_lf and b"\n" in line[:-2]:
                session.bare_lf = True
            at_line_start = line.endswith(b"\r\n")
            if too_big:
                continue
            if limit and received > limit:
                too_big = True
                content = bytearray()
                continue
            content += piece
        return await self.server.in_thread(session.end_of_data, bytes(content), received, too_big)

    async def _receive_chunk(self, session: Session, chunk: ChunkExpected) -> Reply:
        keep = await self.server.in_thread(session.wants_chunk)
        parts: list[bytes] = []
        remaining = chunk.size
        self._message_octets = 0
        while remaining:
            try:
                piece = await self._timed(self._reader.read(min(remaining, _CHUNK_PIECE)))
            except ConnectionError:
                raise _Lost from None
            if not piece:
                raise _Lost
            remaining -= len(piece)
            self._message_octets += len(piece)
            if keep:
                parts.append(piece)
        data = b"".join(parts) if keep else None
        return await self.server.in_thread(session.bdat_chunk, data)

    # -- the end ---------------------------------------------------------------------------
    def _log_ending(self, session: Session, reason: str) -> None:
        where = session.where
        if where in ("DATA", "BDAT"):
            log.info(
                "%s after %s (%d bytes) from %s",
                reason,
                where,
                self._message_octets,
                session.namaddr,
            )
        elif where != "QUIT" and (where != "END-OF-MESSAGE" or reason != "lost connection"):
            log.info("%s after %s from %s", reason, where, session.namaddr)


class _NoHooks:
    """aiosmtpd wants a handler object; every decision is the Session's."""


def _tls_error_text(exc: BaseException) -> str:
    """A failed handshake as one log line's tail: OpenSSL's reason, else the error's text."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def _peer_address(peer: object) -> tuple[str, int | None]:
    """(address, port) of a peer; an IPv4-mapped IPv6 address as its IPv4 form (Postfix)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        address = str(peer[0])
        mapped = address.removeprefix("::ffff:")
        if mapped != address and mapped.count(".") == 3:
            address = mapped
        return address, int(peer[1])
    return "", None


def quiet_engine_logging(verbose: int) -> None:
    """aiosmtpd logs every connection at INFO on `mail.log`; sdmail logs its own lines."""
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


async def start_listeners(
    server: SmtpdServer, sockets: list[tuple[str, socket.socket]]
) -> list[asyncio.AbstractServer]:
    """Serve each (listener name, listening socket)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    for name, sock in sockets:
        factory = server.protocol_factory(name)
        if sock.family == socket.AF_UNIX:
            servers.append(await loop.create_unix_server(factory, sock=sock))
        else:
            servers.append(await loop.create_server(factory, sock=sock))
    return servers


async def shut_down(
    server: SmtpdServer, listeners: list[asyncio.AbstractServer], *, graceful: bool
) -> None:
    """Stop accepting, then let queue writes in progress finish.

    GRACEFUL (max_idle, max_use): sessions of connections accepted just before are served
    to their end; otherwise (SIGTERM) every session is cut off at once. Connections still in
    the listening socket's backlog stay there for the next instance systemd starts.
    """
    for listener in listeners:
        listener.close()
    await asyncio.sleep(_SETTLE_SECONDS)  # connections accepted just now start their sessions
    if graceful:
        while server.protocols:
            await asyncio.sleep(_SETTLE_SECONDS)
    for protocol in list(server.protocols):
        if protocol.transport is not None:
            protocol.transport.close()
    deadline = time.monotonic() + _CUT_OFF_SECONDS
    while server.protocols and time.monotonic() < deadline:
        await asyncio.sleep(_SETTLE_SECONDS)
    with contextlib.suppress(Exception):
        await asyncio.get_running_loop().run_in_executor(None, server.close)
