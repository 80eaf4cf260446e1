"""The queue on disk: IDs, directories, durable creation, group commit, moves, locks, full disks."""

from __future__ import annotations

import datetime
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core import qfile
from sdmail.core.qfile import InvalidEnvelope
from sdmail.core.records import ALL_QUEUES, Envelope, QueueName, Recipient
from sdmail.core.spool import (
    INODE_DIGITS,
    QUEUE_ID_DIGITS,
    InvalidQueueId,
    NoSuchQueueFile,
    NotAQueueFile,
    QueueFileLocked,
    QueueWriteError,
    Spool,
    SpoolError,
    lock_exclusive,
    lock_shared,
    make_queue_id,
    parse_queue_id,
    unlock,
    valid_queue_id,
)

REPO = Path(__file__).resolve().parents[3]
ENVELOPE = Envelope(
    sender="ann@example.com",
    recipients=(Recipient("bob@example.org"), Recipient("carol@example.org")),
    arrival_sec=1712345678,
    arrival_usec=42,
)
CONTENT = b"Subject: test\n\nhello\n"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path) as the_spool:
        the_spool.create_directories()
        yield the_spool


def names_in(spool: Spool, queue: str) -> list[str]:
    return sorted(os.listdir(spool.path / queue))


def run_child(script: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


# -- queue IDs -----------------------------------------------------------------------


def test_postfix_documentation_example_id_reads_as_postfix_made_it() -> None:
    seconds, usec, inode = parse_queue_id("3Pt2mN2VXxznjll")
    assert datetime.datetime.fromtimestamp(seconds, datetime.UTC).year == 2011
    assert usec < 1_000_000
    assert make_queue_id(seconds, usec, inode) == "3Pt2mN2VXxznjll"


def test_alphabets_are_digits_and_consonants() -> None:
    assert len(QUEUE_ID_DIGITS) == 52
    assert not set("AEIOUaeiou") & set(QUEUE_ID_DIGITS)
    assert "z" not in INODE_DIGITS
    assert len(INODE_DIGITS) == 51


def test_seconds_are_zero_padded_to_six_and_microseconds_to_four() -> None:
    queue_id = make_queue_id(1, 2, 3)
    assert queue_id == "000001" + "0002" + "z" + "3"


times = st.tuples(st.integers(0, 52**6 - 1), st.integers(0, 999_999))


@given(when=times, inode=st.integers(1, 2**64 - 1))
def test_made_ids_are_valid_and_read_back(when: tuple[int, int], inode: int) -> None:
    queue_id = make_queue_id(*when, inode)
    assert valid_queue_id(queue_id)
    assert queue_id.isalnum()
    assert parse_queue_id(queue_id) == (*when, inode)


@given(first=times, second=times, inodes=st.tuples(st.integers(1, 2**40), st.integers(1, 2**40)))
def test_ids_sort_by_creation_time(
    first: tuple[int, int], second: tuple[int, int], inodes: tuple[int, int]
) -> None:
    if first < second:
        assert make_queue_id(*first, inodes[0]) < make_queue_id(*second, inodes[1])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "../../etc/passwd",
        "3Pt2mN2VXxzn/ll",
        "3Pt2mN2VXxznjll/",
        "3Pt2mN2VXxznjll\n",
        " 3Pt2mN2VXxznjll",
        "3Pt2mN2VXxznjllz",  # a z in the inode part
        "3Pt2mN2VXxz",  # no inode
        "3Pt2m2VXxznjll",  # five second digits
        "03Pt2mN2VXxznjll",  # padding beyond six digits
        "3Pt2mNzzzzznjll",  # 7,311,615 microseconds
        "3Pt2mN2VXxz0jll",  # inode with a leading zero
        "3Pa2mN2VXxznjll",  # a vowel
        "tmp.123.456.7",
        "5B1461640E6",  # a short (hex) queue ID
        "3Pt2mN2VXxznjll" + "1" * 20,
    ],
)
def test_strings_that_are_not_long_queue_ids_are_refused(text: str) -> None:
    assert not valid_queue_id(text)
    with pytest.raises(InvalidQueueId, match="invalid queue ID"):
        parse_queue_id(text)


@given(text=st.text())
def test_any_accepted_string_is_a_canonical_file_name(text: str) -> None:
    if valid_queue_id(text):
        assert text.isascii() and text.isalnum()
        assert make_queue_id(*parse_queue_id(text)) == text


