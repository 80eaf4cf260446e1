"""pickup/drain.py: each maildrop file queued, set aside, removed, deferred or left alone."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from sdmail.cleanup.api import Cleanup
from sdmail.core import qfile
from sdmail.core.config import load_config
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.pickup.drain import Drain, Outcome

HOST = "mail.example.test"


class Maildrop:
    """A queue in a temporary directory, a Drain on it, and a qmgr trigger socket to listen on."""

    def __init__(self, root: Path, main_cf: str = "") -> None:
        self.root = root
        self.queue = root / "queue"
        self.queue.mkdir()
        self.write_main_cf(main_cf)
        self.spool = Spool(self.queue)
        self.spool.create_directories()
        self.qmgr = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.qmgr.bind(str(root / "qmgr"))
        self.qmgr.listen(500)
        self.qmgr.settimeout(2)
        self.drain = Drain(self.spool, self.cleanup(), root / "qmgr")

    def write_main_cf(self, extra: str) -> None:
        (self.root / "main.cf").write_text(
            f"myhostname = {HOST}\nqueue_directory = {self.queue}\n" + extra
        )

    def cleanup(self) -> Cleanup:
        return Cleanup(load_config(self.root), self.spool)

    def drop(self, *recipients: str, sender="joe", content=b"Subject: hi\n\nhello\n", **attrs):
        envelope = Envelope(
            sender,
            tuple(Recipient(r) for r in recipients),
            arrival_sec=int(time.time()),
            attributes=tuple((k, str(v)) for k, v in attrs.items()),
        )
        return self.spool.create(QueueName.MAILDROP, envelope, content).queue_id

    def plant(self, name: str) -> Path:
        return self.queue / "maildrop" / name

    def names(self, queue: str) -> list[str]:
        return sorted(os.listdir(self.queue / queue))

    def incoming(self) -> list[tuple[qfile.QueueFile, bytes]]:
        out = []
        for name in self.names("incoming"):
            data = (self.queue / "incoming" / name).read_bytes()
            parsed = qfile.decode(data)
            out.append((parsed, parsed.content_from(data)))
        return out

    def triggers(self) -> bytes:
        received = b""
        self.qmgr.setblocking(False)
        try:
            while True:
                conn, _ = self.qmgr.accept()
                with conn:
                    conn.settimeout(2)
                    received += conn.recv(16)
        except BlockingIOError:
            return received


@pytest.fixture
def maildrop(tmp_path: Path):
    box = Maildrop(tmp_path)
    yield box
    box.qmgr.close()
    box.spool.close()


def warnings_about(caplog, queue_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "queue_id", None) == queue_id
    ]


def infos(caplog) -> list[tuple[str, str]]:
    return [
        (getattr(r, "queue_id", ""), r.getMessage())
        for r in caplog.records
        if r.levelno == logging.INFO
    ]


def test_a_message_goes_to_incoming_cleaned_and_the_maildrop_file_is_removed(maildrop, caplog):
    caplog.set_level(logging.INFO)
    old_id = maildrop.drop("bob", uid=1000)
    report = maildrop.drain.drain(retry=False)
    assert report.outcomes == {old_id: Outcome.PICKED_UP}
    assert maildrop.names("maildrop") == []
    [(parsed, content)] = maildrop.incoming()
    new_id = maildrop.names("incoming")[0]
    assert new_id != old_id
    assert parsed.envelope.sender == f"joe@{HOST}"
    assert [r.address for r in parsed.envelope.recipients] == [f"bob@{HOST}"]
    assert content.startswith(
        f"Received: by {HOST} (sdmail, from userid 1000)\n\tid {new_id};".encode()
    )
    assert f".{new_id}@{HOST}>\n".encode() in content  # Message-Id: with the new queue ID
    assert f"\nFrom: joe@{HOST}\n".encode() in content
    assert (new_id, "uid=1000 from=<joe>") in infos(caplog)
    assert maildrop.triggers() == b"W"


def test_the_null_sender_and_a_quoted_local_part_are_logged_in_external_form(maildrop, caplog):
    caplog.set_level(logging.INFO)
    maildrop.drop("bob", sender="", uid=5)
    maildrop.drop("bob", sender="john doe", uid=6)
    maildrop.drain.drain(retry=False)
    lines = sorted(text for _, text in infos(caplog) if text.startswith("uid="))
    assert lines == ["uid=5 from=<>", 'uid=6 from=<"john doe">']


def test_a_file_of_garbage_goes_to_corrupt_with_a_warning_and_the_rest_is_drained(maildrop, caplog):
    bad = "0000000000z1"
    maildrop.plant(bad).write_bytes(b"\x00garbage")
    maildrop.plant(bad).chmod(0o600)
    good = maildrop.drop("bob", uid=1)
    report = maildrop.drain.drain(retry=False)
    assert report.outcomes == {bad: Outcome.QUARANTINED, good: Outcome.PICKED_UP}
    assert maildrop.names("corrupt") == [bad]
    assert maildrop.names("maildrop") == []
    [warning] = warnings_about(caplog, bad)
    assert warning.startswith("maildrop file: corrupt queue file: offset 0:")
    assert warning.endswith(f"moved to corrupt/{bad}")


def test_a_truncated_file_goes_to_corrupt(maildrop, caplog):
    queue_id = maildrop.drop("bob", uid=1)
    path = maildrop.plant(queue_id)
    os.truncate(path, path.stat().st_size - 1)
    assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.QUARANTINED}
    assert maildrop.names("corrupt") == [queue_id] and maildrop.incoming() == []
    assert "corrupt queue file" in warnings_about(caplog, queue_id)[0]


def test_a_symlink_is_moved_to_corrupt_without_touching_its_target(maildrop, tmp_path, caplog):
    target = tmp_path / "victim"
    target.write_bytes(qfile.encode(Envelope("root", (Recipient("evil"),)), b"\n"))
    maildrop.plant("0000000000z2").symlink_to(target)
    assert maildrop.drain.drain(retry=False).outcomes == {"0000000000z2": Outcome.QUARANTINED}
    assert (maildrop.queue / "corrupt" / "0000000000z2").is_symlink()
    assert target.exists() and maildrop.incoming() == []
    assert "is a symbolic link" in warnings_about(caplog, "0000000000z2")[0]


def test_a_fifo_is_moved_to_corrupt_without_hanging(maildrop, caplog):
    os.mkfifo(maildrop.plant("0000000000z3"))
    assert maildrop.drain.drain(retry=False).outcomes == {"0000000000z3": Outcome.QUARANTINED}
    assert stat.S_ISFIFO(os.lstat(maildrop.queue / "corrupt" / "0000000000z3").st_mode)
    assert "not a regular file" in warnings_about(caplog, "0000000000z3")[0]


def test_a_hard_linked_file_is_moved_to_corrupt_unread(maildrop, tmp_path, caplog):
    queue_id = maildrop.drop("bob", uid=1)
    os.link(maildrop.plant(queue_id), tmp_path / "second-link")
    assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.QUARANTINED}
    assert maildrop.incoming() == []
    assert "has 2 links" in warnings_about(caplog, queue_id)[0]


def test_a_directory_is_moved_to_corrupt(maildrop):
    maildrop.plant("0000000000z4").mkdir()
    assert maildrop.drain.drain(retry=False).outcomes == {"0000000000z4": Outcome.QUARANTINED}
    assert (maildrop.queue / "corrupt" / "0000000000z4").is_dir()


def test_a_bad_file_whose_name_is_taken_in_corrupt_is_removed(maildrop, caplog):
    (maildrop.queue / "corrupt" / "0000000000z5").write_bytes(b"older")
    maildrop.plant("0000000000z5").write_bytes(b"junk")
    assert maildrop.drain.drain(retry=False).outcomes == {"0000000000z5": Outcome.REMOVED}
    assert maildrop.names("maildrop") == []
    assert (maildrop.queue / "corrupt" / "0000000000z5").read_bytes() == b"older"
    assert "removed (cannot move it to corrupt/" in warnings_about(caplog, "0000000000z5")[-1]


def test_what_can_be_neither_moved_nor_removed_is_left_alone_and_never_retried(maildrop, caplog):
    (maildrop.queue / "corrupt" / "0000000000z6").mkdir()
    (maildrop.plant("0000000000z6") / "inside").mkdir(parents=True)
    assert maildrop.drain.drain(retry=True).outcomes == {"0000000000z6": Outcome.STUCK}
    assert "leaving it alone" in warnings_about(caplog, "0000000000z6")[0]
    assert maildrop.drain.waiting() == []
    assert maildrop.drain.drain(retry=True).outcomes == {}


def test_a_permanent_cleanup_refusal_goes_to_corrupt_naming_the_reason(maildrop, caplog):
    no_recipients = maildrop.drop(uid=1)
    too_big = maildrop.drop("bob", uid=1, content=b"Subject: big\n\n" + b"x" * 2000)
    maildrop.drain.cleanup = Cleanup(
        load_config(maildrop.root, ["message_size_limit=1000"]), maildrop.spool
    )
    report = maildrop.drain.drain(retry=False)
    assert report.outcomes == {no_recipients: Outcome.QUARANTINED, too_big: Outcome.QUARANTINED}
    assert maildrop.names("corrupt") == sorted([no_recipients, too_big])
    assert "550 5.1.0 Error: no recipients specified" in warnings_about(caplog, no_recipients)[0]
    assert "552 5.3.4 Error: message file too big" in warnings_about(caplog, too_big)[0]


def test_a_temporary_refusal_leaves_the_file_until_the_next_full_drain(maildrop, caplog):
    table = maildrop.root / "virtual"
    maildrop.write_main_cf(f"virtual_alias_maps = texthash:{table}\nvirtual_alias_domains =\n")
    maildrop.drain.cleanup = maildrop.cleanup()
    queue_id = maildrop.drop("bob", uid=1)
    assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.DEFERRED}
    assert maildrop.names("maildrop") == [queue_id]
    assert "cleanup refused the message for now: 451 4.3.0" in warnings_about(caplog, queue_id)[0]
    assert maildrop.drain.drain(retry=False).outcomes == {}  # only new files between wakeups
    table.write_text("bob@mail.example.test carol@example.org\n")
    assert maildrop.drain.drain(retry=True).outcomes == {queue_id: Outcome.PICKED_UP}
    assert maildrop.drain.deferred == set()
    [(parsed, _content)] = maildrop.incoming()
    assert [r.address for r in parsed.envelope.recipients] == ["carol@example.org"]


def test_an_unexpected_owner_or_mode_is_a_warning_and_the_mail_still_goes(maildrop, caplog):
    queue_id = maildrop.drop("bob", uid=1)
    os.chown(maildrop.plant(queue_id), 12345, -1)
    maildrop.plant(queue_id).chmod(0o644)
    assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.PICKED_UP}
    assert warnings_about(caplog, queue_id) == [
        f"maildrop file owned by uid 12345, not {os.geteuid()}",
        "maildrop file has mode 0644, not 0600",
    ]


def test_temporary_files_of_a_postdrop_at_work_are_not_touched(maildrop):
    maildrop.plant("tmp.123.456.0").write_bytes(b"half written")
    assert maildrop.drain.drain(retry=True).outcomes == {}
    assert maildrop.names("maildrop") == ["tmp.123.456.0"]


def test_a_stale_temporary_file_of_a_dead_postdrop_is_removed_by_a_full_drain(maildrop, caplog):
    stale = maildrop.plant("tmp.123.456.1")
    stale.write_bytes(b"half written, writer gone")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    maildrop.drain.drain(retry=False)
    assert maildrop.names("maildrop") == ["tmp.123.456.1"]  # only the periodic drain purges
    maildrop.drain.drain(retry=True)
    assert maildrop.names("maildrop") == []
    assert "removed stale temporary file maildrop/tmp.123.456.1" in caplog.text


def test_a_requeued_file_keeps_its_finished_recipients_finished_and_gets_no_new_received(
    maildrop, caplog
):
    """postsuper -r puts a queue file back into maildrop/ without postdrop's uid attribute."""
    caplog.set_level(logging.INFO)
    envelope = Envelope(
        "joe@example.org",
        (Recipient("done@example.org", done=True), Recipient("todo@example.org")),
        arrival_sec=int(time.time()) - 60,
    )
    content = b"Received: by old.example (sdmail)\n\tid OLD; date\nMessage-Id: <m@x>\n\nbody\n"
    old_id = maildrop.spool.create(QueueName.MAILDROP, envelope, content).queue_id
    maildrop.drain.drain(retry=False)
    ((parsed, stored),) = maildrop.incoming()
    assert [r.address for r in parsed.envelope.recipients] == ["todo@example.org"]
    assert stored.count(b"Received:") == 1
    assert any(text.endswith(f"orig_id={old_id}") for _, text in infos(caplog))


