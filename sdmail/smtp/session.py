"""One connection to an SMTP or LMTP server: connect, read replies, send commands, TLS, QUIT.

`connect(endpoint, ...)` opens a TCP or UNIX-domain connection within the connect timeout
and gives a `Session`; the protocol (greeting, EHLO, MAIL, RCPT, DATA) is driven by
smtp/protocol.py through `Session.send`, `Session.read_reply` and `Session.command`. Every
read of a reply has a time limit and a stage, so a failure says what Postfix says: `lost
connection with mx[192.0.2.1] while sending RCPT TO`, `conversation with mx[192.0.2.1]
timed out while receiving the initial server greeting`.

What the server sends is hostile input: a line longer than reply.MAX_LINE_LENGTH is cut
and the rest of it skipped, and each reply must be complete within its stage's time limit,
so a server that trickles bytes cannot hold a delivery forever.

Failure modes: `connect` raises `ConnectFailed` (status 4.4.1, `connect to host[addr]:port:
Connection refused`); `Session.read_reply`, `send` and `command` raise `ConversationFailed`
(status 4.4.2) for a lost connection or a timeout; `start_tls` raises `TlsFailed` for a
handshake that did not complete. `quit` and `close` never raise.
"""

from __future__ import annotations

import _ssl  # the chain's certificates' DER encoding constant (smtp/tls.py, DANE-TA)
import asyncio
import contextlib
import errno
import os
import socket
import ssl
import time
from dataclasses import dataclass

from sdmail.core.dsn import Status
from sdmail.smtp.reply import MAX_LINE_LENGTH, Features, Reply, ReplyParser

_STREAM_LIMIT = MAX_LINE_LENGTH  # a longer line raises LimitOverrunError and is cut


class ConnectFailed(Exception):
    """No connection to the server; STATUS says why (4.4.1)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.text)
        self.status = status


class ConversationFailed(Exception):
    """The connection was lost or the server did not answer in time (4.4.2)."""

    def __init__(self, status: Status, *, timed_out: bool) -> None:
        super().__init__(status.text)
        self.status = status
        self.timed_out = timed_out


class TlsFailed(Exception):
    """The TLS handshake did not complete; the connection is unusable. VERIFICATION: it
    failed because the certificate chain was not trusted."""

    def __init__(self, text: str, *, verification: bool = False) -> None:
        super().__init__(text)
        self.verification = verification


@dataclass(frozen=True)
class Endpoint:
    """A server: HOST is the name to show (the MX host, or $myhostname for a UNIX socket),
    ADDRESS its IP address or socket path, PORT 0 for a UNIX socket."""

    host: str
    address: str
    port: int
    preference: int = 0
    best_mx: bool = True

    @property
    def unix(self) -> bool:
        return self.port == 0

    @property
    def namaddr(self) -> str:
        """`host[addr]`, as in Postfix's texts."""
        return f"{self.host}[{self.address}]"

    @property
    def namaddrport(self) -> str:
        """`host[addr]:port` (no port for a UNIX socket), the log's relay=."""
        return self.namaddr if self.unix else f"{self.namaddr}:{self.port}"


async def connect(endpoint: Endpoint, timeout: float) -> Session:
    """A new connection to ENDPOINT (TIMEOUT 0: the kernel's own limit)."""
    try:
        if endpoint.unix:
            opening = asyncio.open_unix_connection(endpoint.address, limit=_STREAM_LIMIT)
        else:
            opening = asyncio.open_connection(endpoint.address, endpoint.port, limit=_STREAM_LIMIT)
        reader, writer = await asyncio.wait_for(opening, timeout or None)
    except TimeoutError:
        raise ConnectFailed(_connect_status(endpoint, os.strerror(errno.ETIMEDOUT))) from None
    except OSError as exc:
        raise ConnectFailed(_connect_status(endpoint, _oserror_text(exc))) from None
    sock = writer.get_extra_info("socket")
    if sock is not None and not endpoint.unix:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Session(endpoint, reader, writer)


def _connect_status(endpoint: Endpoint, why: str) -> Status:
    if endpoint.unix:
        return Status("4.4.1", f"connect to {endpoint.namaddr}: {why}")
    return Status("4.4.1", f"connect to {endpoint.namaddr}:{endpoint.port}: {why}")


def _oserror_text(exc: OSError) -> str:
    # asyncio's own texts ("Connect call failed (...)") are not what Postfix logs.
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


