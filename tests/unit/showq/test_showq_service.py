"""The showq service's answer to one client (sdmail/showq/service.py); the accept loop,
the lifetime and the refusal of other users are process tests (tests/process)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from sdmail.core.ipc import encode_frame
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.showq_proto import Listing
from sdmail.core.skeleton import ExitCode, Fatal
from sdmail.core.spool import Spool
from sdmail.showq.service import ShowqSettings, answer_client, take_listener


@pytest.fixture
def settings(tmp_path: Path) -> ShowqSettings:
    with Spool(tmp_path) as spool:
        spool.create_directories()
    return ShowqSettings(
        queue_directory=str(tmp_path),
        authorized_mailq_users=("static:anyone",),
        mail_owner="sdmail",
        ipc_timeout=10,
    )


def serve_in_thread(settings: ShowqSettings) -> tuple[socket.socket, threading.Thread]:
    client, server = socket.socketpair()

    def run() -> None:
        with server:
            answer_client(server, settings)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return client, thread


def test_the_caller_gets_every_queued_message(settings: ShowqSettings):
    envelope = Envelope(sender="a@example.org", recipients=(Recipient("b@example.net"),))
    with Spool(settings.queue_directory) as spool:
        queue_id = spool.create(QueueName.DEFERRED, envelope, b"body\n").queue_id
    client, thread = serve_in_thread(settings)
    with Listing(client, client.makefile("rb")) as listing:
        listing.handshake("socketpair")
        entries = list(listing)
    thread.join(10)
    assert [(e.queue_id, e.sender, e.message_size) for e in entries] == [
        (queue_id, "a@example.org", 5)
    ]


def test_a_request_that_is_not_showq_gets_no_answer(settings: ShowqSettings):
    client, thread = serve_in_thread(settings)
    with client:
        client.sendall(encode_frame({"op": "submit"}))
        assert client.recv(100) == b""
    thread.join(10)


def test_without_its_socket_the_service_will_not_start(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    with pytest.raises(Fatal) as refused:
        take_listener()
    assert refused.value.exit_code == ExitCode.CONFIG
    assert "no listening socket named 'showq'" in refused.value.message
