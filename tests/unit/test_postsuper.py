"""postsuper (sdmail/postsuper.py): delete, hold, release, requeue, expire, -s and -p, on a real
queue in a temporary directory, run as root in-process; the non-root refusal is in
tests/process/test_postsuper_users.py."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdmail.core import bounce_log
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool, valid_queue_id
from sdmail.postsuper import main

REPO = Path(__file__).resolve().parents[2]
DAY = 24 * 3600

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="postsuper runs as root only")


@dataclass
class Queue:
    config_dir: Path
    spool: Spool
    socket_dir: Path

    @property
    def path(self) -> Path:
        return self.spool.path

    def add(self, queue: str = "deferred", rcpt: str = "bob@example.org") -> str:
        envelope = Envelope("ann@example.com", (Recipient(rcpt),), arrival_sec=1_712_345_678)
        return self.spool.create(queue, envelope, b"Subject: test\n\nhello\n").queue_id

    def names(self, queue: str) -> list[str]:
        return sorted(os.listdir(self.path / queue))

    def where(self, queue_id: str) -> str | None:
        found = self.spool.find(queue_id)
        return None if found is None else found.value


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Queue]:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\nsocket_directory = {tmp_path}/run\n"
    )
    (tmp_path / "spool").mkdir()
    (tmp_path / "run").mkdir()
    with Spool(tmp_path / "spool") as spool:
        spool.create_directories()
        yield Queue(config_dir, spool, tmp_path / "run")


def postsuper(q: Queue, *args: str, stdin: bytes = b"") -> int:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        return main(["-c", str(q.config_dir), *args])
    finally:
        sys.stdin = saved


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# --------------------------------------------------------------------------------------
# -d
# --------------------------------------------------------------------------------------
def test_delete_removes_the_message_and_its_logs_and_says_so(q, capsys):
    doomed, kept = q.add(), q.add()
    for log in (QueueName.DEFER, QueueName.BOUNCE):
        bounce_log.append(
            q.path, log, doomed, bounce_log.StatusRecord("b@x", "deferred", "4.0.0", "x")
        )
    assert postsuper(q, "-d", doomed) == 0
    assert stderr_lines(capsys) == [
        f"postsuper: {doomed}: removed",
        "postsuper: Deleted: 1 message",
    ]
    assert q.names("deferred") == [kept]
    assert q.names("defer") == q.names("bounce") == []


def test_delete_all_in_deferred_leaves_held_mail_and_counts_in_plural(q, capsys):
    one, two, held = q.add(), q.add(), q.add("hold")
    assert postsuper(q, "-d", "ALL", "deferred") == 0
    lines = stderr_lines(capsys)
    assert sorted(lines[:2]) == sorted([f"postsuper: {one}: removed", f"postsuper: {two}: removed"])
    assert lines[2:] == ["postsuper: Deleted: 2 messages"]
    assert q.names("deferred") == [] and q.names("hold") == [held]


def test_delete_all_without_queue_names_empties_every_mail_queue(q):
    for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
        q.add(queue)
    assert postsuper(q, "-d", "ALL") == 0
    for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
        assert q.names(queue) == [], queue


def test_delete_reads_queue_ids_from_stdin_skipping_blank_lines(q, capsys):
    first, second, kept = q.add(), q.add("hold"), q.add()
    assert postsuper(q, "-d", "-", stdin=f"{first}\n\n{second}\n".encode()) == 0
    assert stderr_lines(capsys)[-1] == "postsuper: Deleted: 2 messages"
    assert q.names("deferred") == [kept] and q.names("hold") == []


def test_delete_limited_to_a_queue_does_not_look_elsewhere(q, capsys):
    held = q.add("hold")
    assert postsuper(q, "-d", held, "deferred") == 1
    assert stderr_lines(capsys) == [f"postsuper: warning: {held}: no such message in deferred"]
    assert q.names("hold") == [held]


# --------------------------------------------------------------------------------------
# Bad input: nothing changes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["../../../../var/tmp/victim", "deferred/x", "..", "4jZMdX68HJzJDM0/", "a b", ""]
)
def test_a_queue_id_that_is_not_one_is_fatal_and_changes_nothing(q, capsys, tmp_path, bad):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    kept = q.add()
    assert postsuper(q, "-d", kept, "-d", bad) == 1
    assert stderr_lines(capsys) == [f"postsuper: fatal: invalid mail queue id: {bad}"]
    assert q.names("deferred") == [kept] and victim.read_text() == "precious\n"


def test_the_path_of_a_file_outside_the_queue_never_reaches_it(q, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    relative = os.path.relpath(victim, q.path / "deferred")
    assert postsuper(q, "-d", relative) == 1
    assert postsuper(q, "-d", str(victim)) == 1
    assert victim.read_text() == "precious\n"


def test_a_bad_queue_id_on_stdin_stops_everything_before_any_change(q, capsys):
    kept = q.add()
    assert postsuper(q, "-d", "-", stdin=f"{kept}\n../etc/passwd\n".encode()) == 1
    assert stderr_lines(capsys) == ["postsuper: fatal: invalid mail queue id: ../etc/passwd"]
    assert q.names("deferred") == [kept]


def test_an_unknown_queue_id_is_a_warning_and_the_others_are_still_done(q, capsys):
    doomed = q.add()
    absent = "4jZMdX68HJzJDM0"
    assert postsuper(q, "-d", absent, "-d", doomed) == 1
    assert stderr_lines(capsys) == [
        f"postsuper: warning: {absent}: no such message in maildrop, incoming, active, deferred, hold",
        f"postsuper: {doomed}: removed",
        "postsuper: Deleted: 1 message",
    ]


def test_an_unknown_queue_name_is_fatal(q, capsys):
    kept = q.add()
    assert postsuper(q, "-d", kept, "bogus") == 1
    assert stderr_lines(capsys) == ["postsuper: fatal: invalid directory name: bogus"]
    assert q.names("deferred") == [kept]


def test_a_missing_main_cf_is_one_line_and_exit_78(q, capsys, tmp_path):
    (q.config_dir / "main.cf").unlink()
    assert postsuper(q, "-d", "ALL") == 78
    (line,) = stderr_lines(capsys)
    assert line.startswith("postsuper: fatal: ") and "main.cf" in line


def test_an_unknown_option_is_a_one_line_usage_error(q, capsys):
    assert postsuper(q, "-x") == 64
    (line,) = stderr_lines(capsys)
    assert line.startswith("postsuper: fatal: unrecognized arguments: -x; usage: postsuper ")


def test_help_prints_the_usage_text_and_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("postsuper: ") and "USAGE" in out and "-d ID" in out


# --------------------------------------------------------------------------------------
# A message a delivery agent is working on
# --------------------------------------------------------------------------------------
AGENT = textwrap.dedent(
    """
    import sys
    from sdmail.core.spool import Spool, lock_shared
    with Spool(sys.argv[1]) as spool, spool.open(sys.argv[2], sys.argv[3], writable=True) as f:
        lock_shared(f)
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_a_message_locked_by_a_delivery_agent_is_skipped_not_deleted(q, capsys):
    busy = q.add("active")
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(q.path), "active", busy],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert agent.stdout is not None and agent.stdout.readline() == b"locked\n"
        assert postsuper(q, "-d", busy) == 1
        assert stderr_lines(capsys) == [
            f"postsuper: warning: {busy}: skipped, still being delivered"
        ]
        assert q.names("active") == [busy]
    finally:
        agent.communicate(b"", timeout=30)
    assert postsuper(q, "-d", busy) == 0
    assert q.names("active") == []


