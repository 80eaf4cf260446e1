"""A scriptable SMTP/LMTP server for tests: real TCP (or UNIX-domain) sockets, asyncio in a
thread of its own, answering 2xx/4xx/5xx on demand, closing, stalling, offering or
withholding extensions, and recording what it received.

    with SmtpSink(rcpt={"bad@example.test": "550 5.1.1 <bad@example.test>: User unknown"}) as sink:
        ... deliver to 127.0.0.1:sink.port ...
        sink.messages[0].data, sink.messages[0].rcpt_params

`Behaviour` fields: `greeting` (a reply line, or "close" / "stall"; `greeting_delay` seconds
before it), `ehlo` (keywords offered,
one per line), `ehlo_reply` (instead of the keyword list, e.g. "502 5.5.1 no"), `mail`,
`rcpt` (address -> reply line; others get `rcpt_default`), `data` (the reply to DATA),
`dot` (the reply to the final dot; for LMTP a list, one per accepted recipient, or one
line for all), `close_after` / `stall_after` (a verb after which the server hangs up or
goes silent; `BODY` is after the message before its reply, `DOT` after that reply), `lmtp` (LHLO instead of EHLO), `tls` (an ssl.SSLContext: STARTTLS offered
and done). `connections`, `max_concurrent` and `commands` count what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Behaviour:
    greeting: str = "220 sink.example.test ESMTP test sink"
    greeting_delay: float = 0.0
    ehlo: tuple[str, ...] = ("PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "SMTPUTF8")
    ehlo_reply: str | None = None
    helo: str = "250 sink.example.test"
    mail: str = "250 2.1.0 Ok"
    rcpt: dict[str, str] = field(default_factory=dict)
    rcpt_default: str = "250 2.1.5 Ok"
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    dot: str | list[str] = "250 2.0.0 Ok: queued as SINK1"
    close_after: str | None = None
    stall_after: str | None = None
    lmtp: bool = False
    tls: ssl.SSLContext | None = None
    hostname: str = "sink.example.test"


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    tls: bool
    helo: str


class SmtpSink:
    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unix_path: Path | None = None,
        **changes: object,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        for name, value in changes.items():
            setattr(self.behaviour, name, value)
        self.messages: list[Received] = []
        self.commands: list[str] = []
        self.connections = 0
        self.active = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._host, self._port, self._unix_path = host, port, unix_path
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    # -- lifecycle ------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            if self._unix_path is not None:
                server = await asyncio.start_unix_server(self._client, str(self._unix_path))
                self.port = 0
            else:
                family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
                server = await asyncio.start_server(
                    self._client, self._host, self._port, family=family, reuse_address=True
                )
                self.port = server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        async with server:
            await self._stop.wait()

    def close(self) -> None:
        if self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one client -----------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            with self._lock:
                self.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b = self.behaviour
        if b.greeting == "close":
            return
        if b.greeting == "stall":
            await asyncio.sleep(3600)
        await asyncio.sleep(b.greeting_delay)
        await self._say(writer, b.greeting)
        mail_from, rcpts, accepted, helo, tls = "", [], [], "", False
        while True:
            line = await reader.readline()
            if not line:
                return
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            with self._lock:
                self.commands.append(command)
            if verb in ("EHLO", "LHLO"):
                helo = command[5:]
                if b.ehlo_reply is not None:
                    await self._say(writer, b.ehlo_reply)
                else:
                    keywords = list(b.ehlo)
                    if b.tls is not None and not tls:
                        keywords.append("STARTTLS")
                    lines = [b.hostname, *keywords]
                    text = "".join(
                        f"250{'-' if i < len(lines) - 1 else ' '}{w}\r\n"
                        for i, w in enumerate(lines)
                    )
                    writer.write(text.encode())
                    await writer.drain()
            elif verb == "HELO":
                helo = command[5:]
                await self._say(writer, b.helo)
            elif verb == "STARTTLS" and b.tls is not None and not tls:
                await self._say(writer, "220 2.0.0 Ready to start TLS")
                await writer.start_tls(b.tls)
                tls = True
            elif verb == "MAIL":
                mail_from, rcpts, accepted = command, [], []
                await self._say(writer, b.mail)
            elif verb == "RCPT":
                rcpts.append(command)
                address = command.split("<", 1)[-1].split(">", 1)[0]
                reply = b.rcpt.get(address, b.rcpt_default)
                if reply.startswith("2"):
                    accepted.append(address)
                await self._say(writer, reply)
            elif verb == "DATA":
                await self._say(writer, b.data)
                if not b.data.startswith("354"):
                    continue
                if b.close_after == "DATA":
                    return
                body = await self._read_data(reader)
                with self._lock:
                    self.messages.append(Received(mail_from, rcpts, body, tls, helo))
                if b.close_after == "BODY":
                    return
                if b.stall_after == "BODY":
                    await asyncio.sleep(3600)
                replies = b.dot if isinstance(b.dot, list) else [b.dot]
                count = len(accepted) if b.lmtp else 1
                for index in range(count):
                    await self._say(writer, replies[min(index, len(replies) - 1)])
                if b.close_after == "DOT":
                    return
            elif verb == "RSET":
                mail_from, rcpts, accepted = "", [], []
                await self._say(writer, "250 2.0.0 Ok")
            elif verb == "QUIT":
                await self._say(writer, "221 2.0.0 Bye")
                return
            else:
                await self._say(writer, "502 5.5.2 Error: command not recognized")
            if b.close_after == verb:
                return
            if b.stall_after == verb:
                await asyncio.sleep(3600)

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while True:
            line = await reader.readline()
            if not line or line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)

    @staticmethod
    async def _say(writer: asyncio.StreamWriter, reply: str) -> None:
        writer.write(reply.replace("\n", "\r\n").encode() + b"\r\n")
        await writer.drain()
