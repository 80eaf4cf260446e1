"""The delivery-agent skeleton: what every agent (local now; virtual, smtp, lmtp, pipe later)
does around its one real job, delivering a message to recipients.

In the order mail flows: `run_agent` takes the listening socket systemd passes under the
transport's name (`FileDescriptorName=local`), and forks one worker per connection, up to
`default_process_limit` at once, counting connections towards `max_use` and idle time
towards `max_idle`. A worker (`serve_connection`) checks its caller with SO_PEERCRED (root
or `mail_owner` only; anyone else is refused and logged), reads one
`core/deliver_request.DeliveryRequest`, opens the queue file it names through core/spool
and holds a SHARED lock on it for the whole request (a restarted qmgr leaves the file
alone meanwhile), and calls the agent's deliver function for each recipient (or once for
the request). Each outcome is logged as Postfix's delivery line (`core/log.format_delivery`:
`to=<...>, relay=local, delay=..., delays=a/b/c/d, dsn=..., status=sent (...)`); each
recipient that is FINISHED (sent or bounced) is marked done in the queue file
(`qfile.mark_done`) BEFORE the worker answers with a `DeliveryResult`, and each result
goes to the message's status logs (bounce/, defer/, trace/: core/bounce_log.logs_for)
BEFORE the recipient is marked done: a bounce whose record cannot be written is deferred
instead.  A request to
verify (`sendmail -bv`, `Message.verifying`) is answered by the deliver function
without delivering; its lines say `status=deliverable`/`undeliverable`, and every
recipient is marked done. An exception the
deliver function did not expect is logged with its traceback and the recipient DEFERRED,
never lost.

`run_as(identity, action)` is how an agent acts as a user (DESIGN.md, Privileges): it forks
a child that closes every descriptor it inherited (queue file, spool directories, sockets),
drops to the user completely (setgroups, setgid, setuid) and runs ACTION, which reports
back through a pipe as a status record (`core/dsn.encode_status`) and optional bytes; an
exception in the child travels as a status, never as an exception. The serving process
never changes its own user IDs.

OWNS: the agent side of the delivery protocol, the done marks, the status log records of
its results, the delivery log lines, the privilege-dropping child. MUST NOT: move queue
files (qmgr's), or act as a user in the serving process. Hostile input: a request from a
process that may be confused (queue names, IDs and offsets are checked against the queue
file before anything is delivered), and whatever the deliver function touches.

Failure modes: `run_agent` returns an exit status (78 when systemd passed no socket under
the transport's name). `serve_connection` never raises for a bad caller, a bad request or a
bad queue file (each is logged; the recipients are deferred when there is a request to
answer). `run_as` never raises for what happens in the child: a child that dies, or
cannot drop privileges, gives a 4.3.0 status; OSError when it cannot fork.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import select
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sdmail.core import bounce_log
from sdmail.core.address import AddressError, quote_address
from sdmail.core.config import bind
from sdmail.core.deliver_request import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    DeliveryResult,
    RecipientStatus,
    RequestRecipient,
    status_word,
    verify_word,
)
from sdmail.core.dsn import DeliveryFailure, DsnError, Status, decode_status, encode_status
from sdmail.core.ipc import ProtocolError, encode_frame, peer_credentials, recv_frame
from sdmail.core.log import format_delivery, log_traceback, msg_info, msg_warning
from sdmail.core.qfile import CorruptQueueFile, QueueFile, iter_content, mark_done, read_envelope
from sdmail.core.records import MESSAGE_QUEUES, Envelope, Notify, Recipient, TraceFlag
from sdmail.core.skeleton import ExitCode, Fatal, PlainDaemonContext, run_daemon
from sdmail.core.spool import QueueFileHandle, Spool, SpoolError, lock_shared
from sdmail.core.systemd import listen_fds

S = TypeVar("S")
log = logging.getLogger("sdmail.agent")

_MAX_REQUEST_PAYLOAD = 0  # a delivery request is a header only
_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class AgentSettings:
    """The parameters the skeleton itself uses; field names are parameter names."""

    queue_directory: str
    mail_owner: str
    delay_logging_resolution_limit: int
    ipc_timeout: int
    default_process_limit: int


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt's end: its status, and the relay to log (None: the transport).
    A network agent adds when its connection was set up (CONN_SETUP_DONE: the log's delays
    c/d split there, as Postfix's msg_stats), when this recipient's fate was known (DONE;
    None: when it is logged) and the how-manyth transaction on its connection it was
    (CONN_USE, logged as `conn_use=N` above 1). Times are time.time() values."""

    status: Status
    relay: str | None = None
    conn_setup_done: float | None = None
    done: float | None = None
    conn_use: int = 1
    # The next hop took the DSN request (RFC 3461 "relayed" to a DSN-aware MTA): a
    # NOTIFY=SUCCESS notice is then its business, not ours.
    dsn_passed: bool = False
    # The recipient was an alias or .forward whose copies went on as new mail (DSN
    # "expanded"): a NOTIFY=SUCCESS notice says so, and the copies do not ask again.
    expanded: bool = False


