"""The queue listing: reading the queue into entries, and the showq protocol
(core/showq_proto.py)."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.core import bounce_log
from sdmail.core.bounce_log import StatusRecord
from sdmail.core.ipc import encode_frame, recv_frame, send_frame
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.showq_proto import (
    Listing,
    QueueEntry,
    RecipientEntry,
    ShowqProtocolError,
    ShowqRefused,
    ShowqUnavailable,
    entry_frames,
    request_listing,
    scan_queue,
    send_listing,
    status_ok,
    status_refused,
)
from sdmail.core.spool import Spool

CONTENT = b"Subject: test\n\nbody\n"


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "spool"
    root.mkdir()
    with Spool(root) as spool:
        spool.create_directories()
    yield root


def put(
    queue_dir: Path,
    queue: QueueName,
    *,
    sender: str = "a@example.org",
    recipients: tuple[Recipient, ...] = (Recipient("b@example.org"),),
    content: bytes = CONTENT,
    arrival: int = 1_764_021_060,
) -> str:
    envelope = Envelope(sender=sender, recipients=recipients, arrival_sec=arrival)
    with Spool(queue_dir) as spool:
        return spool.create(queue, envelope, content).queue_id


def defer(queue_dir: Path, queue_id: str, address: str, text: str) -> None:
    record = StatusRecord(address, "deferred", "4.4.1", text)
    bounce_log.append(queue_dir, QueueName.DEFER, queue_id, record)


# --------------------------------------------------------------------------------------
# Reading the queue
# --------------------------------------------------------------------------------------
def test_queues_are_listed_in_postfix_order_with_their_facts(queue: Path):
    hold = put(queue, QueueName.HOLD, sender="h@x")
    deferred = put(queue, QueueName.DEFERRED, sender="d@x")
    incoming = put(queue, QueueName.INCOMING, sender="i@x")
    active = put(queue, QueueName.ACTIVE, sender="a@x", content=b"x" * 5000)
    maildrop = put(queue, QueueName.MAILDROP, sender="m@x")
    entries = list(scan_queue(queue))
    assert [(e.queue_name, e.queue_id, e.sender) for e in entries] == [
        ("maildrop", maildrop, "m@x"),
        ("active", active, "a@x"),
        ("incoming", incoming, "i@x"),
        ("deferred", deferred, "d@x"),
        ("hold", hold, "h@x"),
    ]
    by_queue = {e.queue_name: e for e in entries}
    assert by_queue["active"].message_size == 5000  # the content, not the file
    assert by_queue["incoming"].message_size == len(CONTENT)
    maildrop_file = queue / "maildrop" / maildrop
    assert by_queue["maildrop"].message_size == maildrop_file.stat().st_size
    assert all(e.arrival_time == 1_764_021_060 for e in entries)
    assert all(e.recipients == (RecipientEntry("b@example.org"),) for e in entries)
    assert not any(e.forced_expire for e in entries)


def test_done_recipients_are_not_listed(queue: Path):
    recipients = (
        Recipient("done@x", done=True),
        Recipient("todo@x", orig_address="alias@x"),
    )
    put(queue, QueueName.DEFERRED, recipients=recipients)
    (entry,) = scan_queue(queue)
    assert entry.recipients == (RecipientEntry("todo@x", "alias@x"),)


def test_delay_reasons_come_from_the_defer_log_latest_first_listed_first(queue: Path):
    recipients = tuple(Recipient(a) for a in ("plain@x", "late@y", "early@z"))
    queue_id = put(queue, QueueName.DEFERRED, recipients=recipients)
    defer(queue, queue_id, "early@z", "connect to z: Connection refused")
    defer(queue, queue_id, "late@y", "host y said: 451 later")
    defer(queue, queue_id, "early@z", "connect to z: Connection timed out")
    defer(queue, queue_id, "gone@w", "a recipient no longer in the file")
    (entry,) = scan_queue(queue)
    assert entry.recipients == (
        RecipientEntry("early@z", None, "connect to z: Connection timed out"),
        RecipientEntry("late@y", None, "host y said: 451 later"),
        RecipientEntry("plain@x"),
    )


def test_the_null_sender_stays_empty(queue: Path):
    put(queue, QueueName.INCOMING, sender="")
    (entry,) = scan_queue(queue)
    assert entry.sender == ""


def test_forced_expire_is_the_owner_execute_bit(queue: Path):
    queue_id = put(queue, QueueName.DEFERRED)
    path = queue / "deferred" / queue_id
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (entry,) = scan_queue(queue)
    assert entry.forced_expire


def test_files_that_cannot_be_used_are_skipped_and_reported(queue: Path, tmp_path: Path):
    good = put(queue, QueueName.DEFERRED)
    corrupt = put(queue, QueueName.ACTIVE)
    path = queue / "active" / corrupt
    path.write_bytes(path.read_bytes()[:-3])  # no end record: a partial file
    linked = put(queue, QueueName.INCOMING)
    os.rename(queue / "incoming" / linked, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", queue / "incoming" / linked)
    fifo = put(queue, QueueName.HOLD)
    os.unlink(queue / "hold" / fifo)
    os.mkfifo(queue / "hold" / fifo)
    skipped: list[tuple[str, str, str]] = []
    entries = list(scan_queue(queue, lambda q, i, why: skipped.append((q, i, why))))
    assert [e.queue_id for e in entries] == [good]
    assert sorted((q, i) for q, i, _ in skipped) == sorted(
        [("active", corrupt), ("incoming", linked), ("hold", fifo)]
    )
    reasons = {q: why for q, _, why in skipped}
    assert "symbolic link" in reasons["incoming"]
    assert "not a regular file" in reasons["hold"]


def test_a_missing_queue_directory_is_reported_and_the_rest_listed(queue: Path):
    kept = put(queue, QueueName.HOLD)
    os.rmdir(queue / "active")
    skipped: list[tuple[str, str, str]] = []
    entries = list(scan_queue(queue, lambda q, i, why: skipped.append((q, i, why))))
    assert [e.queue_id for e in entries] == [kept]
    assert [(q, i) for q, i, _ in skipped] == [("active", "")]


def test_the_queue_is_read_one_file_at_a_time(queue: Path):
    ids = {put(queue, QueueName.DEFERRED) for _ in range(5)}
    entries = scan_queue(queue)
    first = next(entries)
    for queue_id in ids - {first.queue_id}:
        os.unlink(queue / "deferred" / queue_id)
    assert list(entries) == []  # the files removed after the first entry were never read


def test_an_unreadable_defer_log_costs_only_the_reasons(queue: Path, tmp_path: Path):
    queue_id = put(queue, QueueName.DEFERRED)
    (tmp_path / "target").write_text("{}\n")
    os.symlink(tmp_path / "target", queue / "defer" / queue_id)
    (entry,) = scan_queue(queue)
    assert entry.recipients == (RecipientEntry("b@example.org"),)


# --------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------
ENTRY = QueueEntry(
    queue_name="deferred",
    queue_id="3Pt2mN2VXxznjll",
    arrival_time=1_764_021_060,
    message_size=4378,
    forced_expire=False,
    sender="caf\u00e9@example.org",
    recipients=(
        RecipientEntry("user@example.com", "alias@example.com", "connect to x: refused"),
        RecipientEntry("\udcff8bit@example.com"),
    ),
)


def serve_once(path: Path, answer: Callable[[socket.socket], None]) -> threading.Thread:
    """A showq stand-in at PATH: reads the request of one client, then runs ANSWER."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as reader:
                assert recv_frame(reader).header == {"op": "showq"}
                answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_entries_survive_the_trip_byte_for_byte(tmp_path: Path):
    path = tmp_path / "showq"

    def answer(conn: socket.socket) -> None:
        send_frame(conn, status_ok())
        send_listing(conn, [ENTRY, ENTRY])

    serve_once(path, answer)
    with request_listing(path, timeout=10) as listing:
        assert list(listing) == [ENTRY, ENTRY]


