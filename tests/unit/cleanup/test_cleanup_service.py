"""cleanup/service.py: reading a request frame, and a request into a cleanup Submission."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.cleanup.api import Origin
from sdmail.cleanup.service import BadRequest, read_request, submission_of
from sdmail.core.ipc import ConnectionClosed, PeerCredentials, ProtocolError, encode_frame
from sdmail.core.mail_stream import SubmitRecipient, SubmitRequest
from sdmail.core.records import BodyType, DsnRet, Notify, Recipient

ROOT = PeerCredentials(pid=4321, uid=0, gid=0)


def read(data: bytes, size_limit: int = 0):
    async def go():
        reader = asyncio.StreamReader(limit=1 << 20)
        reader.feed_data(data)
        reader.feed_eof()
        first = await read_request(reader, size_limit)
        return first, reader

    return asyncio.run(go())


def test_a_frame_gives_its_header_and_payload():
    (header, payload), _ = read(encode_frame({"op": "submit", "sender": "a"}, b"content\n"))
    assert header == {"op": "submit", "sender": "a"}
    assert payload == b"content\n"


def test_a_payload_over_the_limit_is_read_and_dropped_and_the_next_frame_is_whole():
    frames = encode_frame({"n": 1}, b"x" * 200_000) + encode_frame({"n": 2}, b"small")

    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(frames)
        reader.feed_eof()
        return [await read_request(reader, 1000), await read_request(reader, 1000)]

    assert asyncio.run(go()) == [({"n": 1}, None), ({"n": 2}, b"small")]


def test_no_bytes_at_all_is_a_closed_connection():
    with pytest.raises(ConnectionClosed):
        read(b"")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"v":1,"op":"submit"', "cut short"),
        (b"not json\n", "malformed frame header"),
        (b'{"v":9}\n', "unsupported protocol version"),
        (b'{"v":1,"payload":10}\nabc', "payload cut short after 3 bytes"),
        (b'{"v":1,"payload":-1}\n', "malformed payload length"),
    ],
)
def test_a_broken_frame_is_a_protocol_error_naming_why(data: bytes, why: str):
    with pytest.raises(ProtocolError, match=why):
        read(data)


def test_a_header_line_over_the_reader_limit_is_refused():
    async def go():
        reader = asyncio.StreamReader(limit=1024)
        reader.feed_data(b"{" + b" " * 5000)
        reader.feed_eof()
        await read_request(reader, 0)

    with pytest.raises(ProtocolError, match="too long"):
        asyncio.run(go())


@given(st.binary(max_size=300))
def test_any_bytes_give_a_frame_or_a_protocol_error(data: bytes):
    with contextlib.suppress(ProtocolError):
        read(data, 100)


# -- submission_of --------------------------------------------------------------------------
def test_every_field_of_a_forward_request_reaches_the_submission():
    req = SubmitRequest(
        sender="owner-list@example.org",
        recipients=(
            SubmitRecipient("bob@example.org", "rfc822;list@example.org", Notify.FAILURE.value),
            SubmitRecipient("carol@example.org"),
        ),
        full_name="List Owner",
        ret="hdrs",
        envid="E1",
        body_type="8bitmime",
        smtputf8=True,
        origin="forward",
    )
    sub = submission_of(req, Origin.FORWARD, ROOT)
    assert sub.sender == "owner-list@example.org"
    assert sub.recipients == (
        Recipient("bob@example.org", notify=Notify.FAILURE, orcpt="rfc822;list@example.org"),
        Recipient("carol@example.org"),
    )
    assert (sub.origin, sub.uid, sub.full_name) == (Origin.FORWARD, 0, "List Owner")
    assert (sub.ret, sub.envid, sub.body_type, sub.smtputf8) == (
        DsnRet.HDRS,
        "E1",
        BodyType.EIGHT_BIT_MIME,
        True,
    )
    assert sub.extract_recipients is False


def test_no_sender_means_the_callers_login_name():
    sub = submission_of(SubmitRequest(None, (SubmitRecipient("b"),)), Origin.NOTICE, ROOT)
    assert sub.sender == "root"


def test_no_sender_from_a_uid_without_a_login_name_is_a_bad_request():
    stranger = PeerCredentials(pid=1, uid=3_999_999, gid=0)
    with pytest.raises(BadRequest, match="no login name for uid 3999999"):
        submission_of(SubmitRequest(None, (SubmitRecipient("b"),)), Origin.FORWARD, stranger)


def raw_request(**fields) -> SubmitRequest:
    """A request as a hostile client can send it: from_header checks only some types."""
    header = {"op": "submit", "sender": "s@example.org", "recipients": [{"address": "r"}]}
    header.update(fields)
    return SubmitRequest.from_header(json.loads(json.dumps(header)))


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"sender": "a\r\nRCPT TO:<x>"}, "sender holds a control character"),
        ({"recipients": [{"address": "b\n"}]}, "recipient 1 holds a control character"),
        ({"recipients": [{"address": "b", "notify": 99}]}, "bad notify value 99"),
        ({"recipients": [{"address": "b", "notify": "4"}]}, "notify is not a number"),
        ({"recipients": [{"address": "b", "notify": True}]}, "notify is not a number"),
        ({"recipients": [{"address": "b", "orcpt": 5}]}, "orcpt is not a string"),
        ({"full_name": ["x"]}, "full_name is not a string"),
        ({"envid": 7}, "envid is not a string"),
        ({"ret": "ALL"}, "bad ret"),
        ({"body_type": "binarymime"}, "bad body_type"),
        ({"smtputf8": "yes"}, "smtputf8 is not true or false"),
        ({"extract_recipients": 1}, "extract_recipients is not true or false"),
    ],
)
def test_fields_of_the_wrong_shape_are_bad_requests(fields, why):
    with pytest.raises(BadRequest, match=why):
        submission_of(raw_request(**fields), Origin.FORWARD, ROOT)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "sender",
                "full_name",
                "ret",
                "envid",
                "body_type",
                "smtputf8",
                "extract_recipients",
                "recipients",
            ]
        ),
        json_values,
    )
)
def test_any_json_fields_give_a_submission_or_a_clear_refusal(fields):
    try:
        req = raw_request(**fields)
    except ProtocolError:
        return
    with contextlib.suppress(BadRequest):
        submission_of(req, Origin.FORWARD, ROOT)