class Message:
    """The message a request names: the envelope, and the content read once on demand."""

    def __init__(
        self, request: DeliveryRequest, handle: QueueFileHandle, queue_file: QueueFile
    ) -> None:
        self.request = request
        self.queue_id = request.queue_id
        self.queue_name = request.queue_name
        self.queue_file = queue_file
        self.envelope: Envelope = queue_file.envelope
        self.sender = queue_file.envelope.sender
        # sendmail -bv: the agent says what it would do ("delivers to mailbox") and
        # does nothing; each agent checks this where it would deliver.
        self.verifying = bool(request.trace_flags & TraceFlag.VERIFY)
        self._handle = handle
        self._content: bytes | None = None

    def content(self) -> bytes:
        """The whole message content (headers and body), LF line ends."""
        if self._content is None:
            self._content = b"".join(iter_content(self._handle.fd, self.queue_file))
        return self._content

    def header_block(self) -> bytes:
        """The message headers, up to and including the empty line that ends them."""
        return self.content()[: self.queue_file.body_offset]


DeliverRecipient = Callable[[Message, RequestRecipient], "Outcome | Sequence[Outcome]"]
DeliverRequest = Callable[[Message, Sequence[RequestRecipient]], "Sequence[Outcome]"]


@dataclass(frozen=True)
class Agent:
    """What an agent gives the skeleton for one connection: a function called per recipient
    (DELIVER_RECIPIENT) or once per request with one outcome per recipient (DELIVER_REQUEST),
    the transport it serves, and what to call when the connection is done."""

    transport: str
    deliver_recipient: DeliverRecipient | None = None
    deliver_request: DeliverRequest | None = None
    close: Callable[[], None] | None = None


# --------------------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------------------
def allowed_callers(mail_owner: str) -> frozenset[int]:
    """root, and the mail_owner user when it exists."""
    uids = {0}
    with contextlib.suppress(KeyError):
        uids.add(pwd.getpwnam(mail_owner).pw_uid)
    return frozenset(uids)


def serve_connection(
    conn: socket.socket, agent: Agent, settings: AgentSettings, spool: Spool
) -> None:
    """Serve the one request on CONN (see the module docstring); never raises for bad input."""
    caller = peer_credentials(conn)
    if caller.uid not in allowed_callers(settings.mail_owner):
        log.warning(
            "refusing a request from pid %d uid %d: only root and %s may call the %s agent",
            caller.pid,
            caller.uid,
            settings.mail_owner,
            agent.transport,
        )
        return
    conn.settimeout(settings.ipc_timeout)
    try:
        with conn.makefile("rb") as reader:
            frame = recv_frame(reader, _MAX_REQUEST_PAYLOAD)
        request = DeliveryRequest.from_header(frame.header)
    except (ProtocolError, OSError) as exc:
        log.warning("bad delivery request from pid %d: %s", caller.pid, exc)
        return
    result = handle_request(request, agent, settings, spool)
    try:
        conn.sendall(encode_frame(result.to_header()))
    except OSError as exc:
        msg_warning(request.queue_id, f"cannot send the delivery result to qmgr: {exc}")


# What became of each requested recipient; None: it was done before this request.
Outcomes = list[tuple[RequestRecipient, "list[Outcome] | None"]]