# --------------------------------------------------------------------------------------
# -h, -H and the qmgr trigger
# --------------------------------------------------------------------------------------
def listening_qmgr(socket_dir: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_dir / "qmgr"))
    listener.listen(4)
    listener.settimeout(10)
    return listener


def triggers_received(listener: socket.socket) -> bytes:
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(10)
        data = b""
        while chunk := connection.recv(64):
            data += chunk
    return data


def test_hold_and_release_move_the_message_and_wake_qmgr(q, capsys):
    queue_id = q.add()
    with listening_qmgr(q.socket_dir) as qmgr:
        assert postsuper(q, "-h", queue_id) == 0
        assert triggers_received(qmgr) == b"WD"
        assert q.where(queue_id) == "hold"
        assert postsuper(q, "-H", queue_id) == 0
        assert triggers_received(qmgr) == b"WD"
    assert q.where(queue_id) == "deferred"
    assert stderr_lines(capsys) == [
        f"postsuper: {queue_id}: placed on hold",
        "postsuper: Placed on hold: 1 message",
        f"postsuper: {queue_id}: released from hold",
        "postsuper: Released from hold: 1 message",
    ]


def test_hold_never_takes_mail_from_maildrop(q):
    dropped = q.add("maildrop")
    assert postsuper(q, "-h", dropped, "maildrop") == 1
    assert q.where(dropped) == "maildrop"


