"""core/inotify: events from a real directory, and the decoder on hostile bytes."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core import inotify
from sdmail.core.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Event,
    Inotify,
    InotifyError,
    decode_events,
)

WATCHED = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


@pytest.fixture
def watcher():
    with Inotify() as instance:
        yield instance


def names_with(events: list[Event], flag: int) -> list[str]:
    return [e.name for e in events if e.mask & flag]


def readable(instance: Inotify, timeout: float = 2.0) -> bool:
    ready, _, _ = select.select([instance], [], [], timeout)
    return bool(ready)


def test_creating_and_closing_a_file_reports_create_then_close_write(watcher, tmp_path: Path):
    wd = watcher.add_watch(tmp_path, WATCHED)
    (tmp_path / "letter").write_bytes(b"hello")
    assert readable(watcher)
    events = watcher.read_events()
    assert [e.wd for e in events] == [wd, wd]
    assert names_with(events, IN_CREATE) == ["letter"]
    assert names_with(events, IN_CLOSE_WRITE) == ["letter"]
    assert events[0].mask & IN_CREATE and events[1].mask & IN_CLOSE_WRITE


def test_a_rename_into_the_directory_is_moved_to(watcher, tmp_path: Path):
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()
    (elsewhere / "tmp.1").write_bytes(b"data")
    watcher.add_watch(watched, WATCHED)
    os.rename(elsewhere / "tmp.1", watched / "final")
    assert readable(watcher)
    events = watcher.read_events()
    assert [(e.name, e.mask) for e in events] == [("final", IN_MOVED_TO)]
    assert events[0].cookie != 0


def test_a_rename_within_the_directory_pairs_from_and_to_by_cookie(tmp_path: Path):
    with Inotify() as watcher:
        watcher.add_watch(tmp_path, IN_MOVED_FROM | IN_MOVED_TO)
        (tmp_path / "tmp.1").write_bytes(b"x")
        os.rename(tmp_path / "tmp.1", tmp_path / "ID")
        events = watcher.read_events()
    moved_from = [e for e in events if e.mask & IN_MOVED_FROM]
    moved_to = [e for e in events if e.mask & IN_MOVED_TO]
    assert [e.name for e in moved_from] == ["tmp.1"]
    assert [e.name for e in moved_to] == ["ID"]
    assert moved_from[0].cookie == moved_to[0].cookie


def test_symlinks_fifos_and_directories_report_create(watcher, tmp_path: Path):
    watcher.add_watch(tmp_path, WATCHED)
    os.symlink("/etc/passwd", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    events = watcher.read_events()
    assert names_with(events, IN_CREATE) == ["link", "fifo", "dir"]
    assert [e.name for e in events if e.is_dir] == ["dir"]


def test_events_not_asked_for_are_not_reported(watcher, tmp_path: Path):
    (tmp_path / "old").write_bytes(b"x")
    watcher.add_watch(tmp_path, IN_MOVED_TO)
    (tmp_path / "new").write_bytes(b"y")
    (tmp_path / "old").unlink()
    assert not readable(watcher, 0.1)
    assert watcher.read_events() == []


def test_reading_with_nothing_pending_returns_nothing_at_once(watcher, tmp_path: Path):
    watcher.add_watch(tmp_path, WATCHED)
    assert watcher.read_events() == []


def test_many_events_are_all_read_in_one_call(watcher, tmp_path: Path):
    watcher.add_watch(tmp_path, IN_CLOSE_WRITE)
    names = [f"file-{n:04d}-" + "x" * 200 for n in range(500)]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert names_with(watcher.read_events(), IN_CLOSE_WRITE) == names


def test_a_name_that_is_not_utf8_keeps_its_bytes(watcher, tmp_path: Path):
    watcher.add_watch(tmp_path, IN_CLOSE_WRITE)
    raw = b"caf\xe9"
    with open(os.path.join(os.fsencode(tmp_path), raw), "wb"):
        pass
    [event] = watcher.read_events()
    assert os.fsencode(event.name) == raw


def test_removing_a_watch_reports_ignored_and_stops_events(watcher, tmp_path: Path):
    wd = watcher.add_watch(tmp_path, WATCHED)
    watcher.remove_watch(wd)
    (tmp_path / "after").write_bytes(b"x")
    events = watcher.read_events()
    assert [(e.wd, e.mask) for e in events] == [(wd, IN_IGNORED)]


def test_watching_a_missing_directory_names_it_in_the_error(watcher, tmp_path: Path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(InotifyError) as caught:
        watcher.add_watch(missing, WATCHED)
    assert caught.value.errno == errno.ENOENT
    assert str(missing) in str(caught.value)


def test_a_closed_instance_refuses_to_be_used(tmp_path: Path):
    instance = Inotify()
    instance.close()
    instance.close()  # a second close does nothing
    with pytest.raises(InotifyError) as caught:
        instance.add_watch(tmp_path, WATCHED)
    assert caught.value.errno == errno.EBADF


def test_the_descriptor_is_non_blocking_and_close_on_exec(watcher):
    fd = watcher.fileno()
    assert os.get_blocking(fd) is False
    assert os.get_inheritable(fd) is False


def test_asyncio_add_reader_is_woken_by_an_event(watcher, tmp_path: Path):
    watcher.add_watch(tmp_path, IN_MOVED_TO)
    (tmp_path / "tmp").write_bytes(b"x")

    async def wait_for_event() -> list[Event]:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        loop.add_reader(watcher.fileno(), woken.set)
        try:
            loop.call_later(0.05, os.rename, tmp_path / "tmp", tmp_path / "done")
            await asyncio.wait_for(woken.wait(), 5)
        finally:
            loop.remove_reader(watcher.fileno())
        return watcher.read_events()

    events = asyncio.run(wait_for_event())
    assert [e.name for e in events] == ["done"]


# -- the decoder -------------------------------------------------------------------------
def packed(wd: int, mask: int, cookie: int, name: bytes, pad_to: int = 16) -> bytes:
    padded = name + b"\0" * (-(len(name) + 1) % pad_to + 1) if name else b""
    return struct.pack("=iIII", wd, mask, cookie, len(padded)) + padded


def test_decoding_strips_the_name_padding_and_keeps_every_field():
    buffer = packed(1, IN_CREATE | IN_ISDIR, 0, b"sub") + packed(-1, inotify.IN_Q_OVERFLOW, 0, b"")
    first, overflow = decode_events(buffer)
    assert first == Event(1, IN_CREATE | IN_ISDIR, 0, "sub")
    assert first.is_dir and not first.overflow
    assert overflow.wd == -1 and overflow.overflow and overflow.name == ""


def test_a_buffer_cut_inside_an_event_is_refused():
    whole = packed(1, IN_MOVED_TO, 7, b"queue-id")
    with pytest.raises(InotifyError, match="cut short"):
        decode_events(whole[:10])
    with pytest.raises(InotifyError, match="name cut short"):
        decode_events(whole[:-1])


@given(st.binary(max_size=400))
def test_decoding_any_bytes_gives_events_or_a_clear_error(data: bytes):
    try:
        events = decode_events(data)
    except InotifyError as exc:
        assert exc.errno == errno.EINVAL
        assert "cut short" in str(exc)
    else:
        assert all("\0" not in e.name for e in events)


@given(
    st.lists(
        st.tuples(
            st.integers(-1, 2**31 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=255).map(lambda b: b.replace(b"\0", b"") or b""),
        ),
        max_size=20,
    )
)
def test_decoding_returns_exactly_the_events_encoded(items):
    buffer = b"".join(packed(*item) for item in items)
    assert decode_events(buffer) == [Event(w, m, c, os.fsdecode(n)) for w, m, c, n in items]