def handle_request(
    request: DeliveryRequest, agent: Agent, settings: AgentSettings, spool: Spool
) -> DeliveryResult:
    """Open and share-lock the queue file, deliver, mark done, log; the result for qmgr."""
    answer = _Answer(request, agent, settings)
    try:
        handle = _open_locked(request, spool)
    except (SpoolError, CorruptQueueFile, OSError, ValueError) as exc:
        where = f"{request.queue_name}/{request.queue_id}"
        msg_warning(request.queue_id, f"cannot open queue file {where}: {exc}")
        return answer.all_deferred("mail queue file is unavailable")
    with handle:
        try:
            queue_file = read_envelope(handle.fd)
        except (CorruptQueueFile, OSError) as exc:
            msg_warning(request.queue_id, f"cannot read queue file: {exc}")
            return answer.all_deferred("mail queue file is unavailable")
        message = Message(request, handle, queue_file)
        outcomes = _deliver(message, agent, _checked_recipients(request, queue_file))
        return answer.result(outcomes, handle)


def _open_locked(request: DeliveryRequest, spool: Spool) -> QueueFileHandle:
    if request.queue_name not in {q.value for q in MESSAGE_QUEUES}:
        raise ValueError(f"not a message queue: {request.queue_name!r}")
    handle = spool.open(request.queue_name, request.queue_id, writable=True)
    try:
        lock_shared(handle)
        if not spool.still_there(handle):
            raise SpoolError("removed or moved (postsuper?) before it could be locked")
        lock_recipient_records(handle.fd, [r.offset for r in request.recipients])
    except BaseException:
        handle.close()
        raise
    return handle


def lock_recipient_records(fd: int, offsets: list[int]) -> None:
    """Hold each requested recipient's record, waiting for another agent that holds it.

    Agents share the file lock (qmgr's exclusive one only tells it an agent works on
    the file), so two agents may get the same recipient: a request from a qmgr that was
    killed, and the same recipient dispatched again by its successor.  A POSIX record
    lock on the recipient's type byte makes the second wait until the first has marked
    it done, and the done marks are read only after this, so it is delivered once.  The
    locks go with the process's descriptor when the request ends; offsets are taken in
    order, so two agents never wait on each other.
    """
    for offset in sorted(set(offsets)):
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset, os.SEEK_SET)


def _checked_recipients(
    request: DeliveryRequest, queue_file: QueueFile
) -> list[tuple[RequestRecipient, Recipient | None]]:
    """Each requested recipient with the queue file's record at its offset (None: none)."""
    by_offset = {r.offset: r for r in queue_file.envelope.recipients}
    checked = []
    for wanted in request.recipients:
        record = by_offset.get(wanted.offset)
        if record is None or record.address != wanted.address:
            msg_warning(
                request.queue_id,
                f"queue file holds no recipient <{wanted.address}> at offset {wanted.offset}",
            )
            record = None
        checked.append((wanted, record))
    return checked


def _deliver(
    message: Message,
    agent: Agent,
    recipients: list[tuple[RequestRecipient, Recipient | None]],
) -> Outcomes:
    """Call the agent for each deliverable recipient; unexpected exceptions defer."""
    outcomes: dict[int, list[Outcome] | None] = {}
    deliverable = []
    for index, (_, record) in enumerate(recipients):
        if record is None:
            outcomes[index] = [Outcome(Status("4.3.0", "queue file recipient mismatch"))]
        elif record.done:
            outcomes[index] = None
        else:
            deliverable.append(index)
    if agent.deliver_request is not None and deliverable:
        wanted = [recipients[i][0] for i in deliverable]
        for index, outcome in zip(
            deliverable, _deliver_request(message, agent.deliver_request, wanted), strict=True
        ):
            outcomes[index] = [outcome]
    elif agent.deliver_recipient is not None:
        for index in deliverable:
            outcomes[index] = _deliver_one(message, agent.deliver_recipient, recipients[index][0])
    return [(wanted, outcomes.get(index)) for index, (wanted, _) in enumerate(recipients)]


def _deliver_request(
    message: Message, deliver: DeliverRequest, recipients: list[RequestRecipient]
) -> list[Outcome]:
    try:
        results = list(deliver(message, recipients))
        if len(results) != len(recipients):
            raise RuntimeError(f"{len(results)} outcomes for {len(recipients)} recipients")
    except DeliveryFailure as exc:
        return [Outcome(exc.status)] * len(recipients)
    except Exception as exc:
        return [_unexpected(message.queue_id, exc)] * len(recipients)
    return results


