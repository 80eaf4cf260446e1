"""The queue-file codec: golden bytes, round trips, hostile bytes, in-place updates."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import operator
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdmail.core import qfile
from sdmail.core.qfile import CorruptQueueFile, InvalidEnvelope, QueueFileWriter
from sdmail.core.records import (
    BodyType,
    ClientInfo,
    DsnRet,
    Envelope,
    Notify,
    Recipient,
    RewriteContext,
)

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "qfile"

# -- golden files ----------------------------------------------------------------

LONG_LINE = b"X-Long: " + b"y" * 5000 + b"\n"

GOLDEN_MESSAGES: dict[str, tuple[Envelope, bytes]] = {
    "null_sender": (
        Envelope(
            sender="",
            recipients=(Recipient("postmaster@example.org"),),
            arrival_sec=1700000000,
            arrival_usec=123456,
        ),
        b"Subject: hello\n\nhi\n",
    ),
    "full": (
        Envelope(
            sender="Ann.Sender@example.com",
            recipients=(
                Recipient(
                    "bob@example.org",
                    orig_address="Bob@Example.org",
                    notify=Notify.SUCCESS | Notify.FAILURE,
                    orcpt="rfc822;Bob@Example.org",
                ),
                Recipient("carol@example.org", done=True),
                Recipient("d\udce9@example.org", orig_address="alias@example.org"),
                Recipient("never@example.org", notify=Notify.NEVER),
            ),
            arrival_sec=1712345678,
            arrival_usec=999999,
            delay_warning_time=1712360078,
            sender_fullname="Ann Sender",
            ret=DsnRet.HDRS,
            envid="QQ314159",
            smtputf8=True,
            body_type=BodyType.EIGHT_BIT_MIME,
            client=ClientInfo(
                log_client_name="mail.example.com",
                log_client_address="192.0.2.7",
                log_client_port=41234,
                log_helo_name="mail.example.com",
                log_protocol_name="ESMTP",
                log_message_origin="mail.example.com[192.0.2.7]",
                sasl_method="PLAIN",
                sasl_username="ann",
                rewrite_context=RewriteContext.REMOTE,
            ),
            attributes=(("orig_queue_id", "0"), ("empty", "")),
            trace_flags=1,
        ),
        b"From: Ann <ann@example.com>\nSubject: caf\xc3\xa9\n"
        + LONG_LINE
        + b"\nbody line\n\n.leading dot\nno final newline",
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_MESSAGES))
def test_encoding_gives_exactly_the_golden_bytes(name: str) -> None:
    envelope, content = GOLDEN_MESSAGES[name]
    assert qfile.encode(envelope, content) == (GOLDEN / f"{name}.qf").read_bytes()


@pytest.mark.parametrize("name", sorted(GOLDEN_MESSAGES))
def test_decoding_the_golden_file_gives_the_message_back(name: str) -> None:
    envelope, content = GOLDEN_MESSAGES[name]
    data = (GOLDEN / f"{name}.qf").read_bytes()
    decoded = qfile.decode(data)
    assert decoded.envelope == envelope
    assert decoded.content_from(data) == content
    assert decoded.content_size == len(content)
    assert decoded.version == 1
    assert decoded.file_size == len(data)


def test_golden_minimal_file_layout_is_the_documented_one() -> None:
    data = (GOLDEN / "null_sender.qf").read_bytes()
    assert data.startswith(b"V\x011T\x111700000000 123456W\x0f" + b" " * 14 + b"0S\x00")
    assert data.endswith(b"M\x13Subject: hello\n\nhi\nC\x0519 16E\x00")


def test_body_offset_points_after_the_empty_line() -> None:
    envelope, content = GOLDEN_MESSAGES["full"]
    decoded = qfile.decode(qfile.encode(envelope, content))
    assert content[decoded.body_offset :] == b"body line\n\n.leading dot\nno final newline"


# -- round trips -------------------------------------------------------------------

storable_text = st.one_of(
    st.text(),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
optional_text = st.none() | storable_text
notify_flags = st.sets(st.sampled_from(list(Notify))).map(
    lambda flags: functools.reduce(operator.or_, flags, Notify(0))
)
recipients = st.builds(
    Recipient,
    address=storable_text,
    orig_address=optional_text,
    notify=notify_flags,
    orcpt=optional_text,
    done=st.booleans(),
)
clients = st.builds(
    ClientInfo,
    log_client_name=optional_text,
    log_client_address=optional_text,
    log_client_port=st.none() | st.integers(0, 65535),
    log_helo_name=optional_text,
    log_protocol_name=optional_text,
    log_message_origin=optional_text,
    sasl_method=optional_text,
    sasl_username=optional_text,
    rewrite_context=st.none() | st.sampled_from(list(RewriteContext)),
)
attribute_names = st.from_regex(r"[A-Za-z0-9_.-]+", fullmatch=True).filter(
    lambda n: n not in qfile.RESERVED_ATTRIBUTES
)
envelopes = st.builds(
    Envelope,
    sender=storable_text,
    recipients=st.lists(recipients, max_size=5).map(tuple),
    arrival_sec=st.integers(0, 2**40),
    arrival_usec=st.integers(0, 999_999),
    delay_warning_time=st.integers(-1, 10**15 - 1),
    sender_fullname=optional_text,
    ret=st.none() | st.sampled_from(list(DsnRet)),
    envid=optional_text,
    smtputf8=st.booleans(),
    body_type=st.none() | st.sampled_from(list(BodyType)),
    client=clients,
    attributes=st.lists(
        st.tuples(attribute_names, storable_text), max_size=4, unique_by=lambda a: a[0]
    ).map(tuple),
)


@given(envelope=envelopes, content=st.binary())
def test_any_envelope_and_content_round_trip(envelope: Envelope, content: bytes) -> None:
    data = qfile.encode(envelope, content)
    decoded = qfile.decode(data)
    assert decoded.envelope == envelope
    assert decoded.content_from(data) == content


def reference_body_offset(content: bytes) -> int:
    if content.startswith(b"\n"):
        return 1
    found = content.find(b"\n\n")
    return len(content) if found < 0 else found + 2


@given(content=st.binary(), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_streaming_in_any_chunks_gives_the_same_file(content: bytes, cuts: list[int]) -> None:
    envelope = Envelope(sender="a@example.org", recipients=(Recipient("b@example.org"),))
    out: list[bytes] = []
    writer = QueueFileWriter(lambda b: out.append(bytes(b)), envelope)
    pieces = sorted({min(c, len(content)) for c in cuts} | {0, len(content)})
    for start, end in itertools.pairwise(pieces):
        writer.write(content[start:end])
    size = writer.finish()
    data = b"".join(out)
    assert data == qfile.encode(envelope, content)
    assert size == len(data)
    assert qfile.decode(data).body_offset == reference_body_offset(content)


@pytest.mark.parametrize("length", [5000, 1 << 20, (1 << 20) + 1])
def test_a_long_line_round_trips_whole(length: int) -> None:
    content = b"Subject: x\n\n" + b"a" * length + b"\n"
    data = qfile.encode(Envelope(sender=""), content)
    assert qfile.decode(data).content_from(data) == content


@pytest.mark.parametrize("chunk", [4095, (1 << 20) - 1, 1 << 20, (3 << 20) + 5])
def test_segment_boundaries_do_not_depend_on_how_the_writer_was_fed(chunk: int) -> None:
    content = bytes(range(256)) * ((5 << 20) // 256 + 3)
    envelope = Envelope(sender="")
    out: list[bytes] = []
    writer = QueueFileWriter(lambda b: out.append(bytes(b)), envelope)
    for start in range(0, len(content), chunk):
        writer.write(content[start : start + chunk])
    writer.finish()
    data = b"".join(out)
    assert data == qfile.encode(envelope, content)
    segments = qfile.decode(data).segments
    assert [s.length for s in segments] == [1 << 20] * 5 + [len(content) - (5 << 20)]


def test_a_ten_megabyte_message_is_encoded_and_decoded_fast() -> None:
    content = (b"x" * 76 + b"\n") * (10_000_000 // 77)
    envelope = Envelope(sender="a@example.org", recipients=(Recipient("b@example.org"),))
    started = time.perf_counter()
    data = qfile.encode(envelope, content)
    assert qfile.decode(data).content_from(data) == content
    # About 10 ms on the development machine; one record per line took 100.
    assert time.perf_counter() - started < 1.0


def test_writer_refuses_content_after_finish() -> None:
    writer = QueueFileWriter(lambda b: None, Envelope(sender=""))
    writer.finish()
    with pytest.raises(ValueError, match="already finished"):
        writer.write(b"x")


# -- what the encoder refuses ------------------------------------------------------


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (Envelope(sender="\ud800"), "sender is not storable text"),
        (Envelope(sender="\udcc3\udca9"), "surrogate escapes that form valid UTF-8"),
        (Envelope(sender="", attributes=(("a=b", "x"),)), "is not"),
        (Envelope(sender="", attributes=(("", "x"),)), "is not"),
        (Envelope(sender="", attributes=(("smtputf8", "yes"),)), "reserved"),
        (Envelope(sender="", attributes=(("log_client_name", "x"),)), "reserved"),
        (Envelope(sender="", attributes=(("x", "1"), ("x", "2"))), "given twice"),
        (Envelope(sender="", client=ClientInfo(log_client_port=70000)), "not a port"),
        (Envelope(sender="", arrival_usec=1_000_000), "arrival time"),
        (Envelope(sender="", arrival_sec=-1), "arrival time"),
        (Envelope(sender="", delay_warning_time=-2), "delay warning"),
        (Envelope(sender="", delay_warning_time=10**15), "delay warning"),
        (Envelope(sender="", recipients=(Recipient("\udfff"),)), "recipient"),
    ],
)
def test_encoder_refuses_what_it_cannot_store(envelope: Envelope, message: str) -> None:
    with pytest.raises(InvalidEnvelope, match=message):
        qfile.encode(envelope, b"")


# -- what the reader refuses -------------------------------------------------------

VALID = qfile.encode(*GOLDEN_MESSAGES["null_sender"])


def rec(rec_type: str, data: bytes) -> bytes:
    assert len(data) < 128
    return rec_type.encode() + bytes((len(data),)) + data


VERSION = rec("V", b"1")
ARRIVAL = rec("T", b"1 2")
WARNING = rec("W", b"%15d" % 0)
HEAD = VERSION + ARRIVAL + WARNING
TAIL = rec("C", b"0 0") + rec("E", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no end record"),
        (b"hello world", "unknown record type"),
        (rec("T", b"1 2") + rec("E", b""), "no version record first"),
        (
            rec("V", b"2") + ARRIVAL + WARNING + rec("S", b"") + TAIL,
            "unsupported queue file version 2",
        ),
        (rec("V", b"\xff") + ARRIVAL + WARNING + rec("S", b"") + TAIL, r"version b'\\xff'"),
        (HEAD + rec("S", b"") + rec("C", b"0 0"), "no end record"),
        (HEAD + rec("S", b"") + TAIL + b"x", "after the end record"),
        (HEAD + TAIL, "missing required records: S"),
        (HEAD + rec("S", b"") + rec("?", b"") + TAIL, "unknown record type"),
        (HEAD + rec("S", b"") + b"R\x7fshort", "runs past the end"),
        (HEAD + rec("S", b"") + b"R\x80\x00" + TAIL, "not minimally coded"),
        (HEAD + rec("S", b"") + b"R\xff\xff\xff\xff\xff\xff\xff\xff\x01", "record length too long"),
        (HEAD + rec("S", b"") + b"R", "header cut short"),
        (HEAD + rec("S", b"") + b"R\x80", "header cut short"),
        (HEAD + rec("S", b"") + rec("S", b"") + TAIL, "'S' repeated"),
        (HEAD + rec("S", b"") + rec("R", b"a") + rec("F", b"x") + TAIL, "'F' out of order"),
        (HEAD + rec("S", b"") + rec("O", b"a") + TAIL, "recipient attributes without"),
        (
            HEAD + rec("S", b"") + rec("n", b"NEVER") + rec("O", b"a") + rec("R", b"a") + TAIL,
            "'O' misplaced",
        ),
        (HEAD + rec("S", b"") + rec("n", b"SOMETIMES") + rec("R", b"a") + TAIL, "NOTIFY"),
        (HEAD + rec("S", b"") + rec("n", b"DELAY,DELAY") + rec("R", b"a") + TAIL, "NOTIFY"),
        (HEAD + rec("S", b"") + rec("<", b"ALL") + TAIL, "DSN RET"),
        (HEAD + rec("S", b"") + rec("A", b"novalue") + TAIL, "bad attribute"),
        (HEAD + rec("S", b"") + rec("A", b"a b=1") + TAIL, "bad attribute"),
        (HEAD + rec("S", b"") + rec("A", b"a=1") + rec("A", b"a=2") + TAIL, "'a' repeated"),
        (HEAD + rec("S", b"") + rec("A", b"log_client_port=99999") + TAIL, "log_client_port"),
        (HEAD + rec("S", b"") + rec("A", b"log_client_port=025") + TAIL, "log_client_port"),
        (HEAD + rec("S", b"") + rec("A", b"rewrite_context=x") + TAIL, "rewrite_context"),
        (HEAD + rec("S", b"") + rec("A", b"smtputf8=no") + TAIL, "smtputf8"),
        (HEAD + rec("S", b"") + rec("A", b"encoding=8bit") + TAIL, "encoding"),
        (HEAD + rec("S", b"") + rec("M", b"") + TAIL, "empty content segment"),
        (HEAD + rec("S", b"") + rec("M", b"ab") + TAIL, "segments hold 2"),
        (HEAD + rec("S", b"") + rec("C", b"0 1") + rec("E", b""), "body at 1"),
        (HEAD + rec("S", b"") + rec("C", b"00 0") + rec("E", b""), "bad content record"),
        (HEAD + rec("S", b"") + rec("C", b"0 0") + rec("E", b"x"), "end record is not empty"),
        (VERSION + rec("T", b"1 1000000") + WARNING + rec("S", b"") + TAIL, "bad arrival time"),
        (VERSION + rec("T", b"1") + WARNING + rec("S", b"") + TAIL, "bad arrival time"),
        (VERSION + ARRIVAL + rec("W", b"%14d" % 0) + rec("S", b"") + TAIL, "bad delay warning"),
        (VERSION + ARRIVAL + rec("W", b"%15d" % -2) + rec("S", b"") + TAIL, "bad delay warning"),
    ],
)
def test_reader_refuses_a_bad_file_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(CorruptQueueFile, match=message):
        qfile.decode(data)


def test_the_hand_built_file_is_valid_when_complete() -> None:
    decoded = qfile.decode(HEAD + rec("S", b"") + rec("R", b"a") + TAIL)
    assert decoded.envelope.recipients == (Recipient("a"),)


def test_every_truncation_of_a_valid_file_is_refused() -> None:
    for end in range(len(VALID)):
        with pytest.raises(CorruptQueueFile):
            qfile.decode(VALID[:end])


@given(data=st.binary())
def test_arbitrary_bytes_raise_only_corrupt_queue_file(data: bytes) -> None:
    with contextlib.suppress(CorruptQueueFile):
        qfile.decode(data)


@given(data=st.binary())
def test_arbitrary_bytes_after_a_valid_head_raise_only_corrupt_queue_file(data: bytes) -> None:
    with contextlib.suppress(CorruptQueueFile):
        qfile.decode(HEAD + data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(envelope=envelopes, position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_a_changed_byte_is_refused_or_read_without_crashing(
    envelope: Envelope, position: int, value: int
) -> None:
    data = bytearray(qfile.encode(envelope, b"Subject: x\n\nbody\n"))
    data[position % len(data)] = value
    with contextlib.suppress(CorruptQueueFile):
        qfile.decode(bytes(data))


# -- files on disk -----------------------------------------------------------------


def write_file(path: Path, envelope: Envelope, content: bytes) -> None:
    path.write_bytes(qfile.encode(envelope, content))


def test_read_envelope_from_a_descriptor_matches_decode(tmp_path: Path) -> None:
    envelope, content = GOLDEN_MESSAGES["full"]
    path = tmp_path / "f"
    write_file(path, envelope, content)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        from_fd = qfile.read_envelope(fd)
        assert from_fd == qfile.decode(path.read_bytes())
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7  # the file position is left alone
        assert b"".join(qfile.iter_content(fd, from_fd)) == content
    finally:
        os.close(fd)


def test_read_envelope_does_not_load_a_ten_megabyte_body(tmp_path: Path) -> None:
    content = b"Subject: big\n\n" + b"z" * 10_000_000
    path = tmp_path / "big"
    write_file(path, Envelope(sender="", recipients=(Recipient("a@example.org"),)), content)
    fd = os.open(path, os.O_RDONLY)
    try:
        tracemalloc.start()
        try:
            queue_file = qfile.read_envelope(fd)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert queue_file.content_size == len(content)
        assert peak < 1_000_000
        chunks = list(qfile.iter_content(fd, queue_file, chunk_size=65536))
        assert max(len(c) for c in chunks) == 65536
        assert b"".join(chunks) == content
    finally:
        os.close(fd)


def test_read_envelope_refuses_a_file_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "cut"
    path.write_bytes(VALID[:-1])
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptQueueFile, match="incomplete file"):
            qfile.read_envelope(fd)
    finally:
        os.close(fd)


def read_in_windows(fd: int, limit: int) -> list[qfile.QueueFile]:
    reads = [qfile.read_envelope(fd, recipient_limit=limit)]
    while (start := reads[-1].unread_offset) is not None:
        reads.append(qfile.read_envelope(fd, recipients_from=start, recipient_limit=limit))
    return reads


def test_a_window_reads_recipients_to_deliver_in_batches_each_once(tmp_path: Path) -> None:
    recipients = tuple(
        Recipient(
            f"r{n}@example.org",
            orig_address=f"o{n}@example.org" if n % 3 else None,
            notify=Notify.FAILURE if n % 2 else Notify(0),
            orcpt=f"rfc822;r{n}@example.org" if n % 5 == 0 else None,
            done=n % 4 == 0,
        )
        for n in range(1000)
    )
    path = tmp_path / "many"
    write_file(path, Envelope(sender="s@example.org", recipients=recipients), b"x\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        whole = qfile.read_envelope(fd)
        reads = read_in_windows(fd, 64)
    finally:
        os.close(fd)
    to_deliver = [r for r in whole.envelope.recipients if not r.done]
    assert len(to_deliver) == 750
    assert [len(q.envelope.recipients) for q in reads] == [64] * 11 + [46]
    assert [r for q in reads for r in q.envelope.recipients] == to_deliver
    assert {q.recipient_count for q in reads} == {1000}
    assert all(q.envelope.sender == "s@example.org" for q in reads)


def test_a_window_reads_no_empty_last_batch_and_keeps_the_old_reading(tmp_path: Path) -> None:
    recipients = (Recipient("a@x.org"), Recipient("b@x.org"), Recipient("c@x.org", done=True))
    path = tmp_path / "three"
    write_file(path, Envelope(sender="", recipients=recipients), b"x\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert [len(q.envelope.recipients) for q in read_in_windows(fd, 2)] == [2]
        assert [len(q.envelope.recipients) for q in read_in_windows(fd, 1)] == [1, 1]
        whole = qfile.read_envelope(fd)
        assert (len(whole.envelope.recipients), whole.recipient_count) == (3, 3)
        assert whole.unread_offset is None
        with pytest.raises(ValueError, match="below 1"):
            qfile.read_envelope(fd, recipient_limit=0)
    finally:
        os.close(fd)


def test_a_window_still_refuses_a_file_cut_short(tmp_path: Path) -> None:
    recipients = tuple(Recipient(f"r{n}@x.org") for n in range(10))
    data = qfile.encode(Envelope(sender="", recipients=recipients), b"x\n")
    path = tmp_path / "cut"
    path.write_bytes(data[:-1])
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptQueueFile, match="incomplete file"):
            qfile.read_envelope(fd, recipient_limit=2)
    finally:
        os.close(fd)


def test_iter_content_notices_a_file_truncated_after_reading(tmp_path: Path) -> None:
    path = tmp_path / "shrinks"
    write_file(path, Envelope(sender=""), b"x" * 1000)
    fd = os.open(path, os.O_RDWR)
    try:
        queue_file = qfile.read_envelope(fd)
        os.truncate(fd, 100)
        with pytest.raises(CorruptQueueFile, match="content cut short"):
            list(qfile.iter_content(fd, queue_file))
    finally:
        os.close(fd)


def test_mark_done_flips_one_byte_in_place(tmp_path: Path) -> None:
    envelope, content = GOLDEN_MESSAGES["full"]
    path = tmp_path / "f"
    write_file(path, envelope, content)
    before = path.read_bytes()
    first = qfile.decode(before).envelope.recipients[0]
    assert first.offset is not None
    assert not first.done
    with open(path, "r+b") as file:
        qfile.mark_done(file, first.offset)
        qfile.mark_done(file.fileno(), first.offset)  # again: no change
    after = path.read_bytes()
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed == [first.offset]
    assert qfile.decode(after).envelope.recipients[0].done


def test_mark_done_refuses_an_offset_that_is_no_recipient(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(VALID)
    with open(path, "r+b") as file:
        with pytest.raises(CorruptQueueFile, match="offset 0: no recipient record"):
            qfile.mark_done(file, 0)
        with pytest.raises(ValueError, match="negative"):
            qfile.mark_done(file, -1)
    assert path.read_bytes() == VALID


def test_mark_done_needs_a_file_open_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(VALID)
    offset = qfile.decode(VALID).envelope.recipients[0].offset
    assert offset is not None
    with open(path, "rb") as file, pytest.raises(OSError):
        qfile.mark_done(file, offset)


def test_delay_warning_time_is_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(VALID)
    queue_file = qfile.decode(VALID)
    with open(path, "r+b") as file:
        qfile.set_delay_warning(file, queue_file, 1712360078)
        assert qfile.read_envelope(file.fileno()).envelope.delay_warning_time == 1712360078
        qfile.set_delay_warning(file, queue_file, -1)
        with pytest.raises(ValueError, match="out of range"):
            qfile.set_delay_warning(file, queue_file, 10**15)
    after = path.read_bytes()
    assert len(after) == len(VALID)
    assert qfile.decode(after).envelope.delay_warning_time == -1


def test_delay_warning_update_refuses_a_file_that_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(VALID)
    wrong = dataclasses.replace(qfile.decode(VALID), delay_warning_offset=0)
    with open(path, "r+b") as file, pytest.raises(CorruptQueueFile, match="no delay warning"):
        qfile.set_delay_warning(file, wrong, 5)
    assert path.read_bytes() == VALID


# -- trace flags ---------------------------------------------------------------------


def test_trace_flags_are_cleared_in_place(tmp_path: Path) -> None:
    envelope, content = GOLDEN_MESSAGES["full"]
    path = tmp_path / "qf"
    path.write_bytes(qfile.encode(envelope, content))
    fd = os.open(path, os.O_RDWR)
    try:
        before = qfile.read_envelope(fd)
        assert before.envelope.trace_flags == 1
        qfile.clear_trace_flags(fd, before)
        after = qfile.read_envelope(fd)
    finally:
        os.close(fd)
    assert after.envelope.trace_flags == 0
    assert after.file_size == before.file_size
    assert after.envelope.attributes == before.envelope.attributes


@pytest.mark.parametrize("value", [b"4", b"x", b"11", b""])
def test_a_bad_trace_flags_attribute_is_corrupt(value: bytes) -> None:
    envelope, content = GOLDEN_MESSAGES["full"]
    data = qfile.encode(envelope, content).replace(b"\x0dtrace_flags=1", b"trace_flags=" + value)
    data = data.replace(b"Atrace_flags=", bytes([ord("A"), 12 + len(value)]) + b"trace_flags=", 1)
    with pytest.raises(qfile.CorruptQueueFile):
        qfile.decode(data)


def test_trace_flags_out_of_range_are_refused_when_written() -> None:
    with pytest.raises(qfile.InvalidEnvelope):
        qfile.encode(Envelope(sender="", trace_flags=4), b"x\n")
