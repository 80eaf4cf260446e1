"""Forwarding through the cleanup service: the content it gets, and what each answer means."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdmail.core import ipc
from sdmail.core.mail_stream import SubmitRequest, accepted, refused
from sdmail.core.records import DsnRet, Envelope, Notify
from sdmail.local.forward import Forwarding, forward, forwarded_content

ENVELOPE = Envelope(sender="ann@example.org", ret=DsnRet.HDRS, envid="E1")


class Cleanup:
    def __init__(self, path: Path, reply: dict[str, Any]) -> None:
        self.requests: list[tuple[SubmitRequest, bytes]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.reply = reply
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                frame = ipc.recv_frame(reader)
                self.requests.append((SubmitRequest.from_header(frame.header), frame.payload))
                ipc.send_frame(conn, self.reply)


@pytest.fixture
def how(tmp_path: Path) -> Forwarding:
    return Forwarding(str(tmp_path), "mail.example.test", "sdmail", 10, add_delivered_to=True)


def serving(tmp_path: Path, reply: dict[str, Any]) -> Iterator[Cleanup]:
    cleanup = Cleanup(tmp_path / "cleanup", reply)
    yield cleanup
    cleanup.listener.close()


def call(how: Forwarding) -> Any:
    return forward(
        how,
        queue_id="4jZQQQQQQQz1",
        envelope=ENVELOPE,
        sender="owner-list@mail.example.test",
        addresses=["bob", "carol@example.net"],
        notify=int(Notify.FAILURE.value),
        orcpt="rfc822;list@mail.example.test",
        delivered_to="list@mail.example.test",
        content=b"Subject: x\n\nbody\n",
    )


def test_forwarded_content_has_received_and_delivered_to_on_top(how: Forwarding) -> None:
    content = forwarded_content(how, "4jZQQQQQQQz1", "joe@x", b"Subject: x\n\n", when=0)
    lines = content.split(b"\n")
    assert lines[0] == b"Received: by mail.example.test (sdmail)"
    assert lines[1].startswith(b"\tid 4jZQQQQQQQz1; ")
    assert lines[2:] == [b"Delivered-To: joe@x", b"Subject: x", b"", b""]


def test_accepted_forward_names_the_new_queue_id(tmp_path: Path, how: Forwarding) -> None:
    for cleanup in serving(tmp_path, accepted("4jZNEWNEWNEWz9")):
        status = call(how)
        assert (status.dsn, status.text) == ("2.0.0", "forwarded as 4jZNEWNEWNEWz9")
        [(request, payload)] = cleanup.requests
        assert request.sender == "owner-list@mail.example.test"
        assert request.origin == "forward"
        assert (request.ret, request.envid) == ("HDRS", "E1")
        assert [(r.address, r.orcpt, r.notify) for r in request.recipients] == [
            ("bob", "rfc822;list@mail.example.test", Notify.FAILURE.value),
            ("carol@example.net", "rfc822;list@mail.example.test", Notify.FAILURE.value),
        ]
        assert payload.endswith(b"Delivered-To: list@mail.example.test\nSubject: x\n\nbody\n")


@pytest.mark.parametrize(
    ("reply", "dsn"),
    [
        (refused(550, "5.7.1", "forwarding refused"), "5.7.1"),
        (refused(451, "4.3.0", "queue file write error"), "4.3.0"),
        (refused(550, "bogus", "odd code"), "5.3.0"),
        ({"op": "nonsense"}, "4.3.0"),
    ],
)
def test_refusals_bounce_or_defer_as_their_class_says(
    tmp_path: Path, how: Forwarding, reply: dict[str, Any], dsn: str
) -> None:
    for _ in serving(tmp_path, reply):
        assert call(how).dsn == dsn


def test_unreachable_cleanup_service_defers(how: Forwarding) -> None:
    status = call(how)
    assert status.dsn == "4.3.0"
    assert status.text == (
        "mail forwarding failed: cleanup service unavailable: No such file or directory"
    )
