"""Handing a request to an agent (sdmail/qmgr/dispatch.py), against real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sdmail.core import ipc
from sdmail.core.deliver_request import (
    SENT,
    DeliveryRequest,
    DeliveryResult,
    RecipientStatus,
    RequestRecipient,
)
from sdmail.qmgr import dispatch

REQUEST = DeliveryRequest(
    queue_name="active",
    queue_id="4jZMRq0W6zzJF6V",
    transport="local",
    nexthop="mail.example.test",
    sender="joe@example.org",
    recipients=(RequestRecipient("ann@mail.example.test", 120),),
    arrival=1.0,
)


def agent(tmp_path: Path, behave: Callable[[socket.socket], None]) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "local"))
    listener.listen(4)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            behave(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def deliver(tmp_path: Path, request: DeliveryRequest = REQUEST, timeout: float = 5):
    return asyncio.run(dispatch.deliver(tmp_path, request, timeout=timeout))


def test_the_agent_gets_the_request_and_its_answer_comes_back(tmp_path: Path) -> None:
    seen: list[DeliveryRequest] = []

    def answer(conn: socket.socket) -> None:
        with conn.makefile("rb") as reader:
            seen.append(DeliveryRequest.from_header(ipc.recv_frame(reader).header))
        status = RecipientStatus(120, "ann@mail.example.test", SENT, "2.0.0", "delivered")
        ipc.send_frame(conn, DeliveryResult((status,)).to_header())

    listener = agent(tmp_path, answer)
    result = deliver(tmp_path)
    listener.close()
    assert seen == [REQUEST]
    assert [(s.offset, s.status) for s in result.recipients] == [(120, SENT)]


def test_no_socket_is_transport_unavailable(tmp_path: Path) -> None:
    with pytest.raises(dispatch.TransportUnavailable):
        deliver(tmp_path)


def test_a_socket_nobody_listens_on_is_transport_unavailable(tmp_path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "local"))
    dead.close()  # the file stays, the listener is gone: connection refused
    with pytest.raises(dispatch.TransportUnavailable):
        deliver(tmp_path)


@pytest.mark.parametrize("name", ["../local", "", ".hidden", "a/b", "x\x00"])
def test_a_transport_name_that_cannot_be_a_socket_is_unavailable(tmp_path: Path, name: str) -> None:
    request = DeliveryRequest(**{**REQUEST.__dict__, "transport": name})
    with pytest.raises(dispatch.TransportUnavailable):
        deliver(tmp_path, request)


def test_an_agent_that_hangs_up_is_a_transport_failure(tmp_path: Path) -> None:
    listener = agent(tmp_path, lambda conn: conn.recv(65536))
    with pytest.raises(dispatch.TransportFailed):
        deliver(tmp_path)
    listener.close()


def test_an_answer_that_is_not_a_result_is_a_transport_failure(tmp_path: Path) -> None:
    def garbage(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b'{"v":1,"op":"nonsense"}\n')

    listener = agent(tmp_path, garbage)
    with pytest.raises(dispatch.TransportFailed, match="malformed delivery result"):
        deliver(tmp_path)
    listener.close()


def test_an_agent_that_never_answers_times_out(tmp_path: Path) -> None:
    done = threading.Event()
    listener = agent(tmp_path, lambda conn: done.wait(5))
    with pytest.raises(dispatch.TransportFailed, match="no answer within"):
        deliver(tmp_path, timeout=0.2)
    done.set()
    listener.close()
