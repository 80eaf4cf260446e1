"""cleanup as a service: the gate for programs that do not run as the mail owner.

WHAT IT DOES: `python3 -m sdmail.cleanup` serves the socket systemd passes as
"cleanup" (`$socket_directory/cleanup`). A delivery agent that re-submits mail
(aliases, .forward) and the code that writes notices connect, send one frame
per message (core/mail_stream: a SubmitRequest header, the content as payload)
and get one reply frame: `accepted(queue_id)` or `refused(code, dsn, text)`,
the reply of the CleanupError the library raised. The caller is known from the
kernel (SO_PEERCRED: uid and pid, logged with the new queue ID as
`NEWID: origin=forward, uid=N, pid=P`); the request says its origin, and only
`forward` and `notice` are served (local mail comes through maildrop/ and
pickup, network mail through smtpd). Each queued message wakes qmgr.

OWNS nothing but the socket's conversation: what is queued and how is the
cleanup library's (api.py), which this module calls unchanged.

RUNS as the mail owner (`sdmail-cleanup.socket`, mode 0600, `Accept=no`); one
process serves every connection with asyncio, and the library's blocking work
(tables, the durable queue file) runs in a few worker threads, which share
directory fsyncs through the spool's group commit. It exits after `max_idle`
seconds without a connection, after `max_use` connections as soon as none is
open, and on SIGTERM once the messages being queued are answered. SIGHUP builds
a new cleanup from the re-read main.cf.

HOSTILE INPUT: frames from local programs: not JSON, cut short, a header or
payload over its limit, fields of the wrong type, addresses with control
characters, an origin it does not serve. Each gets a 5xx refusal (over
message_size_limit: 552 5.3.4, after the payload was read and thrown away) and,
when the frame itself cannot be read, the connection is closed. A client that
sends nothing is dropped after `ipc_timeout`. An unexpected error is a 4xx
refusal with a traceback in the journal, never a crash.

Failure modes: `main` returns the exit status: 78 for a bad main.cf or when no
socket named "cleanup" was passed; 0 after an idle, max_use or SIGTERM exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import pwd
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sdmail.cleanup.api import TOO_BIG, Cleanup, CleanupError, Origin, Submission
from sdmail.core import systemd
from sdmail.core.config import Config
from sdmail.core.ipc import (
    MAX_HEADER,
    ConnectionClosed,
    PeerCredentials,
    ProtocolError,
    parse_header,
    peer_credentials,
    write_frame,
)
from sdmail.core.log import log_traceback, msg_info
from sdmail.core.mail_stream import SubmitRequest, accepted, refused
from sdmail.core.qfile import InvalidEnvelope
from sdmail.core.records import BodyType, DsnRet, Notify, Recipient
from sdmail.core.skeleton import (
    CONFIGURATION_ERRORS,
    AsyncDaemonContext,
    ExitCode,
    Fatal,
    run_daemon_async,
)
from sdmail.core.spool import Spool
from sdmail.core.trigger import WAKEUP, trigger

PROGRAM: Final = "cleanup"
SOCKET_NAME: Final = "cleanup"
QMGR_SOCKET: Final = "qmgr"
SERVED_ORIGINS: Final = frozenset({Origin.FORWARD, Origin.NOTICE})
WORKER_THREADS: Final = 4
_DISCARD_CHUNK: Final = 1 << 16

Reply = tuple[int, str, str]
BAD_REQUEST: Final[Reply] = (500, "5.5.2", "Error: malformed submission request")
INTERNAL_ERROR: Final[Reply] = (451, "4.3.0", "Error: internal error")


class BadRequest(ValueError):
    """A well-framed request whose fields cannot be a submission."""


@dataclass(frozen=True)
class CleanupServiceSettings:
    """The parameters the service reads itself; field names are parameter names."""

    queue_directory: str
    socket_directory: str
    ipc_timeout: int
    message_size_limit: int


# -- reading a request ---------------------------------------------------------------------
async def read_request(
    reader: asyncio.StreamReader, size_limit: int
) -> tuple[dict[str, Any], bytes | None]:
    """One frame's header and payload; the payload is None when it was over SIZE_LIMIT (0:
    none) and was read and thrown away. ConnectionClosed / ProtocolError as core/ipc's."""
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
            while length:
                chunk = await reader.readexactly(min(length, _DISCARD_CHUNK))
                length -= len(chunk)
            return header, None
        return header, await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"payload cut short after {len(exc.partial)} bytes") from None


