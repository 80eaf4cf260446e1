"""The showq service's accept loop and the answer to one client (see the package docstring).

Failure modes: `main` returns the exit status: 78 when main.cf does not parse or the
process was not given a socket named `showq`; a client's trouble (a malformed request,
a caller that went away, a table that fails during the ACL check) ends that client's
connection with a log line and never the service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sdmail.core import systemd
from sdmail.core.ipc import (
    ConnectionClosed,
    ProtocolError,
    peer_credentials,
    recv_frame,
    send_frame,
)
from sdmail.core.log import msg_warning
from sdmail.core.match_list import MatchListError
from sdmail.core.records import QueueName
from sdmail.core.showq_proto import (
    SHOWQ_OP,
    scan_queue,
    send_listing,
    status_ok,
    status_refused,
)
from sdmail.core.skeleton import ExitCode, Fatal, PlainDaemonContext, run_daemon
from sdmail.core.tables import TableError
from sdmail.core.user_acl import exempt_uids, refused_user

PROGRAM = "showq"
SOCKET_NAME = "showq"
MAX_CLIENTS: Final = 16  # concurrent listings; more wait in the socket's backlog
_STOP_GRACE: Final = 5.0  # seconds a stopping service lets listings in progress finish

logger = logging.getLogger("sdmail.showq")


@dataclass(frozen=True)
class ShowqSettings:
    queue_directory: str
    authorized_mailq_users: tuple[str, ...]
    mail_owner: str
    ipc_timeout: int


def take_listener() -> socket.socket:
    """The socket systemd passed as `showq`; Fatal (EX_CONFIG) when there is none."""
    try:
        passed = systemd.listen_fds()
    except systemd.SystemdError as exc:
        raise Fatal(str(exc), ExitCode.CONFIG) from None
    listener = None
    for fd, name in passed:
        if name == SOCKET_NAME and listener is None:
            listener = socket.socket(fileno=fd)
        else:
            os.close(fd)  # not ours: do not keep another service's socket open
    if listener is None:
        raise Fatal(
            f"no listening socket named {SOCKET_NAME!r} (run from sdmail-showq.socket)",
            ExitCode.CONFIG,
        )
    listener.setblocking(False)
    return listener


def _warn_skipped(queue: QueueName, queue_id: str, why: str) -> None:
    if queue_id:
        msg_warning(queue_id, why)
    else:
        logger.warning("%s", why)


def answer_client(conn: socket.socket, settings: ShowqSettings) -> None:
    """Serve one connection: read the request, check the caller, stream the queue."""
    conn.settimeout(settings.ipc_timeout)
    caller = peer_credentials(conn)
    with conn.makefile("rb") as reader:
        request = recv_frame(reader, max_payload=0).header
    if request.get("op") != SHOWQ_OP:
        logger.warning("uid %d: unknown request %r", caller.uid, request.get("op"))
        return
    refused = refused_user(
        settings.authorized_mailq_users,
        caller.uid,
        parameter="authorized_mailq_users",
        exempt=exempt_uids(settings.mail_owner),
    )
    if refused is not None:
        text = f"User {refused}({caller.uid}) is not allowed to view the mail queue"
        logger.warning("%s", text)
        send_frame(conn, status_refused(text))
        return
    send_frame(conn, status_ok())
    send_listing(conn, scan_queue(settings.queue_directory, _warn_skipped))


def _serve_and_report(conn: socket.socket, settings: ShowqSettings, done_fd: int) -> None:
    try:
        with conn:
            answer_client(conn, settings)
    except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
        pass  # the client went away: nothing to answer
    except TimeoutError:
        logger.warning("client timed out after %d s", settings.ipc_timeout)
    except ProtocolError as exc:
        logger.warning("malformed request: %s", exc)
    except (MatchListError, TableError) as exc:
        logger.error("authorized_mailq_users: %s", exc)
    except Exception:
        logger.exception("internal error while listing the queue")
    finally:
        os.write(done_fd, b".")


class ShowqServer:
    """The accept loop: one thread per client, Lifetime kept by the main thread alone."""

    def __init__(self, ctx: PlainDaemonContext[ShowqSettings], listener: socket.socket) -> None:
        self.ctx = ctx
        self.listener = listener
        self.active = 0
        self.threads: set[threading.Thread] = set()
        self._done_read, self._done_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self) -> int:
        lifetime = self.ctx.lifetime
        try:
            self.ctx.ready()
            while not self.ctx.wait(0) and not lifetime.should_exit():
                watched = [self.ctx.wakeup_fd, self._done_read]
                if self.active < MAX_CLIENTS and not lifetime.used_up():
                    watched.append(self.listener.fileno())
                readable, _, _ = select.select(watched, [], [], lifetime.seconds_until_idle_exit())
                if self._done_read in readable:
                    self._count_finished()
                if self.listener.fileno() in readable:
                    self._accept()
        finally:
            self.listener.close()
            self._let_clients_finish()
            os.close(self._done_read)
            os.close(self._done_write)
        return ExitCode.OK

    def _count_finished(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while finished := len(os.read(self._done_read, 512)):
                for _ in range(finished):
                    self.active -= 1
                    self.ctx.lifetime.end_use()
        self.threads = {t for t in self.threads if t.is_alive()}

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # another process (or a reset client) took it
        conn.setblocking(True)
        self.ctx.lifetime.begin_use()
        self.active += 1
        thread = threading.Thread(
            target=_serve_and_report,
            args=(conn, self.ctx.settings, self._done_write),
            name="showq-client",
            daemon=True,
        )
        self.threads.add(thread)
        thread.start()

    def _let_clients_finish(self) -> None:
        deadline = time.monotonic() + _STOP_GRACE
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))


def serve(ctx: PlainDaemonContext[ShowqSettings]) -> int:
    return ShowqServer(ctx, take_listener()).run()


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon(PROGRAM, argv, serve, settings=ShowqSettings)