def test_many_recipients_travel_in_several_frames(tmp_path: Path):
    recipients = tuple(RecipientEntry(f"user{n}@example.com", None, "x" * 200) for n in range(5000))
    entry = QueueEntry("active", "3Pt2mN2VXxznjll", 1, 2, True, "", recipients)
    assert len(list(entry_frames(entry))) > 1
    path = tmp_path / "showq"

    def answer(conn: socket.socket) -> None:
        send_frame(conn, status_ok())
        send_listing(conn, [entry])

    serve_once(path, answer)
    with request_listing(path, timeout=10) as listing:
        assert list(listing) == [entry]


def test_a_huge_reason_is_cut_so_that_the_recipient_fits_a_frame():
    entry = QueueEntry(
        "deferred", "Q", 1, 2, False, "s", (RecipientEntry("a@x", None, "y" * 5_000_000),)
    )
    frames = list(entry_frames(entry))
    assert len(frames) == 1
    assert len(frames[0]["recipients"][0]["delay_reason"]) == 64 * 1024


def test_a_refusal_carries_the_services_text(tmp_path: Path):
    path = tmp_path / "showq"
    text = "User carol(1001) is not allowed to view the mail queue"
    serve_once(path, lambda conn: send_frame(conn, status_refused(text)))
    with pytest.raises(ShowqRefused, match=r"carol\(1001\)"):
        request_listing(path, timeout=10)