def test_release_from_a_queue_other_than_hold_is_refused(q, capsys):
    queue_id = q.add()
    assert postsuper(q, "-H", queue_id, "deferred") == 1
    assert stderr_lines(capsys) == [
        "postsuper: warning: option -H does not apply to queue deferred"
    ]
    assert q.where(queue_id) == "deferred"


def test_hold_works_without_a_running_qmgr(q):
    queue_id = q.add("incoming")
    assert postsuper(q, "-h", "ALL") == 0
    assert q.where(queue_id) == "hold"


# --------------------------------------------------------------------------------------
# -r
# --------------------------------------------------------------------------------------
def test_requeue_moves_the_file_to_maildrop_under_its_old_id_as_a_plain_file(q, capsys):
    queue_id = q.add()
    bounce_log.append(
        q.path, QueueName.DEFER, queue_id, bounce_log.StatusRecord("b", "deferred", "4.0.0", "x")
    )
    path = q.path / "deferred" / queue_id
    path.chmod(0o700)  # forced to expire
    os.utime(path, (1, 1))
    assert postsuper(q, "-r", queue_id) == 0
    assert stderr_lines(capsys) == [
        f"postsuper: {queue_id}: requeued",
        "postsuper: Requeued: 1 message",
    ]
    st = (q.path / "maildrop" / queue_id).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert abs(st.st_mtime - time.time()) < 60
    assert q.names("defer") == [queue_id]  # as Postfix: the logs stay


# --------------------------------------------------------------------------------------
# -e, -f
# --------------------------------------------------------------------------------------
def test_expire_sets_the_forced_expire_bit_and_makes_the_message_due(q, capsys):
    queue_id = q.add()
    os.utime(q.path / "deferred" / queue_id, (time.time() + 3600,) * 2)
    assert postsuper(q, "-e", queue_id) == 0
    st = (q.path / "deferred" / queue_id).stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_mtime <= time.time()
    assert stderr_lines(capsys) == [
        f"postsuper: {queue_id}: expired",
        "postsuper: Force-expired: 1 message",
    ]


def test_expire_leaves_held_mail_on_hold_and_f_releases_it(q, capsys):
    kept, freed = q.add("hold"), q.add("hold")
    assert postsuper(q, "-e", kept) == 0
    assert q.where(kept) == "hold"
    assert postsuper(q, "-f", freed) == 0
    assert q.where(freed) == "deferred"
    assert stat.S_IMODE((q.path / "deferred" / freed).stat().st_mode) == 0o700
    assert stderr_lines(capsys)[-4:] == [
        f"postsuper: {freed}: expired",
        f"postsuper: {freed}: released from hold",
        "postsuper: Released from hold: 1 message",
        "postsuper: Force-expired: 1 message",
    ]


