"""The delivery-agent skeleton: one request per connection, shared lock, done marks before the
answer, the delivery log line, unexpected errors deferred, and the privilege-dropping child."""

from __future__ import annotations

import logging
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sdmail.agent import (
    Agent,
    AgentSettings,
    ChildResult,
    Identity,
    Message,
    Outcome,
    handle_request,
    run_as,
    serve_connection,
)
from sdmail.core import qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.dsn import PermFail, Status, TempFail
from sdmail.core.ipc import ConnectionClosed, recv_frame, send_frame
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import QueueFileLocked, Spool, lock_exclusive

REPO = Path(__file__).resolve().parents[2]
CONTENT = b"Subject: hello\nDelivered-To: x@y\n\nbody\n"
SETTINGS = AgentSettings(
    queue_directory="",
    mail_owner="sdmail",
    delay_logging_resolution_limit=2,
    ipc_timeout=30,
    default_process_limit=10,
)
DELIVERY_LINE = re.compile(
    r"(?P<qid>\w+): to=<(?P<to>[^>]*)>, (?:orig_to=<(?P<orig>[^>]*)>, )?relay=(?P<relay>\S+), "
    r"delay=[\d.]+, delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=(?P<dsn>[245]\.\d+\.\d+), "
    r"status=(?P<status>sent|deferred|bounced) \((?P<text>.*)\)"
)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path) as the_spool:
        the_spool.create_directories()
        yield the_spool


def queue_message(spool: Spool, *addresses: str, done: Sequence[str] = ()) -> DeliveryRequest:
    envelope = Envelope(
        sender="ann@example.org",
        recipients=tuple(Recipient(a, orig_address="orig-" + a, done=a in done) for a in addresses),
        arrival_sec=int(time.time()) - 5,
    )
    created = spool.create(QueueName.ACTIVE, envelope, CONTENT)
    with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
        decoded = qfile.read_envelope(handle.fd)
    recipients = tuple(
        RequestRecipient(r.address, r.offset or 0, r.orig_address)
        for r in decoded.envelope.recipients
    )
    return DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport="test",
        nexthop="example.org",
        sender=envelope.sender,
        recipients=recipients,
        arrival=float(envelope.arrival_sec),
        queue_active_at=time.time() - 1,
    )


def ask(agent: Agent, spool: Spool, request: DeliveryRequest | None) -> DeliveryResult | None:
    """Play qmgr: send REQUEST over a socket pair to serve_connection; its answer, or None."""
    ours, theirs = socket.socketpair()
    settings = AgentSettings(**{**SETTINGS.__dict__, "queue_directory": str(spool.path)})

    def serve() -> None:
        with theirs:
            serve_connection(theirs, agent, settings, spool)

    server = threading.Thread(target=serve)
    server.start()
    with ours:
        if request is not None:
            send_frame(ours, request.to_header())
        else:
            ours.sendall(b"this is no frame\n")
        try:
            with ours.makefile("rb") as reader:
                frame = recv_frame(reader)
        except ConnectionClosed:
            frame = None
    server.join(30)
    return None if frame is None else DeliveryResult.from_header(frame.header)


def done_marks(spool: Spool, queue_id: str) -> dict[str, bool]:
    with spool.open(QueueName.ACTIVE, queue_id) as handle:
        envelope = qfile.read_envelope(handle.fd).envelope
    return {r.address: r.done for r in envelope.recipients}


def delivery_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    found = (DELIVERY_LINE.fullmatch(r.getMessage()) for r in caplog.records)
    return [match for match in found if match]


def by_address(outcomes: dict[str, Status]) -> Callable[[Message, RequestRecipient], Outcome]:
    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        status = outcomes[recipient.address]
        if status.is_temporary:
            raise TempFail(status)
        if status.is_permanent:
            raise PermFail(status)
        return Outcome(status)

    return deliver