# -- a request into a submission ---------------------------------------------------------------
def _address(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{what} is not a string")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadRequest(f"{what} holds a control character")
    return value


def _optional_text(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{what} is not a string")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{what} is not true or false")
    return value


def _recipient(index: int, address: object, notify: object, orcpt: object) -> Recipient:
    what = f"recipient {index + 1}"
    if not isinstance(notify, int) or isinstance(notify, bool):
        raise BadRequest(f"{what}: notify is not a number")
    try:
        flags = Notify(notify)
    except ValueError:
        raise BadRequest(f"{what}: bad notify value {notify}") from None
    return Recipient(
        _address(address, what), notify=flags, orcpt=_optional_text(orcpt, f"{what}: orcpt")
    )


def _ret(value: object) -> DsnRet | None:
    if value is None:
        return None
    if isinstance(value, str) and value.upper() in {m.value for m in DsnRet}:
        return DsnRet(value.upper())
    raise BadRequest(f"bad ret {value!r}")


def _body_type(value: object) -> BodyType | None:
    if value is None:
        return None
    if isinstance(value, str) and value.upper() in {m.value for m in BodyType}:
        return BodyType(value.upper())
    raise BadRequest(f"bad body_type {value!r}")


def _login_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise BadRequest(f"no sender given and no login name for uid {uid}") from None


def submission_of(req: SubmitRequest, origin: Origin, caller: PeerCredentials) -> Submission:
    """The cleanup Submission for REQ from CALLER; BadRequest when a field cannot be one."""
    sender = _login_name(caller.uid) if req.sender is None else _address(req.sender, "sender")
    recipients = tuple(
        _recipient(n, r.address, r.notify, r.orcpt) for n, r in enumerate(req.recipients)
    )
    return Submission(
        sender=sender,
        recipients=recipients,
        origin=origin,
        uid=caller.uid,
        full_name=_optional_text(req.full_name, "full_name"),
        extract_recipients=_flag(req.extract_recipients, "extract_recipients"),
        ret=_ret(req.ret),
        envid=_optional_text(req.envid, "envid"),
        smtputf8=_flag(req.smtputf8, "smtputf8"),
        body_type=_body_type(req.body_type),
        trace_flags=req.trace_flags,
    )


def _served_origin(value: object) -> Origin | None:
    served = {origin.value: origin for origin in SERVED_ORIGINS}
    return served.get(value) if isinstance(value, str) else None


# -- the service -----------------------------------------------------------------------------
class CleanupService:
    """One cleanup service process: its sockets' connections and the cleanup they feed."""

    def __init__(self, ctx: AsyncDaemonContext[CleanupServiceSettings]) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.spool = Spool(settings.queue_directory)
        self.cleanup = Cleanup(ctx.config, self.spool)
        self.qmgr_socket = str(Path(settings.socket_directory) / QMGR_SOCKET)
        self.executor = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="cleanup")
        self._connections: dict[asyncio.Task[None], bool] = {}  # task -> queuing a message now
        self._activity = asyncio.Event()

    def reload(self, cfg: Config) -> None:
        try:
            self.cleanup = Cleanup(cfg, self.spool)
        except CONFIGURATION_ERRORS as exc:
            self.ctx.logger.warning("%s; cleanup keeps the previous configuration", exc)

    async def run(self, listener: socket.socket) -> None:
        server = await asyncio.start_unix_server(
            self.handle_connection, sock=listener, limit=MAX_HEADER + 1
        )
        try:
            await self._run_until_done()
        finally:
            server.close()
            await self._finish_connections()
            self.executor.shutdown(wait=True)
            self.spool.close()

    async def _run_until_done(self) -> None:
        lifetime = self.ctx.lifetime
        while True:
            self._activity.clear()
            if self.ctx.stopping or lifetime.should_exit():
                return
            stopped = asyncio.ensure_future(self.ctx.stopped())
            activity = asyncio.ensure_future(self._activity.wait())
            await asyncio.wait(
                {stopped, activity},
                timeout=lifetime.seconds_until_idle_exit(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            stopped.cancel()
            activity.cancel()

    async def _finish_connections(self) -> None:
        """Drop connections waiting for a request; answer those whose message is being queued."""
        for task, queuing in list(self._connections.items()):
            if not queuing:
                task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    # -- one connection -----------------------------------------------------------------------
    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = False
        self.ctx.lifetime.begin_use()
        try:
            await self._serve_connection(task, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.ctx.lifetime.end_use()
            del self._connections[task]
            self._activity.set()

    async def _serve_connection(
        self,
        task: asyncio.Task[None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        caller = peer_credentials(writer.get_extra_info("socket"))
        who = f"uid={caller.uid} pid={caller.pid}"
        settings = self.ctx.settings
        loop = asyncio.get_running_loop()
        while not self.ctx.stopping:
            try:
                async with asyncio.timeout(settings.ipc_timeout):
                    header, content = await read_request(reader, settings.message_size_limit)
            except ConnectionClosed:
                return
            except ProtocolError as exc:
                self.ctx.logger.warning("%s: %s", who, exc)
                with contextlib.suppress(OSError):
                    await write_frame(writer, refused(*BAD_REQUEST))
                return
            except TimeoutError:
                self.ctx.logger.warning("%s: timeout after %ds", who, settings.ipc_timeout)
                return
            except OSError as exc:
                self.ctx.logger.warning("%s: connection lost: %s", who, exc.strerror or exc)
                return
            self._connections[task] = True
            try:
                reply = await loop.run_in_executor(
                    self.executor, self.submit, caller, header, content
                )
            finally:
                self._connections[task] = False
            try:
                async with asyncio.timeout(settings.ipc_timeout):
                    await write_frame(writer, reply)
            except (OSError, TimeoutError) as exc:
                self.ctx.logger.warning("%s: cannot send the reply: %s", who, exc)
                return

    def submit(
        self, caller: PeerCredentials, header: dict[str, Any], content: bytes | None
    ) -> dict[str, Any]:
        """Queue one request's message; the reply header (blocking: runs in a worker)."""
        who = f"uid={caller.uid} pid={caller.pid}"
        try:
            req = SubmitRequest.from_header(header)
            origin = _served_origin(req.origin)
            if origin is None:
                return self._refuse(
                    who, 554, "5.7.1", f"Error: origin {req.origin!r} is not served here"
                )
            if content is None:
                return self._refuse(who, TOO_BIG.code, TOO_BIG.status.dsn, TOO_BIG.status.text)
            submission = submission_of(req, origin, caller)
            done = self.cleanup.submit(submission, content)
        except (ProtocolError, BadRequest, InvalidEnvelope) as exc:
            self.ctx.logger.warning("%s: %s", who, exc)
            return self._refuse(who, *BAD_REQUEST)
        except CleanupError as exc:
            return self._refuse(who, exc.code, exc.status.dsn, exc.status.text)
        except Exception as exc:
            # A bug must not take the service down; the sender will try again.
            self.ctx.logger.error("%s: internal error: %s: %s", who, type(exc).__name__, exc)
            log_traceback(self.ctx.logger, exc)
            return self._refuse(who, *INTERNAL_ERROR)
        line = f"origin={origin.value}, uid={caller.uid}, pid={caller.pid}"
        orig_queue_id = req.attributes.get("orig_queue_id")
        if orig_queue_id is not None:
            line += f", orig_queue_id={orig_queue_id}"
        msg_info(done.queue_id, line)
        trigger(self.qmgr_socket, WAKEUP)
        return accepted(done.queue_id)

    def _refuse(self, who: str, code: int, dsn: str, text: str) -> dict[str, Any]:
        self.ctx.logger.warning("%s: reject: %d %s %s", who, code, dsn, text)
        return refused(code, dsn, text)


def listening_socket() -> socket.socket:
    """The UNIX socket systemd passed as "cleanup" (or its only, unnamed one); else Fatal."""
    try:
        passed = systemd.listen_fds()
    except systemd.SystemdError as exc:
        raise Fatal(str(exc), ExitCode.CONFIG) from None
    chosen = [p for p in passed if p.name == SOCKET_NAME]
    if not chosen and len(passed) == 1 and passed[0].name == "unknown":
        chosen = passed
    if len(chosen) != 1:
        names = ", ".join(p.name for p in passed) or "none"
        raise Fatal(
            f'no listening socket named "{SOCKET_NAME}" was passed (LISTEN_FDS: {names})',
            ExitCode.CONFIG,
        )
    listener = socket.socket(fileno=chosen[0].fd)
    if listener.family != socket.AF_UNIX:
        listener.detach()
        raise Fatal(f'the socket passed as "{SOCKET_NAME}" is not a UNIX socket', ExitCode.CONFIG)
    listener.setblocking(False)
    return listener


async def serve(ctx: AsyncDaemonContext[CleanupServiceSettings]) -> int:
    listener = listening_socket()
    service = CleanupService(ctx)
    ctx.add_reload_hook(service.reload)
    await service.run(listener)
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon_async(PROGRAM, argv, serve, settings=CleanupServiceSettings)