def _deliver_one(
    message: Message, deliver: DeliverRecipient, recipient: RequestRecipient
) -> list[Outcome]:
    try:
        outcome = deliver(message, recipient)
    except DeliveryFailure as exc:
        return [Outcome(exc.status)]
    except Exception as exc:
        return [_unexpected(message.queue_id, exc)]
    listed = [outcome] if isinstance(outcome, Outcome) else list(outcome)
    return listed or [Outcome(Status("4.3.0", "delivery produced no outcome"))]


def _unexpected(queue_id: str, exc: Exception) -> Outcome:
    msg_warning(queue_id, f"unexpected error during delivery: {type(exc).__name__}: {exc}")
    log_traceback(logging.getLogger("sdmail"), exc)
    return Outcome(Status("4.3.0", "mail system internal error"))


class _Answer:
    """Logs the outcomes of one request, marks finished recipients done, builds the result."""

    def __init__(self, request: DeliveryRequest, agent: Agent, settings: AgentSettings) -> None:
        self.request = request
        self.agent = agent
        self.settings = settings
        self.started = time.time()
        self.verifying = bool(request.trace_flags & TraceFlag.VERIFY)

    def all_deferred(self, text: str) -> DeliveryResult:
        failed = Outcome(Status("4.3.0", text))
        return self.result([(r, [failed]) for r in self.request.recipients], None)

    def result(self, outcomes: Outcomes, handle: QueueFileHandle | None) -> DeliveryResult:
        statuses = []
        for recipient, listed in outcomes:
            if listed is None:
                statuses.append(
                    RecipientStatus(
                        recipient.offset, recipient.address, SENT, "2.0.0", "already delivered"
                    )
                )
                continue
            finished = time.time()
            for outcome in listed:
                self._log(recipient, outcome, finished)
            final = _combined(listed)
            if any(outcome.expanded for outcome in listed):
                final = replace(final, expanded=True)
            word = status_word(final.status)
            if handle is not None and not self._record(recipient, final) and word == BOUNCED:
                # Done without its bounce record, the sender would never hear of it.
                final = Outcome(Status("4.3.0", "cannot write the bounce log"), final.relay)
                word = DEFERRED
            if (word != DEFERRED or self.verifying) and handle is not None:
                _mark_done(handle, self.request.queue_id, recipient)
            statuses.append(
                RecipientStatus(
                    recipient.offset,
                    recipient.address,
                    word,
                    final.status.dsn,
                    final.status.text,
                    final.relay or self.agent.transport,
                )
            )
        return DeliveryResult(tuple(statuses))

    def _record(self, recipient: RequestRecipient, outcome: Outcome) -> bool:
        """The status log records for RECIPIENT's result, before its done mark (see
        core/bounce_log); False when one could not be written."""
        request = self.request
        status = outcome.status
        notify = Notify(recipient.notify)
        if outcome.dsn_passed:
            notify &= ~Notify.SUCCESS
        wanted = bounce_log.logs_for(
            status,
            notify=notify,
            trace_flags=request.trace_flags,
            transport=request.transport,
        )
        written = True
        for log, given in wanted:
            expanded = outcome.expanded and given in ("delivered", "relayed")
            action = "expanded" if expanded else given
            record = bounce_log.StatusRecord(
                address=recipient.address,
                status=status_word(status),
                dsn=status.dsn,
                text=status.text,
                orig_address=recipient.orig_address,
                relay=outcome.relay or self.agent.transport,
                action=action,
            )
            try:
                bounce_log.append(self.settings.queue_directory, log, request.queue_id, record)
            except OSError as exc:
                msg_warning(request.queue_id, f"cannot write the {log} log: {exc.strerror or exc}")
                written = False
        return written

    def _log(self, recipient: RequestRecipient, outcome: Outcome, finished: float) -> None:
        request = self.request
        active_at = request.queue_active_at or self.started
        finished = outcome.done or finished
        setup_done = outcome.conn_setup_done or self.started  # no connection: c is 0
        delays = (
            max(0.0, active_at - request.arrival),
            max(0.0, self.started - active_at),
            max(0.0, setup_done - self.started),
            max(0.0, finished - setup_done),
        )
        line = format_delivery(
            request.queue_id,
            to=_logged_address(recipient.address),
            orig_to=_logged_address(recipient.orig_address) if recipient.orig_address else None,
            relay=outcome.relay or self.agent.transport,
            conn_use=outcome.conn_use,
            delay_total=max(0.0, finished - request.arrival),
            delays=delays,
            dsn=outcome.status.dsn,
            status=verify_word(outcome.status) if self.verifying else status_word(outcome.status),
            text=outcome.status.text,
            resolution_limit=self.settings.delay_logging_resolution_limit,
        )
        msg_info(request.queue_id, line)