def test_a_stop_request_ends_the_drain_between_two_files(maildrop):
    for _ in range(3):
        maildrop.drop("bob", uid=1)
    done: list[int] = []

    def stop() -> bool:
        done.append(1)
        return len(done) > 1

    report = maildrop.drain.drain(retry=False, stop=stop)
    assert report.count(Outcome.PICKED_UP) == 1
    assert len(maildrop.names("maildrop")) == 2


def test_an_unexpected_error_in_cleanup_keeps_the_file_for_a_retry(maildrop, caplog):
    class Broken:
        def submit(self, submission, content):
            raise RuntimeError("bug")

    maildrop.drain.cleanup = Broken()  # a door fake: a cleanup that fails on demand
    queue_id = maildrop.drop("bob", uid=1)
    assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.DEFERRED}
    assert maildrop.names("maildrop") == [queue_id]
    assert warnings_about(caplog, queue_id) == ["internal error: RuntimeError: bug; will retry"]


def test_a_file_another_pickup_holds_is_left_to_it(maildrop):
    queue_id = maildrop.drop("bob", uid=1)
    other = os.open(maildrop.plant(queue_id), os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.BUSY}
        assert maildrop.names("maildrop") == [queue_id] and maildrop.incoming() == []
        assert maildrop.drain.deferred == set()
    finally:
        os.close(other)
    assert maildrop.drain.drain(retry=False).outcomes == {queue_id: Outcome.PICKED_UP}
