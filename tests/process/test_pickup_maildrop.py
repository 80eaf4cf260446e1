"""pickup as a process: maildrop/ drained into incoming/, bad files set aside, idle exit.

Maildrop files are written here the way the postdrop service writes them (core/spool,
envelope attributes `uid` and `extract_recipients`), so pickup is tested at its door.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sdmail.core import qfile
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool, valid_queue_id

HOST = "mail.example.test"


def drop(
    mailsys,
    *recipients: str,
    sender: str = "joe",
    uid: int = 1000,
    content: bytes = b"Subject: hello\n\nhi there\n",
    extract: bool = False,
) -> str:
    attributes = [("uid", str(uid))]
    if extract:
        attributes.append(("extract_recipients", "yes"))
    envelope = Envelope(
        sender,
        tuple(Recipient(r) for r in recipients),
        arrival_sec=int(time.time()),
        attributes=tuple(attributes),
    )
    with Spool(mailsys.queue_dir) as spool:
        return spool.create(QueueName.MAILDROP, envelope, content).queue_id


def queued(mailsys, queue: str = "incoming") -> list[tuple[str, qfile.QueueFile, bytes]]:
    out = []
    for name in names(mailsys, queue):
        data = (mailsys.queue_dir / queue / name).read_bytes()
        parsed = qfile.decode(data)
        out.append((name, parsed, parsed.content_from(data)))
    return out


def names(mailsys, queue: str) -> list[str]:
    """The queue IDs in QUEUE: not the temporary files of a writer at work."""
    return sorted(n for n in os.listdir(mailsys.queue_dir / queue) if valid_queue_id(n))


def start_pickup(mailsys, *args: str) -> subprocess.Popen[bytes]:
    return mailsys.start("pickup", args=args)


def exited(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


class FakeQmgr:
    """qmgr's trigger socket: counts the wake-up bytes pickup sends."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(512)
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.received += conn.recv(64)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_a_maildrop_file_is_queued_cleaned_and_qmgr_is_woken(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    qmgr = FakeQmgr(mailsys.socket_path("qmgr"))
    old_id = drop(mailsys, "bob", uid=1234, content=b"Subject: hello\n\nhi there\n")
    process = start_pickup(mailsys)
    mailsys.wait_for(
        lambda: names(mailsys, "incoming") and not names(mailsys, "maildrop"),
        "the message moved from maildrop/ to incoming/",
    )
    [(new_id, parsed, content)] = queued(mailsys)
    assert parsed.envelope.sender == f"joe@{HOST}"
    assert [r.address for r in parsed.envelope.recipients] == [f"bob@{HOST}"]
    assert content.startswith(
        f"Received: by {HOST} (sdmail, from userid 1234)\n\tid {new_id}; ".encode()
    )
    assert re.search(rf"\nMessage-Id: <\d{{14}}\.{new_id}@{HOST}>\n".encode(), content)
    assert content.endswith(b"\n\nhi there\n")
    mailsys.wait_for(lambda: b"W" in qmgr.received, "the qmgr wake-up")
    assert exited(process, 10) == 0
    log = mailsys.log("pickup")
    assert re.search(rf"sdmail/pickup\[\d+\]: {new_id}: uid=1234 from=<joe>\n", log)
    assert old_id not in log  # nothing went wrong with it
    qmgr.close()


def test_recipients_from_the_headers_with_extract_recipients(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    drop(
        mailsys,
        extract=True,
        content=b"To: alice@example.org\nCc: Carl <carl@example.org>\nBcc: dan\n\nbody\n",
    )
    start_pickup(mailsys)
    mailsys.wait_for(lambda: names(mailsys, "incoming"), "the message in incoming/")
    [(_id, parsed, content)] = queued(mailsys)
    assert sorted(r.address for r in parsed.envelope.recipients) == [
        "alice@example.org",
        "carl@example.org",
        f"dan@{HOST}",
    ]
    assert b"Bcc:" not in content


def test_bad_files_go_to_corrupt_with_warnings_and_the_good_ones_still_go(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    maildrop = mailsys.queue_dir / "maildrop"
    good_before = drop(mailsys, "bob")
    truncated = drop(mailsys, "bob")
    os.truncate(maildrop / truncated, (maildrop / truncated).stat().st_size - 2)
    (maildrop / "0000000000z1").write_bytes(b"this is not a queue file\n")
    os.symlink("/etc/passwd", maildrop / "0000000000z2")
    os.mkfifo(maildrop / "0000000000z3")
    good_after = drop(mailsys, "carol")
    process = start_pickup(mailsys)
    assert exited(process, 20) == 0  # idle exit: maildrop/ was emptied
    assert names(mailsys, "maildrop") == []
    assert names(mailsys, "corrupt") == sorted(
        [truncated, "0000000000z1", "0000000000z2", "0000000000z3"]
    )
    assert len(names(mailsys, "incoming")) == 2
    log = mailsys.log("pickup")
    for bad, why in [
        (truncated, "corrupt queue file"),
        ("0000000000z1", "corrupt queue file"),
        ("0000000000z2", "is a symbolic link"),
        ("0000000000z3", "not a regular file"),
    ]:
        assert re.search(
            rf"{bad}: warning: maildrop file: {why}.*; moved to corrupt/{bad}\n", log
        ), bad
    assert good_before not in log and good_after not in log
    assert os.path.exists("/etc/passwd")


def test_bad_files_put_in_while_pickup_runs_are_set_aside_at_once(mailsys):
    process = mailsys.start_ready("pickup")  # watching an empty maildrop/
    maildrop = mailsys.queue_dir / "maildrop"
    os.symlink("/etc/shadow", maildrop / "0000000000z7")
    os.mkfifo(maildrop / "0000000000z8")
    mailsys.wait_for(
        lambda: len(names(mailsys, "corrupt")) == 2, "the symlink and the FIFO in corrupt/", 10
    )
    assert process.poll() is None


def test_an_unexpected_owner_and_mode_are_warnings_and_the_mail_goes(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    queue_id = drop(mailsys, "bob")
    os.chown(mailsys.queue_dir / "maildrop" / queue_id, 4321, 4321)
    os.chmod(mailsys.queue_dir / "maildrop" / queue_id, 0o644)
    assert exited(start_pickup(mailsys), 20) == 0
    assert len(names(mailsys, "incoming")) == 1
    log = mailsys.log("pickup")
    assert f"{queue_id}: warning: maildrop file owned by uid 4321, not {os.geteuid()}" in log
    assert f"{queue_id}: warning: maildrop file has mode 0644, not 0600" in log


def run_like_the_path_unit(mailsys, until, process, timeout: float = 90.0) -> int:
    """Start pickup whenever PROCESS has exited and maildrop/ is not empty (DirectoryNotEmpty)."""
    starts = 0
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for pickup to drain maildrop/")
        if process.poll() is not None and names(mailsys, "maildrop"):
            process = start_pickup(mailsys)
            starts += 1
        time.sleep(0.05)
    return starts


def test_two_hundred_files_dropped_while_pickup_runs_all_get_through_once(mailsys):
    mailsys.write_main_cf("max_idle = 5s\n")
    count = 200
    dropped: list[str] = []

    def postdrop() -> None:
        for n in range(count):
            dropped.append(
                drop(mailsys, f"user{n}", content=f"Subject: {n}\n\nbody {n}\n".encode())
            )

    writer = threading.Thread(target=postdrop)
    first = start_pickup(mailsys)
    writer.start()
    starts = 1 + run_like_the_path_unit(
        mailsys,
        lambda: (
            not writer.is_alive()
            and len(names(mailsys, "incoming")) == count
            and not names(mailsys, "maildrop")
        ),
        first,
    )
    writer.join()
    assert names(mailsys, "maildrop") == []
    subjects = sorted(
        int(re.search(rb"\nSubject: (\d+)\n", content).group(1))
        for _, _, content in queued(mailsys)
    )
    assert subjects == list(range(count))
    assert mailsys.log("pickup").count(" uid=1000 from=<joe>\n") == count
    assert "warning" not in mailsys.log("pickup")
    assert starts <= 3, f"pickup was started {starts} times for one burst"
    assert first.poll() is None or first.returncode == 0


def test_pickup_exits_after_max_idle_only_once_maildrop_is_empty(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    began = time.monotonic()
    process = start_pickup(mailsys)
    time.sleep(1.5)
    drop(mailsys, "bob")  # new work restarts the idle clock
    assert exited(process, 15) == 0
    lifetime = time.monotonic() - began
    assert lifetime >= 3.4, f"exited {lifetime:.1f} s after start, under 1.5 s + max_idle"
    assert names(mailsys, "maildrop") == [] and len(names(mailsys, "incoming")) == 1


def test_pickup_with_an_empty_maildrop_exits_after_max_idle(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    began = time.monotonic()
    assert exited(start_pickup(mailsys), 15) == 0
    assert 1.9 <= time.monotonic() - began < 8


def test_a_temporary_refusal_keeps_pickup_up_and_a_wakeup_retries(mailsys):
    table = mailsys.config_dir / "virtual"
    mailsys.write_main_cf(
        f"max_idle = 1s\nvirtual_alias_maps = texthash:{table}\nvirtual_alias_domains =\n"
    )
    queue_id = drop(mailsys, "bob")
    process = start_pickup(mailsys, "--wakeup", "1")
    mailsys.wait_for(
        lambda: "cleanup refused the message for now" in mailsys.log("pickup"), "the refusal"
    )
    assert f"{queue_id}: warning: cleanup refused the message for now: 451 4.3.0" in mailsys.log(
        "pickup"
    )
    time.sleep(2.5)  # past max_idle: the deferred file keeps pickup up
    assert process.poll() is None and names(mailsys, "maildrop") == [queue_id]
    table.write_text(f"bob@{HOST} carol@example.org\n")
    assert exited(process, 15) == 0
    [(_id, parsed, _content)] = queued(mailsys)
    assert [r.address for r in parsed.envelope.recipients] == ["carol@example.org"]


def test_a_permanent_refusal_moves_the_file_to_corrupt_naming_the_reason(mailsys):
    mailsys.write_main_cf("max_idle = 2s\nmessage_size_limit = 1000\n")
    queue_id = drop(mailsys, "bob", content=b"Subject: big\n\n" + b"x" * 5000 + b"\n")
    assert exited(start_pickup(mailsys), 20) == 0
    assert names(mailsys, "corrupt") == [queue_id]
    assert (
        f"{queue_id}: warning: maildrop file: cleanup refused the message: "
        f"552 5.3.4 Error: message file too big; moved to corrupt/{queue_id}"
    ) in mailsys.log("pickup")


def test_sigterm_ends_pickup_at_once(mailsys):
    process = mailsys.start_ready("pickup")
    process.send_signal(signal.SIGTERM)
    assert exited(process, 5) == 0
    assert "terminating on signal 15" in mailsys.log("pickup")


def test_sighup_makes_the_next_message_use_the_new_main_cf(mailsys):
    process = start_pickup(mailsys)
    drop(mailsys, "bob")
    mailsys.wait_for(lambda: len(names(mailsys, "incoming")) == 1, "the first message")
    mailsys.write_main_cf("myhostname = reloaded.example.test\n")
    process.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload -- configuration" in mailsys.log("pickup"), "the reload")
    drop(mailsys, "carol")
    mailsys.wait_for(lambda: len(names(mailsys, "incoming")) == 2, "the second message")
    hosts = sorted(parsed.envelope.recipients[0].address for _, parsed, _ in queued(mailsys))
    assert hosts == [f"bob@{HOST}", "carol@reloaded.example.test"]


def test_a_bad_main_cf_stops_pickup_with_ex_config(mailsys):
    mailsys.write_main_cf("max_idle = soon\n")
    assert exited(start_pickup(mailsys), 10) == 78
    assert "main.cf, line" in mailsys.log("pickup") and "max_idle" in mailsys.log("pickup")


@pytest.mark.parametrize("wakeup", ["0", "-1", "x"])
def test_a_bad_wakeup_is_a_usage_error(mailsys, wakeup):
    assert exited(start_pickup(mailsys, "--wakeup", wakeup), 10) == 64


def test_after_max_use_drains_pickup_exits_as_soon_as_maildrop_is_empty(mailsys):
    mailsys.write_main_cf("max_idle = 60s\nmax_use = 2\n")
    process = start_pickup(mailsys)
    drop(mailsys, "bob")
    mailsys.wait_for(lambda: len(names(mailsys, "incoming")) == 1, "the first message")
    assert process.poll() is None
    drop(mailsys, "carol")
    assert exited(process, 10) == 0  # long before max_idle
    assert names(mailsys, "maildrop") == [] and len(names(mailsys, "incoming")) == 2


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_pickup_stays_idle_after_a_reload(mailsys):
    process = start_pickup(mailsys)
    time.sleep(1)
    process.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload -- configuration" in mailsys.log("pickup"), "the reload")
    before = cpu_seconds(process.pid)
    time.sleep(2)
    assert cpu_seconds(process.pid) - before < 0.2  # waiting, not spinning
    drop(mailsys, "bob")  # and still awake for new mail
    mailsys.wait_for(lambda: names(mailsys, "incoming"), "the message after the reload")


def test_two_pickups_at_once_queue_each_message_once(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    count = 150
    for n in range(count):
        drop(mailsys, f"user{n}", content=f"Subject: {n}\n\nbody\n".encode())
    first, second = start_pickup(mailsys), start_pickup(mailsys)
    assert exited(first, 60) == 0 and exited(second, 60) == 0
    subjects = sorted(
        int(re.search(rb"\nSubject: (\d+)\n", content).group(1))
        for _, _, content in queued(mailsys)
    )
    assert subjects == list(range(count))
    assert names(mailsys, "maildrop") == [] and names(mailsys, "corrupt") == []