def test_no_socket_and_no_listener_are_unavailable(tmp_path: Path):
    with pytest.raises(ShowqUnavailable) as missing:
        request_listing(tmp_path / "none", timeout=10)
    assert missing.value.errno == errno.ENOENT
    dead = tmp_path / "dead"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(dead))
    with pytest.raises(ShowqUnavailable) as refused:
        request_listing(dead, timeout=10)
    assert refused.value.errno == errno.ECONNREFUSED


def test_a_service_that_closes_without_answering_is_unavailable(tmp_path: Path):
    path = tmp_path / "showq"
    serve_once(path, lambda conn: None)
    with pytest.raises(ShowqUnavailable, match="closed without an answer"):
        request_listing(path, timeout=10)


def test_a_listing_without_its_end_is_cut_short(tmp_path: Path):
    path = tmp_path / "showq"

    def answer(conn: socket.socket) -> None:
        send_frame(conn, status_ok())
        for header in entry_frames(ENTRY):
            send_frame(conn, header)

    serve_once(path, answer)
    with request_listing(path, timeout=10) as listing:
        stream = iter(listing)
        assert next(stream) == ENTRY
        with pytest.raises(ShowqProtocolError, match="cut short"):
            next(stream)


def test_a_message_whose_recipient_frames_never_come_is_malformed(tmp_path: Path):
    path = tmp_path / "showq"
    first = {**next(entry_frames(ENTRY)), "more": True}

    def answer(conn: socket.socket) -> None:
        send_frame(conn, status_ok())
        send_frame(conn, first)
        send_frame(conn, {"op": "end", "messages": 1})

    serve_once(path, answer)
    with request_listing(path, timeout=10) as listing, pytest.raises(ShowqProtocolError):
        list(listing)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
frame_headers = st.one_of(
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["message", "recipients", "end"])},
        optional={
            name: json_values
            for name in (
                "queue_name",
                "queue_id",
                "arrival_time",
                "message_size",
                "forced_expire",
                "sender",
                "recipients",
                "more",
            )
        },
    ),
)


@settings(max_examples=150)
@given(headers=st.lists(frame_headers, max_size=5), tail=st.binary(max_size=40))
def test_hostile_server_output_is_entries_or_a_protocol_error(headers, tail):
    data = encode_frame(status_ok()) + b"".join(encode_frame(h) for h in headers) + tail
    left, right = socket.socketpair()
    with right:
        right.sendall(data)
        right.shutdown(socket.SHUT_WR)
        listing = Listing(left, left.makefile("rb"))
        with listing:
            listing.handshake("socketpair")
            try:
                for entry in listing:
                    assert isinstance(entry, QueueEntry)
                    json.dumps(entry.recipients and entry.recipients[0].address)
            except ShowqProtocolError:
                pass