class Session:
    """An open connection and what the server offered on it."""

    def __init__(
        self, endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer
        self.features = Features()
        self.tls = False
        self.tls_summary = ""
        self.created = time.monotonic()
        self.deliveries = 0  # transactions completed (conn_use - 1 when reused)
        self.broken = False

    # -- reading and writing ------------------------------------------------------------------
    async def read_reply(self, timeout: float, stage: str) -> Reply:
        """The server's next reply within TIMEOUT seconds (0: none); STAGE names the step."""
        try:
            return await asyncio.wait_for(self._read_reply(stage), timeout or None)
        except TimeoutError:
            raise self._failure(stage, timed_out=True) from None

    async def _read_reply(self, stage: str) -> Reply:
        parser = ReplyParser()
        while True:
            line = await self._read_line(stage)
            reply = parser.feed(line)
            if reply is not None:
                return reply

    async def _read_line(self, stage: str) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as overrun:
            head = await self._take(overrun.consumed, stage)
            while True:  # skip the rest of the over-long line
                try:
                    await self.reader.readuntil(b"\n")
                    return head
                except asyncio.LimitOverrunError as more:
                    await self._take(more.consumed, stage)
                except (asyncio.IncompleteReadError, OSError):
                    raise self._failure(stage, timed_out=False) from None
        except (asyncio.IncompleteReadError, OSError):
            raise self._failure(stage, timed_out=False) from None

    async def _take(self, count: int, stage: str) -> bytes:
        try:
            return await self.reader.readexactly(count)
        except (asyncio.IncompleteReadError, OSError):
            raise self._failure(stage, timed_out=False) from None

    async def send(self, data: bytes, timeout: float, stage: str) -> None:
        """Write DATA and wait until the kernel took it, within TIMEOUT seconds."""
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout or None)
        except TimeoutError:
            raise self._failure(stage, timed_out=True) from None
        except (OSError, RuntimeError):
            raise self._failure(stage, timed_out=False) from None

    async def command(self, line: str, timeout: float, stage: str) -> Reply:
        """Send one command LINE and read its reply."""
        await self.send(line.encode("utf-8", "surrogateescape") + b"\r\n", timeout, stage)
        return await self.read_reply(timeout, stage)

    def _failure(self, stage: str, *, timed_out: bool) -> ConversationFailed:
        self.broken = True
        name = self.endpoint.namaddr
        if timed_out:
            text = f"conversation with {name} timed out while {stage}"
        else:
            text = f"lost connection with {name} while {stage}"
        return ConversationFailed(Status("4.4.2", text), timed_out=timed_out)

    # -- TLS ---------------------------------------------------------------------------------
    async def start_tls(self, context: ssl.SSLContext, server_name: str, timeout: float) -> None:
        """Turn the connection into a TLS one (after a 220 to STARTTLS)."""
        try:
            await self.writer.start_tls(
                context,
                server_hostname=server_name or None,
                ssl_handshake_timeout=timeout or None,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError, ValueError) as exc:
            self.broken = True
            raise TlsFailed(
                str(exc) or type(exc).__name__,
                verification=isinstance(exc, ssl.SSLCertVerificationError),
            ) from None
        self.tls = True
        ssl_object = self.writer.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            cipher = ssl_object.cipher()
            if cipher is not None:
                name, version, bits = cipher
                self.tls_summary = f"{version} with cipher {name} ({bits}/{bits} bits)"

    def peer_certificate(self) -> tuple[bytes | None, dict[str, object]]:
        """The server's certificate: DER bytes (None: none) and, when verified, its fields."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return None, {}
        der = ssl_object.getpeercert(binary_form=True)
        fields = ssl_object.getpeercert() or {}
        return der, dict(fields)

    def peer_chain(self) -> tuple[list[bytes], dict[str, object]]:
        """The certificates the server sent, DER, its own first, whether verified or not, and
        its own certificate's fields; ([], {}) when the ssl module cannot tell (DANE-TA).

        Python 3.11 has the chain only on the private `_sslobj` (public from 3.13)."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
        if getter is None:
            return [], {}
        try:
            certificates = list(getter() or [])
            chain = [c.public_bytes(_ssl.ENCODING_DER) for c in certificates]
            fields = dict(certificates[0].get_info()) if certificates else {}
        except (AttributeError, ValueError, ssl.SSLError):
            return [], {}
        return chain, fields

    # -- the end -----------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not self.broken and not self.writer.is_closing() and not self.reader.at_eof()

    async def quit(self, timeout: float, *, wait_for_reply: bool) -> None:
        """Say QUIT (and wait for its reply unless told not to), then close; never raises."""
        if self.usable:
            with contextlib.suppress(ConversationFailed):
                await self.send(b"QUIT\r\n", timeout, "sending QUIT")
                if wait_for_reply:
                    await self.read_reply(timeout, "sending QUIT")
        await self.close()

    async def close(self) -> None:
        self.broken = True
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