def _combined(outcomes: list[Outcome]) -> Outcome:
    """One recipient's overall outcome: any deferral defers it, else any bounce bounces it."""
    for wanted in (DEFERRED, BOUNCED):
        for outcome in outcomes:
            if status_word(outcome.status) == wanted:
                return outcome
    return outcomes[0]


def _mark_done(handle: QueueFileHandle, queue_id: str, recipient: RequestRecipient) -> None:
    try:
        mark_done(handle, recipient.offset)
    except (OSError, CorruptQueueFile, ValueError) as exc:
        msg_warning(queue_id, f"cannot mark <{recipient.address}> done: {exc}")


def _logged_address(address: str) -> str:
    try:
        return quote_address(address)
    except AddressError:
        return address


# --------------------------------------------------------------------------------------
# Acting as a user
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """Whose rights a child takes: user and group IDs, and the account's name, home, shell."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    extra_groups: tuple[int, ...] = ()

    @classmethod
    def from_passwd(cls, entry: pwd.struct_passwd) -> Identity:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)

    @classmethod
    def named(cls, name: str) -> Identity:
        """The account NAME; KeyError when there is none."""
        return cls.from_passwd(pwd.getpwnam(name))


@dataclass(frozen=True)
class ChildResult:
    """What a child reports: a status, and bytes when it read something for the parent."""

    status: Status
    data: bytes | None = None


def run_as(identity: Identity, action: Callable[[], ChildResult | Status]) -> ChildResult:
    """Run ACTION in a child that has become IDENTITY; its result (see module docstring)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (runs in the child; tested through its reports)
        _child(identity, action, read_end, write_end)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read()
    finally:
        _, wait_status = os.waitpid(pid, 0)
    return _parse_report(report, wait_status)


def _child(
    identity: Identity, action: Callable[[], ChildResult | Status], read_end: int, write_end: int
) -> None:
    code = 0
    try:
        os.close(read_end)
        _reset_signals()
        os.closerange(3, write_end)
        os.closerange(write_end + 1, _max_fd())
        drop_privileges(identity)
        os.umask(0o077)
        result = _call(action)
    except BaseException as exc:
        result = ChildResult(Status("4.3.0", f"delivery process failed: {_describe(exc)}"))
        code = 1
    try:
        _write_report(write_end, result)
    finally:
        os._exit(code)


def _call(action: Callable[[], ChildResult | Status]) -> ChildResult:
    try:
        outcome = action()
    except DeliveryFailure as exc:
        return ChildResult(exc.status)
    return outcome if isinstance(outcome, ChildResult) else ChildResult(outcome)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _reset_signals() -> None:
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def drop_privileges(identity: Identity) -> None:
    """Become IDENTITY for good: groups, then group, then user; checked afterwards.

    Raises PermissionError when this process may not change to it."""
    groups = [identity.gid, *identity.extra_groups]
    if os.geteuid() == 0:
        os.setgroups(groups)
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    if os.getresuid() != (identity.uid,) * 3 or os.getresgid() != (identity.gid,) * 3:
        raise PermissionError(f"could not change to user {identity.name}")
    if identity.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PermissionError(f"could regain root after changing to {identity.name}")


def _write_report(fd: int, result: ChildResult) -> None:
    record = encode_status(result.status).encode("utf-8") + b"\n"
    if result.data is not None:
        record += b"+" + result.data
    view = memoryview(record)
    while view:
        view = view[os.write(fd, view) :]


def _parse_report(report: bytes, wait_status: int) -> ChildResult:
    line, newline, rest = report.partition(b"\n")
    if newline:
        try:
            status = decode_status(line.decode("utf-8"))
        except (DsnError, UnicodeDecodeError):
            pass
        else:
            return ChildResult(status, rest[1:] if rest.startswith(b"+") else None)
    if os.WIFSIGNALED(wait_status):
        why = f"delivery process killed by signal {os.WTERMSIG(wait_status)}"
    else:
        why = f"delivery process exited with status {os.waitstatus_to_exitcode(wait_status)}"
    return ChildResult(Status("4.3.0", why))