def test_hostile_ids_never_reach_the_file_system(spool: Spool, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for call in (
        lambda: spool.remove(QueueName.INCOMING, "../victim"),
        lambda: spool.open(QueueName.INCOMING, "../victim"),
        lambda: spool.move("../victim", QueueName.INCOMING, QueueName.HOLD),
        lambda: spool.find("../victim"),
    ):
        with pytest.raises(InvalidQueueId):
            call()
    assert victim.read_text() == "keep me"
    assert names_in(spool, "hold") == []


def test_unknown_queue_name_is_refused(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="unknown queue 'outgoing'"):
        spool.create("outgoing", ENVELOPE, CONTENT)


# -- directories -----------------------------------------------------------------------


def test_create_directories_makes_every_queue_mode_0700(tmp_path: Path) -> None:
    old_umask = os.umask(0o277)
    try:
        with Spool(tmp_path) as spool:
            assert spool.create_directories() == list(ALL_QUEUES)
            assert spool.create_directories() == []
            assert spool.check_directories(owner_uid=os.geteuid()) == []
    finally:
        os.umask(old_umask)
    for queue in ALL_QUEUES:
        assert (tmp_path / queue).stat().st_mode & 0o7777 == 0o700


def test_check_directories_names_each_problem(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.create_directories()
    (tmp_path / "hold").chmod(0o755)
    (tmp_path / "trace").rmdir()
    (tmp_path / "corrupt").rmdir()
    (tmp_path / "corrupt").symlink_to(tmp_path / "active")
    problems = spool.check_directories(owner_uid=os.geteuid() + 1)
    assert f"{tmp_path}/hold: mode 0755, should be 0700" in problems
    assert f"{tmp_path}/trace: No such file or directory" in problems
    assert f"{tmp_path}/corrupt: not a directory" in problems
    assert f"{tmp_path}/incoming: owned by uid {os.geteuid()}, should be {os.geteuid() + 1}" in (
        problems
    )


def test_a_symlinked_queue_directory_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top = tmp_path / "queue"
    top.mkdir()
    (top / "incoming").symlink_to(outside)
    with Spool(top) as spool, pytest.raises(SpoolError, match="incoming"):
        spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    assert list(outside.iterdir()) == []


# -- creating -------------------------------------------------------------------------


def test_created_file_is_whole_private_and_named_by_its_id(spool: Spool) -> None:
    before = time.time()
    created = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    after = time.time()
    assert valid_queue_id(created.queue_id)
    assert created.queue == QueueName.INCOMING
    assert names_in(spool, "incoming") == [created.queue_id]
    path = spool.path / "incoming" / created.queue_id
    st = path.stat()
    assert st.st_mode & 0o7777 == 0o600
    assert st.st_uid == os.geteuid()
    data = path.read_bytes()
    decoded = qfile.decode(data)
    assert decoded.envelope == ENVELOPE
    assert decoded.content_from(data) == CONTENT
    seconds, usec, inode = parse_queue_id(created.queue_id)
    assert inode == st.st_ino
    assert created.created_at.timestamp() == pytest.approx(seconds + usec / 1e6, abs=1e-6)
    assert before - 0.001 <= created.created_at.timestamp() <= after + 0.001


def test_ids_of_files_created_in_a_row_are_distinct_and_ordered(spool: Spool) -> None:
    ids = [spool.create(QueueName.INCOMING, ENVELOPE, CONTENT).queue_id for _ in range(50)]
    assert len(set(ids)) == 50
    assert [parse_queue_id(i)[:2] for i in ids] == sorted(parse_queue_id(i)[:2] for i in ids)


def test_content_may_stream_in_as_chunks(spool: Spool) -> None:
    chunks = [b"Subject: big\n\n"] + [bytes([65 + i % 26]) * 100_000 for i in range(100)]
    created = spool.create(QueueName.INCOMING, ENVELOPE, iter(chunks))
    with spool.open(QueueName.INCOMING, created.queue_id) as handle:
        queue_file = qfile.read_envelope(handle.fd)
        assert b"".join(qfile.iter_content(handle.fd, queue_file)) == b"".join(chunks)


def test_an_envelope_the_format_refuses_leaves_nothing(spool: Spool) -> None:
    bad = Envelope(sender="", attributes=(("bad name", "x"),))
    with pytest.raises(InvalidEnvelope):
        spool.create(QueueName.INCOMING, bad, CONTENT)
    assert names_in(spool, "incoming") == []


def test_content_that_fails_midway_leaves_nothing(spool: Spool) -> None:
    def failing() -> Iterator[bytes]:
        yield b"Subject: x\n\n" + b"y" * 2_000_000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        spool.create(QueueName.INCOMING, ENVELOPE, failing())
    assert names_in(spool, "incoming") == []


CRASH_CHILD = """
import sys, time
from sdmail.core.spool import Spool
from sdmail.core.records import Envelope
def content():
    yield b"Subject: x\\n\\n" + b"y" * 3_000_000
    print("writing", flush=True)
    time.sleep(60)
    yield b"never"
Spool(sys.argv[1]).create("incoming", Envelope(sender=""), content())
"""


def test_a_writer_killed_midway_leaves_only_a_temporary_file(spool: Spool) -> None:
    with run_child(CRASH_CHILD, str(spool.path)) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "writing\n"
        child.send_signal(signal.SIGKILL)
    left = names_in(spool, "incoming")
    assert len(left) == 1
    assert not valid_queue_id(left[0])
    assert list(spool.list_queue(QueueName.INCOMING)) == []
    assert spool.purge_temporary(older_than=3600) == []
    assert spool.purge_temporary(older_than=0) == [f"incoming/{left[0]}"]
    assert names_in(spool, "incoming") == []


FILE_SIZE_LIMIT_CHILD = """
import json, resource, signal, sys
from sdmail.core.spool import Spool, QueueWriteError
from sdmail.core.records import Envelope, Recipient
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
spool = Spool(sys.argv[1])
envelope = Envelope(sender="", recipients=(Recipient("a@example.org"),))
try:
    spool.create("incoming", envelope, b"Subject: x\\n\\n" + b"y" * 1_000_000)
    result = {"error": None}
except QueueWriteError as exc:
    result = {"error": str(exc), "errno": exc.errno}
result["small"] = spool.create("incoming", envelope, b"Subject: x\\n\\nhi\\n").queue_id
print(json.dumps(result))
"""


def test_a_file_too_large_for_the_limit_is_a_write_error_leaving_nothing(spool: Spool) -> None:
    with run_child(FILE_SIZE_LIMIT_CHILD, str(spool.path)) as child:
        out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    result = json.loads(out)
    assert result["error"] == "queue file write error: File too large (queue incoming)"
    assert result["errno"] == errno.EFBIG
    assert names_in(spool, "incoming") == [result["small"]]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_file_system_is_a_write_error_leaving_nothing(tiny_tmpfs: Path) -> None:
    with Spool(tiny_tmpfs) as spool:
        spool.create_directories()
        with pytest.raises(QueueWriteError, match="queue file write error: No space left") as info:
            spool.create(QueueName.INCOMING, ENVELOPE, b"Subject: x\n\n" + b"y" * 1_000_000)
        assert info.value.errno == errno.ENOSPC
        assert names_in(spool, "incoming") == []
        # The partial file's blocks were given back: a small message fits.
        created = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
        assert names_in(spool, "incoming") == [created.queue_id]


# -- group commit -------------------------------------------------------------------


class RecordingFsync:
    """The directory fsync door: slow, and notes what each sync covered."""

    def __init__(self, directory: Path, fail: bool = False) -> None:
        self.directory = directory
        self.fail = fail
        self.lock = threading.Lock()
        self.syncs: list[tuple[set[str], float]] = []

    def __call__(self, fd: int) -> None:
        covered = set(os.listdir(self.directory))
        time.sleep(0.02)
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)
        with self.lock:
            self.syncs.append((covered, time.monotonic()))


def test_concurrent_writers_share_directory_syncs_but_never_return_early(tmp_path: Path) -> None:
    door = RecordingFsync(tmp_path / "incoming")
    spool = Spool(tmp_path, dir_fsync=door)
    spool.create_directories()
    returned: list[tuple[str, float]] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(5):
            queue_id = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT).queue_id
            with lock:
                returned.append((queue_id, time.monotonic()))

    threads = [threading.Thread(target=writer) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    assert len(returned) == 50
    for queue_id, when in returned:
        assert any(queue_id in covered and done <= when for covered, done in door.syncs), queue_id
    assert len(door.syncs) < 50


def test_a_failed_directory_sync_is_a_write_error_leaving_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, dir_fsync=RecordingFsync(tmp_path / "incoming", fail=True))
    spool.create_directories()
    with pytest.raises(QueueWriteError, match="Input/output error") as info:
        spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    assert info.value.errno == errno.EIO
    assert names_in(spool, "incoming") == []


