"""`python3 -m sdmail.smtp` (and `python3 -m sdmail.lmtp`): the delivery agent as a service.

One asyncio process serves the transport sockets systemd passes (`smtp` and `relay` for
SMTP, `lmtp` for LMTP; FileDescriptorName= names them) and every delivery at once, so
that open connections to a destination outlive the request that opened them
(smtp/cache.py). Per qmgr connection: the caller is checked with SO_PEERCRED (root or
mail_owner, as every agent), one core/deliver_request DeliveryRequest is read, and the
agent skeleton's `handle_request` (sdmail/agent.py: open and share-lock the queue file,
done marks, the `to=<...>, relay=..., status=...` lines) runs in a worker thread, off the
event loop, its delivery function handing the conversation back to the event loop
(smtp/delivery.py). The answer carries `site_failure` for qmgr's negative feedback.
At most default_process_limit requests run at once. After max_use requests, or max_idle
seconds without one, the process exits the first moment no request is in progress (as
smtpd does); requests that come meanwhile wait on the socket for the next process.

OWNS: the smtp/relay/lmtp sockets' side of the delivery protocol, the outgoing SMTP and
LMTP connections. MUST NOT: move queue files, write status logs, act as a user. Needs
network access (AF_INET, AF_INET6, AF_UNIX), /etc/resolv.conf, the queue (read, and
the done-mark write); no privilege.

The resolver's configuration is /etc/resolv.conf; the environment variable
SDMAIL_RESOLV_CONF names another file (tests point the agent at their own DNS server).

Failure modes: `main` returns 78 when main.cf, a client parameter, resolv.conf or a TLS
file cannot be used, or when no socket was passed; 0 after max_use, max_idle or SIGTERM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sdmail.agent import Agent, AgentSettings, Message, Outcome, allowed_callers, handle_request
from sdmail.core.config import Config, ConfigError, bind
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.dns import (
    Resolver,
    ResolverConfigError,
    read_resolv_conf,
    resolv_conf_path,
)
from sdmail.core.ipc import ProtocolError, peer_credentials, read_frame, write_frame
from sdmail.core.match_list import MatchListError, StringList
from sdmail.core.skeleton import AsyncDaemonContext, ExitCode, Fatal, run_daemon_async
from sdmail.core.spool import Spool
from sdmail.core.systemd import listen_fds
from sdmail.smtp.cache import ConnectionCache
from sdmail.smtp.content import encoding_of, needs_smtputf8
from sdmail.smtp.delivery import Client, Delivery
from sdmail.smtp.protocol import Job, JobRecipient
from sdmail.smtp.servers import Finder, own_addresses
from sdmail.smtp.settings import Mode, client_settings
from sdmail.smtp.tls import TlsContexts

log = logging.getLogger("sdmail.smtp")

SOCKETS: dict[str, tuple[str, ...]] = {"smtp": ("smtp", "relay"), "lmtp": ("lmtp",)}


def main(argv: Sequence[str] | None = None, mode: Mode = "smtp") -> int:
    async def serve(ctx: AsyncDaemonContext[Any]) -> int:
        return await Service(ctx, mode).run()

    return run_daemon_async(mode, argv, serve)


def make_client(cfg: Config, mode: Mode, cache: ConnectionCache | None = None) -> Client:
    """The shared state of deliveries under CFG; ConfigError for what cannot be used."""
    settings = client_settings(cfg, mode)
    path = resolv_conf_path()
    resolver: Resolver | None = None
    if settings.dns_enabled:
        try:
            resolver = Resolver(read_resolv_conf(path))
        except ResolverConfigError as exc:
            raise ConfigError(str(exc)) from None
    try:
        tls = TlsContexts(settings.tls)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the client's TLS files: {exc}") from None
    finder = Finder(settings, resolver, own_addresses(settings))
    name = f"{mode}_connection_cache_destinations"
    try:
        always_cached = StringList(settings.cache_destinations, name=name)
    except MatchListError as exc:
        raise ConfigError(exc.message, exc.path, exc.line, name) from None
    return Client(settings, finder, resolver, tls, cache or ConnectionCache(), always_cached)


@dataclass
class _RequestState:
    site_failure: bool = False


class Service:
    def __init__(self, ctx: AsyncDaemonContext[Any], mode: Mode) -> None:
        self.ctx = ctx
        self.mode = mode
        self.client = make_client(ctx.config, mode)
        self.agent_settings = bind(AgentSettings, ctx.config)
        self.spool = Spool(self.agent_settings.queue_directory)
        self.tasks: set[asyncio.Task[None]] = set()
        self.workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.client.settings.shared.default_process_limit,
            thread_name_prefix="delivery",
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake = asyncio.Event()  # a request ended: time to check max_use and max_idle

    def _reload(self, cfg: Config) -> None:
        self.client = make_client(cfg, self.mode, self.client.cache)
        self.agent_settings = bind(AgentSettings, cfg)

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        listeners = self._listeners()
        for listener in listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)
        self.ctx.add_reload_hook(self._reload)
        self.ctx.ready()
        lifetime = self.ctx.lifetime
        stopped = asyncio.ensure_future(self.ctx.stopped())
        try:
            while not self.ctx.stopping and not lifetime.should_exit():
                self.wake.clear()
                woken = asyncio.ensure_future(self.wake.wait())
                await asyncio.wait(
                    {stopped, woken},
                    timeout=lifetime.seconds_until_idle_exit(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
        finally:
            # Synchronous with the accept callback: a connection is either taken and
            # answered below, or left on the socket for the next process.
            for listener in listeners:
                loop.remove_reader(listener.fileno())
            stopped.cancel()
            while self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.client.cache.close_all(self.client.settings.quit_timeout)
            self.workers.shutdown(wait=True)
            self.spool.close()
            for listener in listeners:
                listener.close()
        return 0

    def _accept(self, listener: socket.socket) -> None:
        """Take one connection and count it as a use at once. Past max_use the agent goes
        on taking them, as smtpd does, and exits the first moment none is in progress."""
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("accept: %s", exc)
            return
        self.ctx.lifetime.begin_use()
        assert self.loop is not None
        task = self.loop.create_task(self._serve_connection(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _listeners(self) -> list[socket.socket]:
        wanted = SOCKETS[self.mode]
        passed = listen_fds()
        chosen = [fd for fd in passed if fd.name in wanted]
        if not chosen and len(passed) == 1:
            chosen = passed
        if not chosen:
            names = ", ".join(fd.name for fd in passed) or "none"
            raise Fatal(
                f"no listening socket named {' or '.join(wanted)} was passed "
                f"(LISTEN_FDNAMES: {names})",
                ExitCode.CONFIG,
            )
        listeners = []
        for fd in chosen:
            listener = socket.socket(fileno=fd.fd)
            listener.setblocking(False)
            listeners.append(listener)
        return listeners

    # -- one qmgr connection ---------------------------------------------------------------------
    async def _serve_connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except OSError as exc:
            conn.close()
            log.warning("cannot serve a connection: %s", exc)
            self.ctx.lifetime.end_use()
            self.wake.set()
            return
        try:
            await self._answer(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.ctx.lifetime.end_use()
            self.wake.set()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = cast(socket.socket, writer.get_extra_info("socket"))
        caller = peer_credentials(sock)
        settings = self.agent_settings
        if caller.uid not in allowed_callers(settings.mail_owner):
            log.warning(
                "refusing a request from pid %d uid %d: only root and %s may call the %s agent",
                caller.pid,
                caller.uid,
                settings.mail_owner,
                self.mode,
            )
            return
        try:
            frame = await asyncio.wait_for(read_frame(reader, 0), settings.ipc_timeout)
            request = DeliveryRequest.from_header(frame.header)
        except (ProtocolError, OSError, TimeoutError) as exc:
            log.warning("bad delivery request from pid %d: %s", caller.pid, exc)
            return
        result = await self.deliver(request)
        try:
            await write_frame(writer, result.to_header())
        except OSError as exc:
            log.warning("%s: cannot send the delivery result to qmgr: %s", request.queue_id, exc)

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """REQUEST delivered through the agent skeleton in a worker thread."""
        state = _RequestState()
        client = self.client
        agent = Agent(
            request.transport,
            deliver_request=lambda message, recipients: self._deliver_in_thread(
                client, request, message, recipients, state
            ),
        )
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self.workers, handle_request, request, agent, self.agent_settings, self.spool
        )
        return replace(result, site_failure=state.site_failure)

    def _deliver_in_thread(
        self,
        client: Client,
        request: DeliveryRequest,
        message: Message,
        recipients: Sequence[RequestRecipient],
        state: _RequestState,
    ) -> list[Outcome]:
        """The skeleton's delivery function: build the job here, converse on the loop."""
        assert self.loop is not None and threading.current_thread() is not threading.main_thread()
        job = make_job(request, message, recipients)
        preactive = max(0.0, (request.queue_active_at or time.time()) - request.arrival)
        delivery = Delivery(client, job, request.transport, preactive)
        outcome = asyncio.run_coroutine_threadsafe(delivery.run(), self.loop).result()
        state.site_failure = outcome.site_failure
        return [
            Outcome(v.status, v.relay, v.conn_setup_done, v.done, v.conn_use, v.dsn_passed)
            for v in outcome.verdicts
        ]


def make_job(
    request: DeliveryRequest, message: Message, recipients: Sequence[RequestRecipient]
) -> Job:
    content = message.content()
    header_block = message.header_block()
    envelope = message.envelope
    addresses = [r.address for r in recipients]
    return Job(
        queue_id=request.queue_id,
        nexthop=request.nexthop,
        sender=message.sender,
        envelope=envelope,
        recipients=tuple(
            JobRecipient(r.address, r.orig_address, r.notify, r.orcpt) for r in recipients
        ),
        content=content,
        header_block=header_block,
        encoding=encoding_of(envelope, content),
        requires_smtputf8=needs_smtputf8(envelope, addresses, header_block),
        verify_only=message.verifying,
    )