# --------------------------------------------------------------------------------------
# -s, -p
# --------------------------------------------------------------------------------------
def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_structure_check_makes_missing_directories_and_fixes_modes_and_owners(q, capsys):
    with (q.config_dir / "main.cf").open("a") as main_cf:
        main_cf.write("mail_owner = nobody\n")
    (q.path / "trace").rmdir()
    (q.path / "hold").chmod(0o755)
    queue_id = q.add()
    (q.path / "deferred" / queue_id).chmod(0o644)
    assert postsuper(q, "-s") == 0
    nobody = __import__("pwd").getpwnam("nobody")
    for queue in ("trace", "hold", "deferred"):
        st = (q.path / queue).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, nobody.pw_uid)
    st = (q.path / "deferred" / queue_id).stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, nobody.pw_uid)
    err = capsys.readouterr().err
    assert f"created missing queue directory {q.path}/trace" in err
    assert f"{q.path}/hold: mode 0755, fixed to 0700" in err


def test_structure_check_removes_links_fifos_and_empty_directories(q, capsys):
    (q.path / "deferred" / "stray-link").symlink_to("/etc/passwd")
    os.mkfifo(q.path / "incoming" / "4jZMdX68HJzJDM0")
    (q.path / "hold" / "junkdir").mkdir()
    assert postsuper(q, "-s") == 0
    assert q.names("deferred") == q.names("incoming") == q.names("hold") == []
    err = capsys.readouterr().err
    assert "deferred/stray-link: removed stray symbolic link" in err
    assert "incoming/4jZMdX68HJzJDM0: removed stray FIFO" in err


def test_structure_check_moves_a_truncated_queue_file_to_corrupt(q, capsys):
    good, cut = q.add(), q.add()
    path = q.path / "deferred" / cut
    path.write_bytes(path.read_bytes()[:-5])
    assert postsuper(q, "-s") == 0
    assert q.names("deferred") == [good] and q.names("corrupt") == [cut]
    assert f'saving corrupt file "{cut}" from queue "deferred" to queue "corrupt": ' in (
        capsys.readouterr().err
    )


def test_structure_check_renames_old_misnamed_files_and_leaves_young_ones(q):
    queue_id = q.add()
    (q.path / "deferred" / queue_id).rename(q.path / "deferred" / "restored-from-backup")
    age(q.path / "deferred" / "restored-from-backup", 2 * DAY)
    (q.path / "deferred" / "garbage").write_bytes(b"not a queue file")
    age(q.path / "deferred" / "garbage", 2 * DAY)
    (q.path / "incoming" / "being-written").write_bytes(b"V")
    assert postsuper(q, "-s") == 0
    (renamed,) = q.names("deferred")
    (quarantined,) = q.names("corrupt")
    assert valid_queue_id(renamed) and valid_queue_id(quarantined)
    assert (q.path / "corrupt" / quarantined).read_bytes() == b"not a queue file"
    assert q.names("incoming") == ["being-written"]


def crashed_writer(spool_path: Path) -> None:
    """A process that dies in the middle of writing a queue file, as a crash would."""
    code = textwrap.dedent(
        """
        import os, sys
        from sdmail.core.records import Envelope
        from sdmail.core.spool import Spool
        def content():
            yield b"Subject: x\\n\\n"
            os._exit(0)
        with Spool(sys.argv[1]) as spool:
            spool.create("incoming", Envelope("a@b"), content())
        """
    )
    subprocess.run(
        [sys.executable, "-c", code, str(spool_path)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_purge_removes_a_crash_leftover_older_than_a_day_only(q):
    crashed_writer(q.path)
    (leftover,) = q.names("incoming")
    assert postsuper(q, "-p") == 0
    assert q.names("incoming") == [leftover]
    age(q.path / "incoming" / leftover, 2 * DAY)
    assert postsuper(q, "-p") == 0
    assert q.names("incoming") == []


def test_no_option_means_structure_check_and_purge(q):
    crashed_writer(q.path)
    (leftover,) = q.names("incoming")
    age(q.path / "incoming" / leftover, 2 * DAY)
    (q.path / "defer").rmdir()
    assert postsuper(q) == 0
    assert q.names("incoming") == [] and (q.path / "defer").is_dir()


def test_a_sound_queue_gives_no_output(q, capsys):
    q.add()
    assert postsuper(q) == 0
    assert capsys.readouterr().err == ""