# -- opening ------------------------------------------------------------------------


def test_open_gives_the_file_and_done_marks_persist(spool: Spool) -> None:
    created = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    with spool.open(QueueName.INCOMING, created.queue_id, writable=True) as handle:
        assert str(handle) == f"incoming/{created.queue_id}"
        queue_file = qfile.read_envelope(handle.fd)
        offset = queue_file.envelope.recipients[1].offset
        assert offset is not None
        qfile.mark_done(handle, offset)
    with spool.open(QueueName.INCOMING, created.queue_id) as handle:
        done = [r.done for r in qfile.read_envelope(handle.fd).envelope.recipients]
    assert done == [False, True]


def test_open_refuses_a_missing_file(spool: Spool) -> None:
    queue_id = make_queue_id(1712345678, 1, 12345)
    with pytest.raises(NoSuchQueueFile, match=f"incoming/{queue_id}: no such queue file"):
        spool.open(QueueName.INCOMING, queue_id)


def test_open_refuses_links_and_special_files(spool: Spool, tmp_path: Path) -> None:
    incoming = spool.path / "incoming"
    target = tmp_path / "elsewhere"
    target.write_bytes(qfile.encode(ENVELOPE, CONTENT))
    symlink_id, fifo_id, dir_id, linked_id = (make_queue_id(1, 1, n) for n in (1, 2, 3, 4))
    (incoming / symlink_id).symlink_to(target)
    os.mkfifo(incoming / fifo_id)
    (incoming / dir_id).mkdir()
    os.link(target, incoming / linked_id)
    cases = [
        (symlink_id, "is a symbolic link"),
        (fifo_id, "not a regular file"),
        (dir_id, "not a regular file"),
        (linked_id, "has 2 links"),
    ]
    for queue_id, message in cases:
        with pytest.raises(NotAQueueFile, match=message):
            spool.open(QueueName.INCOMING, queue_id)
    with pytest.raises(NotAQueueFile, match="not a regular file"):
        spool.open(QueueName.INCOMING, dir_id, writable=True)


