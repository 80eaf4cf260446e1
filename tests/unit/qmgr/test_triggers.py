"""qmgr's trigger socket (sdmail/qmgr/triggers.py): order, de-duplication, flush permission."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from sdmail.core.trigger import FLUSH_QUEUE, trigger
from sdmail.qmgr.triggers import TriggerServer, ordered_requests


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"I", [b"I"]),
        (b"IDAF", [b"F", b"A", b"D", b"I"]),
        (b"WWWW", [b"W"]),
        (b"DxI\x00\xffD", [b"D", b"I"]),
        (b"", []),
    ],
)
def test_requests_are_deduplicated_and_put_in_qmgr_order(
    data: bytes, expected: list[bytes]
) -> None:
    assert ordered_requests(data) == expected


def serve_one(
    tmp_path: Path, acl: tuple[str, ...], exempt: frozenset[int], sent: bytes
) -> list[list[bytes]]:
    received: list[list[bytes]] = []
    path = tmp_path / "qmgr"

    async def scenario() -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(8)
        server = TriggerServer(listener, received.append, lambda: (acl, exempt))
        await server.start()
        assert await asyncio.to_thread(trigger, str(path), sent)
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        server.close()

    asyncio.run(scenario())
    return received


def test_a_flush_from_an_authorized_user_is_passed_on(tmp_path: Path) -> None:
    assert serve_one(tmp_path, ("static:anyone",), frozenset(), FLUSH_QUEUE) == [
        [b"F", b"A", b"D", b"I"]
    ]


def test_an_exempt_uid_may_always_flush(tmp_path: Path) -> None:
    me = os.getuid()
    assert serve_one(tmp_path, ("nosuchuser",), frozenset({me}), b"FD") == [[b"F", b"D"]]


def test_a_flush_from_an_unauthorized_user_keeps_only_the_wakeup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the test runs as one user; an empty exemption and a list without it refuses it
    received = serve_one(tmp_path, ("nosuchuser",), frozenset(), FLUSH_QUEUE)
    assert received == [[b"I"]]
    assert "refused by authorized_flush_users" in caplog.text


def test_a_lone_refused_flush_is_not_passed_on(tmp_path: Path) -> None:
    assert serve_one(tmp_path, ("nosuchuser",), frozenset(), b"F") == []