# -- requests ------------------------------------------------------------------------------
def test_finished_recipients_are_marked_done_and_deferred_ones_not(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = queue_message(spool, "a@example.org", "b@example.org", "c@example.org")
    deliver = by_address(
        {
            "a@example.org": Status("2.0.0", "delivered to mailbox"),
            "b@example.org": Status("4.2.0", "mailbox busy"),
            "c@example.org": Status("5.1.1", 'unknown user: "c"'),
        }
    )
    result = ask(Agent("test", deliver_recipient=deliver), spool, request)
    assert result is not None
    assert [(r.address, r.status, r.dsn, r.relay) for r in result.recipients] == [
        ("a@example.org", "sent", "2.0.0", "test"),
        ("b@example.org", "deferred", "4.2.0", "test"),
        ("c@example.org", "bounced", "5.1.1", "test"),
    ]
    assert done_marks(spool, request.queue_id) == {
        "a@example.org": True,
        "b@example.org": False,
        "c@example.org": True,
    }
    lines = delivery_lines(caplog)
    assert [(m["qid"], m["to"], m["orig"], m["relay"], m["status"]) for m in lines] == [
        (request.queue_id, "a@example.org", "orig-a@example.org", "test", "sent"),
        (request.queue_id, "b@example.org", "orig-b@example.org", "test", "deferred"),
        (request.queue_id, "c@example.org", "orig-c@example.org", "test", "bounced"),
    ]
    assert lines[0]["text"] == "delivered to mailbox"


def test_queue_file_is_share_locked_while_the_agent_works(spool: Spool) -> None:
    request = queue_message(spool, "a@example.org")
    seen: list[str] = []

    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        with spool.open(QueueName.ACTIVE, message.queue_id) as other:
            try:
                lock_exclusive(other)
            except QueueFileLocked:
                seen.append("locked")
        seen.append(message.content().decode())
        return Outcome(Status("2.0.0", "ok"))

    ask(Agent("test", deliver_recipient=deliver), spool, request)
    assert seen == ["locked", CONTENT.decode()]
    with spool.open(QueueName.ACTIVE, request.queue_id) as after:
        lock_exclusive(after)  # released with the request


def test_message_gives_envelope_content_and_headers(spool: Spool) -> None:
    request = queue_message(spool, "a@example.org")
    seen: list[object] = []

    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        seen.extend(
            [message.sender, message.header_block(), message.envelope.recipients[0].address]
        )
        return Outcome(Status("2.0.0", "ok"))

    ask(Agent("test", deliver_recipient=deliver), spool, request)
    assert seen == ["ann@example.org", b"Subject: hello\nDelivered-To: x@y\n\n", "a@example.org"]


def test_unexpected_exception_defers_with_traceback_logged(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request = queue_message(spool, "a@example.org")

    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        raise ZeroDivisionError("oops")

    result = ask(Agent("test", deliver_recipient=deliver), spool, request)
    assert result is not None
    assert [(r.status, r.dsn) for r in result.recipients] == [("deferred", "4.3.0")]
    assert done_marks(spool, request.queue_id) == {"a@example.org": False}
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    assert "unexpected error during delivery: ZeroDivisionError: oops" in caplog.text


def test_several_outcomes_are_all_logged_and_a_deferral_wins(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = queue_message(spool, "a@example.org")

    def deliver(message: Message, recipient: RequestRecipient) -> list[Outcome]:
        return [
            Outcome(Status("2.0.0", "delivered to file: /x")),
            Outcome(Status("5.3.0", "bad command")),
            Outcome(Status("4.3.0", "temporary failure")),
        ]

    result = ask(Agent("test", deliver_recipient=deliver), spool, request)
    assert result is not None
    assert [(r.status, r.text) for r in result.recipients] == [("deferred", "temporary failure")]
    assert [m["status"] for m in delivery_lines(caplog)] == ["sent", "bounced", "deferred"]


def test_per_request_agent_answers_for_every_recipient(spool: Spool) -> None:
    request = queue_message(spool, "a@example.org", "b@example.org")

    def deliver(message: Message, recipients: Sequence[RequestRecipient]) -> list[Outcome]:
        return [
            Outcome(Status("2.0.0", f"250 ok {r.address}"), relay="mx[192.0.2.1]:25")
            for r in recipients
        ]

    result = ask(Agent("smtp", deliver_request=deliver), spool, request)
    assert result is not None
    assert [(r.status, r.relay) for r in result.recipients] == [("sent", "mx[192.0.2.1]:25")] * 2
    assert done_marks(spool, request.queue_id) == {"a@example.org": True, "b@example.org": True}


def test_recipient_not_at_its_offset_is_deferred_undelivered(spool: Spool) -> None:
    request = queue_message(spool, "a@example.org")
    wrong = RequestRecipient("evil@example.org", request.recipients[0].offset)
    calls: list[str] = []

    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        calls.append(recipient.address)
        return Outcome(Status("2.0.0", "ok"))

    bad = DeliveryRequest(**{**request.__dict__, "recipients": (wrong,)})
    result = ask(Agent("test", deliver_recipient=deliver), spool, bad)
    assert result is not None
    assert [(r.status, r.dsn) for r in result.recipients] == [("deferred", "4.3.0")]
    assert calls == []
    assert done_marks(spool, request.queue_id) == {"a@example.org": False}


def test_recipient_already_done_is_not_delivered_again(spool: Spool) -> None:
    request = queue_message(spool, "a@example.org", done=["a@example.org"])
    calls: list[str] = []

    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        calls.append(recipient.address)
        return Outcome(Status("2.0.0", "ok"))

    result = ask(Agent("test", deliver_recipient=deliver), spool, request)
    assert result is not None
    assert [r.status for r in result.recipients] == ["sent"]
    assert calls == []


@pytest.mark.parametrize("queue_name", ["active", "bounce", "../active"])
def test_missing_or_misnamed_queue_file_defers_everything(spool: Spool, queue_name: str) -> None:
    request = queue_message(spool, "a@example.org")
    spool.remove(QueueName.ACTIVE, request.queue_id)
    moved = DeliveryRequest(**{**request.__dict__, "queue_name": queue_name})
    result = ask(Agent("test", deliver_recipient=by_address({})), spool, moved)
    assert result is not None
    assert [(r.status, r.text) for r in result.recipients] == [
        ("deferred", "mail queue file is unavailable")
    ]


def test_garbage_request_gets_no_answer(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    assert ask(Agent("test", deliver_recipient=by_address({})), spool, None) is None
    assert "bad delivery request" in caplog.text


# -- acting as a user ----------------------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing users needs root")
NOBODY = Identity.named("nobody")


@needs_root
def test_child_runs_fully_as_the_user() -> None:
    def report() -> ChildResult:
        facts = (os.getresuid(), os.getresgid(), sorted(os.getgroups()), oct(os.umask(0)))
        return ChildResult(Status("2.0.0", "ok"), repr(facts).encode())

    result = run_as(NOBODY, report)
    uid, gid = NOBODY.uid, NOBODY.gid
    assert result.status == Status("2.0.0", "ok")
    assert result.data == repr(((uid,) * 3, (gid,) * 3, [gid], "0o77")).encode()
    assert os.geteuid() == 0  # the parent never changed


@needs_root
def test_child_has_extra_groups_only_when_asked() -> None:
    mail_gid = 8
    identity = Identity(NOBODY.name, NOBODY.uid, NOBODY.gid, "/", "/bin/sh", (mail_gid,))
    result = run_as(
        identity, lambda: ChildResult(Status("2.0.0", "ok"), repr(sorted(os.getgroups())).encode())
    )
    assert result.data == repr(sorted({NOBODY.gid, mail_gid})).encode()


def test_child_inherits_no_descriptors(tmp_path: Path) -> None:
    secret = os.open(tmp_path / "queue-file", os.O_RDWR | os.O_CREAT, 0o600)
    try:

        def probe() -> Status:
            try:
                os.fstat(secret)
            except OSError:
                return Status("2.0.0", "closed")
            return Status("2.0.0", "still open")

        me = Identity.from_passwd(pwd.getpwuid(os.getuid()))
        assert run_as(me, probe).status.text == "closed"
    finally:
        os.close(secret)


def test_child_failures_come_back_as_statuses() -> None:
    me = Identity.from_passwd(pwd.getpwuid(os.getuid()))

    def fails_temporarily() -> Status:
        raise TempFail(Status("4.2.0", "mailbox busy"))

    def crashes() -> Status:
        raise KeyError("surprise")

    def dies() -> Status:
        os.kill(os.getpid(), signal.SIGKILL)
        return Status("2.0.0", "unreachable")

    assert run_as(me, fails_temporarily).status == Status("4.2.0", "mailbox busy")
    crashed = run_as(me, crashes).status
    assert crashed.dsn == "4.3.0" and "KeyError" in crashed.text
    assert run_as(me, dies).status == Status("4.3.0", "delivery process killed by signal 9")


def test_child_read_data_distinguishes_nothing_from_empty() -> None:
    me = Identity.from_passwd(pwd.getpwuid(os.getuid()))
    assert run_as(me, lambda: ChildResult(Status("2.0.0", "x"), b"")).data == b""
    assert run_as(me, lambda: ChildResult(Status("2.0.0", "x"))).data is None


# -- the service ---------------------------------------------------------------------------
def test_agent_without_its_socket_exits_78(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n")
    code = (
        "import sys; from sdmail.agent import run_agent, Agent;"
        "sys.exit(run_agent('local', ['-c', sys.argv[1]], lambda ctx: Agent('local')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LISTEN_FDS", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 78
    assert b"no listening socket named 'local'" in done.stderr


def test_two_agents_given_the_same_recipient_deliver_it_once(spool: Spool, tmp_path: Path) -> None:
    """A request of a killed qmgr and its successor's request for the same recipients,
    handled at once by two agent processes: each recipient is delivered exactly once."""
    request = queue_message(spool, "a@example.org", "b@example.org")
    ledger = tmp_path / "ledger"
    settings = AgentSettings(**{**SETTINGS.__dict__, "queue_directory": str(spool.path)})

    def deliver(message: Message, recipient: RequestRecipient) -> Outcome:
        with open(ledger, "a") as handle:
            handle.write(recipient.address + "\n")
        time.sleep(0.3)
        return Outcome(Status("2.0.0", "delivered"))

    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # an agent worker, as the agent forks one per connection
            try:
                handle_request(request, Agent("test", deliver), settings, spool)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    assert sorted(ledger.read_text().split()) == ["a@example.org", "b@example.org"]
    assert done_marks(spool, request.queue_id) == {"a@example.org": True, "b@example.org": True}