# -- moving, finding, listing, removing ---------------------------------------------


def test_move_renames_between_queues_and_find_follows(spool: Spool) -> None:
    created = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    data = (spool.path / "incoming" / created.queue_id).read_bytes()
    assert spool.find(created.queue_id) == QueueName.INCOMING
    spool.move(created.queue_id, QueueName.INCOMING, QueueName.ACTIVE)
    assert spool.find(created.queue_id) == QueueName.ACTIVE
    assert names_in(spool, "incoming") == []
    assert (spool.path / "active" / created.queue_id).read_bytes() == data
    spool.quarantine(created.queue_id, QueueName.ACTIVE)
    assert spool.find(created.queue_id) == QueueName.CORRUPT


def test_move_refuses_missing_files_same_queue_and_overwriting(spool: Spool) -> None:
    created = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    queue_id = created.queue_id
    with pytest.raises(NoSuchQueueFile):
        spool.move(queue_id, QueueName.DEFERRED, QueueName.ACTIVE)
    with pytest.raises(SpoolError, match="its own queue"):
        spool.move(queue_id, QueueName.INCOMING, QueueName.INCOMING)
    (spool.path / "hold" / queue_id).write_bytes(b"other")
    with pytest.raises(SpoolError, match=f"hold/{queue_id} already exists"):
        spool.move(queue_id, QueueName.INCOMING, QueueName.HOLD)
    assert (spool.path / "hold" / queue_id).read_bytes() == b"other"
    assert names_in(spool, "incoming") == [queue_id]


def test_find_ignores_delivery_status_logs(spool: Spool) -> None:
    queue_id = make_queue_id(1712345678, 5, 77)
    (spool.path / "defer" / queue_id).write_text("recipient=a@example.org\n")
    assert spool.find(queue_id) is None


def test_listing_yields_only_queue_ids(spool: Spool) -> None:
    ids = {spool.create(QueueName.DEFERRED, ENVELOPE, CONTENT).queue_id for _ in range(3)}
    for junk in ("tmp.1.2.3", "README", ".hidden", "5B1461640E6"):
        (spool.path / "deferred" / junk).write_text("x")
    assert set(spool.list_queue(QueueName.DEFERRED)) == ids
    assert list(spool.list_queue(QueueName.HOLD)) == []


