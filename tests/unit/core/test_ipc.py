"""Frames between sdmail's processes, the submission and delivery protocols, triggers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.deliver_request import (
    DeliveryRequest,
    DeliveryResult,
    RecipientStatus,
    RequestRecipient,
)
from sdmail.core.ipc import (
    ConnectionClosed,
    ProtocolError,
    encode_frame,
    peer_credentials,
    read_frame,
    recv_frame,
    send_frame,
)
from sdmail.core.mail_stream import (
    SubmitError,
    SubmitRecipient,
    SubmitRequest,
    accepted,
    refused,
    submit,
)
from sdmail.core.trigger import FLUSH_QUEUE, trigger


def test_frame_round_trip_with_binary_payload():
    data = encode_frame({"op": "x", "text": "caf\u00e9"}, b"\x00\xffbody\n")
    frame = recv_frame(io.BytesIO(data))
    assert frame.header == {"op": "x", "text": "caf\u00e9"}
    assert frame.payload == b"\x00\xffbody\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json\n", "malformed frame header"),
        (b'{"v": 2}\n', "unsupported protocol version"),
        (b"[1]\n", "not an object"),
        (b'{"v": 1, "payload": -1}\n', "malformed payload length"),
        (b'{"v": 1, "payload": 10}\nshort', "payload cut short"),
        (b'{"v": 1', "cut short"),
    ],
)
def test_bad_frames_are_protocol_errors(data, message):
    with pytest.raises(ProtocolError, match=message):
        recv_frame(io.BytesIO(data))


def test_closed_connection_before_a_frame():
    with pytest.raises(ConnectionClosed):
        recv_frame(io.BytesIO(b""))


def test_payload_limit():
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        recv_frame(io.BytesIO(encode_frame({}, b"x" * 100)), max_payload=10)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_frame_or_a_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        recv_frame(io.BytesIO(data))


def test_async_reader_reads_what_the_blocking_writer_sends():
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(encode_frame({"op": "a"}, b"12345") + encode_frame({"op": "b"}))
        reader.feed_eof()
        first = await read_frame(reader)
        second = await read_frame(reader)
        with pytest.raises(ConnectionClosed):
            await read_frame(reader)
        return first, second

    first, second = asyncio.run(main())
    assert (first.header["op"], first.payload, second.header["op"]) == ("a", b"12345", "b")


@pytest.mark.parametrize(
    ("data", "limit", "message"),
    [
        (b'{"v": 1', 2**16, "frame header cut short"),
        (b'{"v": 1, "payload": 10}\nshort', 2**16, "payload cut short: 5 of 10 bytes"),
        (b'{"v": 1, "op": "' + b"x" * 100 + b'"}\n', 32, "frame header too long"),
    ],
)
def test_async_reader_turns_bad_streams_into_protocol_errors(data, limit, message):
    # These are the paths that name asyncio's exceptions, which ipc imports only there.
    async def main():
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(data)
        reader.feed_eof()
        await read_frame(reader)

    with pytest.raises(ProtocolError, match=message):
        asyncio.run(main())


def test_peer_credentials_name_the_other_process():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        creds = peer_credentials(left)
    assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_delivery_request_and_result_round_trip():
    request = DeliveryRequest(
        "active",
        "QID",
        "local",
        "h.example",
        "a@x",
        (RequestRecipient("b@y", 120, "B@y", 6, "rfc822;B@y"),),
        1.5,
    )
    assert DeliveryRequest.from_header(request.to_header()) == request
    result = DeliveryResult((RecipientStatus(120, "b@y", "sent", "2.0.0", "delivered", "local"),))
    assert DeliveryResult.from_header(result.to_header()) == result


@pytest.mark.parametrize(
    "header",
    [
        {
            "op": "result",
            "recipients": [
                {"offset": 1, "address": "a", "status": "maybe", "dsn": "2.0.0", "text": ""}
            ],
        },
        {
            "op": "result",
            "recipients": [
                {"offset": 1, "address": "a", "status": "sent", "dsn": "9.9.9", "text": ""}
            ],
        },
        {"op": "result"},
        {"op": "deliver", "queue_id": "x"},
        {"op": "other"},
    ],
)
def test_malformed_delivery_messages_are_protocol_errors(header):
    with pytest.raises(ProtocolError):
        if header["op"] == "deliver":
            DeliveryRequest.from_header(header)
        else:
            DeliveryResult.from_header(header)


def serve_once(path: Path, reply: dict, seen: list) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run():
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as reader:
            frame = recv_frame(reader)
            seen.append(
                (SubmitRequest.from_header(frame.header), frame.payload, peer_credentials(conn))
            )
            send_frame(conn, reply)
        server.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_submit_returns_the_queue_id(tmp_path):
    seen: list = []
    thread = serve_once(tmp_path / "postdrop", accepted("QID1"), seen)
    req = SubmitRequest(None, (SubmitRecipient("bob"),), full_name="Ann", extract_recipients=True)
    assert submit(str(tmp_path / "postdrop"), req, b"Subject: x\n\nbody\n") == "QID1"
    thread.join()
    got, payload, creds = seen[0]
    assert got == req and payload == b"Subject: x\n\nbody\n" and creds.uid == os.getuid()


def test_submit_refused_raises_submit_error(tmp_path):
    thread = serve_once(
        tmp_path / "cleanup", refused(552, "5.3.4", "Error: message file too big"), []
    )
    with pytest.raises(SubmitError) as error:
        submit(str(tmp_path / "cleanup"), SubmitRequest("a@x"), b"x")
    thread.join()
    assert str(error.value) == "552 5.3.4 Error: message file too big"
    assert not error.value.temporary


def test_submit_to_a_missing_service_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        submit(str(tmp_path / "nothing"), SubmitRequest("a@x"), b"x")


def test_malformed_submission_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        SubmitRequest.from_header({"op": "submit", "sender": 5})
    with pytest.raises(ProtocolError):
        SubmitRequest.from_header({"op": "submit", "sender": "a", "attributes": {"x": 1}})


def test_trigger_delivers_bytes_or_reports_nobody_listening(tmp_path):
    path = tmp_path / "qmgr"
    assert trigger(str(path), b"W") is False
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    assert trigger(str(path), FLUSH_QUEUE) is True
    conn, _ = server.accept()
    with conn, server:
        assert conn.recv(16) == b"FADI"