# --------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------
def listening_socket(name: str) -> socket.socket:
    """The socket systemd passed under NAME (or the only one passed); Fatal when none."""
    passed = listen_fds()
    chosen = [fd for fd in passed if fd.name == name]
    if not chosen and len(passed) == 1:
        chosen = passed
    if not chosen:
        names = ", ".join(fd.name for fd in passed) or "none"
        raise Fatal(
            f"no listening socket named {name!r} was passed (LISTEN_FDNAMES: {names})",
            ExitCode.CONFIG,
        )
    listener = socket.socket(fileno=chosen[0].fd)
    listener.setblocking(False)
    return listener


def run_agent(
    program: str,
    argv: Sequence[str] | None,
    make_agent: Callable[[PlainDaemonContext[Any]], Agent],
    *,
    settings: type[Any] | None = None,
    socket_name: str | None = None,
) -> int:
    """Run the delivery agent PROGRAM: MAKE_AGENT(ctx) is called in each connection's worker
    and gives the Agent that serves it. SOCKET_NAME defaults to PROGRAM."""

    def serve(ctx: PlainDaemonContext[Any]) -> int:
        listener = listening_socket(socket_name or program)
        probe = make_agent(ctx)  # a configuration the agent refuses stops the start here
        if probe.close is not None:
            probe.close()
        try:
            return _serve_forever(ctx, listener, make_agent)
        finally:
            listener.close()

    return run_daemon(program, argv, serve, settings=settings)


def _serve_forever(
    ctx: PlainDaemonContext[Any],
    listener: socket.socket,
    make_agent: Callable[[PlainDaemonContext[Any]], Agent],
) -> int:
    workers: set[int] = set()
    previous = signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # wakes select
    ctx.ready()
    try:
        while True:
            _reap(workers, ctx, block=False)
            if ctx.stopping or ctx.lifetime.should_exit():
                break
            limit = bind(AgentSettings, ctx.config).default_process_limit
            accepting = not ctx.lifetime.used_up() and len(workers) < limit
            waiting = [ctx.wakeup_fd] + ([listener] if accepting else [])
            timeout = ctx.lifetime.seconds_until_idle_exit()
            timeout = _POLL_SECONDS if timeout is None else min(timeout, _POLL_SECONDS)
            readable, _, _ = select.select(waiting, [], [], timeout)
            if ctx.wakeup_fd in readable and ctx.wait(0):
                break
            if listener in readable:
                _accept(ctx, listener, make_agent, workers)
        _reap(workers, ctx, block=True)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    return 0


def _accept(
    ctx: PlainDaemonContext[Any],
    listener: socket.socket,
    make_agent: Callable[[PlainDaemonContext[Any]], Agent],
    workers: set[int],
) -> None:
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        log.warning("accept: %s", exc)
        return
    with conn:
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the worker; tested through the process tests)
            listener.close()
            _worker(ctx, conn, make_agent)
    workers.add(pid)
    ctx.lifetime.begin_use()


def _worker(
    ctx: PlainDaemonContext[Any],
    conn: socket.socket,
    make_agent: Callable[[PlainDaemonContext[Any]], Agent],
) -> None:
    code = 0
    try:
        _reset_signals()
        conn.setblocking(True)
        settings = bind(AgentSettings, ctx.config)
        agent = make_agent(ctx)
        try:
            with Spool(settings.queue_directory) as spool:
                serve_connection(conn, agent, settings, spool)
        finally:
            if agent.close is not None:
                agent.close()
    except BaseException as exc:
        code = ExitCode.SOFTWARE
        with contextlib.suppress(BaseException):
            log.critical("worker failed: %s", _describe(exc))
            log_traceback(logging.getLogger("sdmail"), exc)
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
        os._exit(code)


def _reap(workers: set[int], ctx: PlainDaemonContext[Any], *, block: bool) -> None:
    while workers:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            for _ in range(len(workers)):
                ctx.lifetime.end_use()
            workers.clear()
            return
        if pid == 0:
            return
        if pid in workers:
            workers.discard(pid)
            ctx.lifetime.end_use()