def test_remove_deletes_and_reports_a_missing_file(spool: Spool) -> None:
    created = spool.create(QueueName.INCOMING, ENVELOPE, CONTENT)
    spool.remove(QueueName.INCOMING, created.queue_id)
    assert names_in(spool, "incoming") == []
    with pytest.raises(NoSuchQueueFile):
        spool.remove(QueueName.INCOMING, created.queue_id)


def test_purge_removes_only_stale_temporary_files(spool: Spool) -> None:
    kept = spool.create(QueueName.MAILDROP, ENVELOPE, CONTENT).queue_id
    stale = spool.path / "maildrop" / "tmp.10.20.30"
    fresh = spool.path / "incoming" / "tmp.10.20.31"
    other = spool.path / "incoming" / "notes.txt"
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    week_ago = time.time() - 8 * 86400
    os.utime(stale, (week_ago, week_ago))
    os.utime(other, (week_ago, week_ago))
    assert spool.purge_temporary(older_than=7 * 86400) == ["maildrop/tmp.10.20.30"]
    assert names_in(spool, "maildrop") == [kept]
    assert names_in(spool, "incoming") == ["notes.txt", "tmp.10.20.31"]


# -- locks ------------------------------------------------------------------------------


def test_shared_locks_coexist_and_exclude_the_exclusive_one(spool: Spool) -> None:
    queue_id = spool.create(QueueName.ACTIVE, ENVELOPE, CONTENT).queue_id
    with (
        spool.open(QueueName.ACTIVE, queue_id) as agent1,
        spool.open(QueueName.ACTIVE, queue_id) as agent2,
        spool.open(QueueName.ACTIVE, queue_id) as qmgr,
    ):
        lock_shared(agent1)
        lock_shared(agent2.fd)
        with pytest.raises(QueueFileLocked, match=f"active/{queue_id}: a lock is held"):
            lock_exclusive(qmgr)
        unlock(agent1)
        agent2.close()
        lock_exclusive(qmgr)
        with (
            spool.open(QueueName.ACTIVE, queue_id) as late_agent,
            pytest.raises(QueueFileLocked, match="an exclusive lock is held"),
        ):
            lock_shared(late_agent)


LOCK_HOLDER_CHILD = """
import sys
from sdmail.core.spool import Spool, lock_shared
handle = Spool(sys.argv[1]).open("active", sys.argv[2])
lock_shared(handle)
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_delivery_agent_process_lock_keeps_qmgr_out_until_it_exits(spool: Spool) -> None:
    queue_id = spool.create(QueueName.ACTIVE, ENVELOPE, CONTENT).queue_id
    with (
        run_child(LOCK_HOLDER_CHILD, str(spool.path), queue_id) as child,
        spool.open(QueueName.ACTIVE, queue_id) as qmgr,
    ):
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(QueueFileLocked):
            lock_exclusive(qmgr)
        child.stdin.write("done\n")
        child.stdin.flush()
        child.wait(timeout=30)
        lock_exclusive(qmgr)


# -- content that names its own queue ID ---------------------------------------------------


def test_content_maker_sees_the_queue_id_the_file_gets(spool: Spool) -> None:
    seen = []

    def make(created):  # type: ignore[no-untyped-def]
        seen.append(created)
        return f"Received: by h id {created.queue_id}\n\nbody\n".encode()

    created = spool.create(QueueName.INCOMING, ENVELOPE, make)
    assert seen == [created]
    with spool.open(QueueName.INCOMING, created.queue_id) as handle:
        data = os.pread(handle.fd, 1 << 20, 0)
    assert qfile.decode(data).content_from(data) == (
        f"Received: by h id {created.queue_id}\n\nbody\n".encode()
    )


def test_content_maker_that_raises_leaves_nothing(spool: Spool) -> None:
    def refuse(created):  # type: ignore[no-untyped-def]
        raise ValueError("message file too big")

    with pytest.raises(ValueError, match="too big"):
        spool.create(QueueName.INCOMING, ENVELOPE, refuse)
    assert names_in(spool, "incoming") == []


def test_still_there_tells_a_removed_or_moved_file_from_its_queue_file(spool: Spool) -> None:
    created = spool.create(QueueName.ACTIVE, ENVELOPE, CONTENT)
    with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
        assert spool.still_there(handle)
        spool.move(created.queue_id, QueueName.ACTIVE, QueueName.HOLD)
        assert not spool.still_there(handle)
    with spool.open(QueueName.HOLD, created.queue_id) as handle:
        spool.remove(QueueName.HOLD, created.queue_id)
        assert not spool.still_there(handle)
