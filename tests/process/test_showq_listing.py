"""showq and postqueue as processes: the listing any user gets through the showq socket,
the refusals, the mail system down, and the flush triggers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sdmail.core import bounce_log
from sdmail.core.bounce_log import StatusRecord
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool

if TYPE_CHECKING:  # the fixture's class; conftest is not importable by name
    from conftest import MailSystem

REASON = "connect to mx.example.com[192.0.2.7]:25: Connection refused"
ROW = re.compile(r"(\S+)\s+(\d+) \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d (\S+)")


def put(mailsys: MailSystem, queue: QueueName, sender: str, *recipients: str) -> str:
    envelope = Envelope(
        sender=sender,
        recipients=tuple(Recipient(r) for r in recipients),
        arrival_sec=int(time.time()),
    )
    with Spool(mailsys.queue_dir) as spool:
        return spool.create(queue, envelope, b"Subject: x\n\n" + b"y" * 3000).queue_id


def deferred_with_reason(mailsys: MailSystem) -> str:
    queue_id = put(mailsys, QueueName.DEFERRED, "sender@example.org", "user@example.com")
    record = StatusRecord("user@example.com", "deferred", "4.4.1", REASON)
    bounce_log.append(mailsys.queue_dir, QueueName.DEFER, queue_id, record)
    return queue_id


def postqueue(mailsys: MailSystem, *args: str, user: str | None = None):
    return mailsys.run("postqueue", *args, user=user)


def start_showq(mailsys: MailSystem) -> subprocess.Popen[bytes]:
    return mailsys.start("showq", sockets=("showq",))


def text(output: bytes) -> str:
    return output.decode("utf-8")


def test_root_and_a_user_see_the_queue_through_showq(mailsys: MailSystem, make_user) -> None:
    deferred = deferred_with_reason(mailsys)
    held = put(mailsys, QueueName.HOLD, "", "held@example.com")
    active = put(mailsys, QueueName.ACTIVE, "a@example.org", "b@example.net")
    start_showq(mailsys)
    user = make_user().pw_name
    for who in (None, user):
        result = postqueue(mailsys, "-p", user=who)
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""  # no "Mail system is down -- accessing queue directly"
        lines = text(result.stdout).splitlines()
        assert lines[0] == (
            "-Queue ID-        --Size-- ---Arrival Time---- --Sender/Recipient------"
        )
        rows = {m.group(1): m.groups() for line in lines if (m := ROW.fullmatch(line))}
        assert rows[f"{active}*"][1:] == ("3012", "a@example.org")
        assert rows[f"{held}!"][1:] == ("3012", "MAILER-DAEMON")
        assert rows[deferred][1:] == ("3012", "sender@example.org")
        reason_line = lines.index(" " * (76 - len(REASON)) + f"({REASON})")
        assert lines[reason_line + 1] == " " * 47 + "user@example.com"
        assert lines[-1] == "-- 8 Kbytes in 3 Requests."
        assert lines[-2] == ""
    # Postfix's order: active before deferred before hold.
    order = [line.split()[0] for line in lines if ROW.fullmatch(line)]
    assert order == [f"{active}*", deferred, f"{held}!"]


def test_postqueue_j_for_a_user_is_one_json_object_per_message(
    mailsys: MailSystem, make_user
) -> None:
    deferred = deferred_with_reason(mailsys)
    start_showq(mailsys)
    result = postqueue(mailsys, "-j", user=make_user().pw_name)
    assert result.returncode == 0, result.stderr
    (line,) = text(result.stdout).splitlines()
    entry = json.loads(line)
    assert list(entry) == [
        "queue_name",
        "queue_id",
        "arrival_time",
        "message_size",
        "forced_expire",
        "sender",
        "recipients",
    ]
    assert entry["queue_id"] == deferred
    assert entry["queue_name"] == "deferred"
    assert entry["recipients"] == [{"address": "user@example.com", "delay_reason": REASON}]


def test_an_empty_queue_is_exactly_mail_queue_is_empty(mailsys: MailSystem, make_user) -> None:
    start_showq(mailsys)
    for who in (None, make_user().pw_name):
        result = postqueue(mailsys, "-p", user=who)
        assert (result.returncode, result.stdout) == (0, b"Mail queue is empty\n")
        result = postqueue(mailsys, "-j", user=who)
        assert (result.returncode, result.stdout) == (0, b"")


def test_a_user_not_in_authorized_mailq_users_is_refused(mailsys: MailSystem, make_user) -> None:
    mailsys.write_main_cf("authorized_mailq_users = root\n")
    put(mailsys, QueueName.DEFERRED, "a@example.org", "b@example.net")
    start_showq(mailsys)
    account = make_user()
    result = postqueue(mailsys, "-p", user=account.pw_name)
    assert result.returncode == 77
    assert result.stdout == b""
    assert text(result.stderr) == (
        f"postqueue: fatal: User {account.pw_name}({account.pw_uid}) is not allowed to view"
        " the mail queue\n"
    )
    assert postqueue(mailsys, "-p").returncode == 0  # root always may


LIST_AS_CLIENT = (
    "import sys\n"
    "from sdmail.core.showq_proto import ShowqRefused, request_listing\n"
    "try:\n"
    "    listing = request_listing(sys.argv[1], timeout=30)\n"
    "except ShowqRefused as exc:\n"
    "    print('refused:', exc)\n"
    "else:\n"
    "    print([e.sender for e in listing])\n"
)


def list_as_client(mailsys: MailSystem, user: str) -> str:
    """What a client that skips postqueue's own check gets from showq, run as USER."""
    command = [
        "runuser",
        "-u",
        user,
        "--",
        "env",
        f"PYTHONPATH={mailsys.env['PYTHONPATH']}",
        mailsys.user_python,
        "-c",
        LIST_AS_CLIENT,
        str(mailsys.socket_path("showq")),
    ]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return text(result.stdout)


def test_showq_checks_the_caller_itself(mailsys: MailSystem, make_user) -> None:
    """A client that skips postqueue's own check is refused by the service (SO_PEERCRED)."""
    mailsys.write_main_cf("authorized_mailq_users = root\n")
    put(mailsys, QueueName.DEFERRED, "secret-sender@example.org", "b@example.net")
    start_showq(mailsys)
    account = make_user()
    assert list_as_client(mailsys, account.pw_name) == (
        f"refused: User {account.pw_name}({account.pw_uid}) is not allowed to view the mail queue\n"
    )
    assert "is not allowed to view the mail queue" in mailsys.log("showq")


def test_a_reload_changes_who_may_list(mailsys: MailSystem, make_user) -> None:
    put(mailsys, QueueName.DEFERRED, "visible@example.org", "b@example.net")
    process = start_showq(mailsys)
    user = make_user().pw_name
    assert list_as_client(mailsys, user) == "['visible@example.org']\n"
    mailsys.write_main_cf("authorized_mailq_users = root\n")
    process.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload" in mailsys.log("showq"), "the reload")
    assert list_as_client(mailsys, user).startswith("refused: User ")


def test_showq_down_is_fatal_for_a_user_and_a_direct_listing_for_root(
    mailsys: MailSystem, make_user
) -> None:
    queue_id = deferred_with_reason(mailsys)
    result = postqueue(mailsys, "-p", user=make_user().pw_name)
    assert result.returncode == 69
    assert result.stdout == b""
    assert result.stderr == b"postqueue: fatal: Queue report unavailable - mail system is down\n"
    result = postqueue(mailsys, "-p")
    assert result.returncode == 0
    assert text(result.stderr).startswith(
        "postqueue: warning: Mail system is down -- accessing queue directly"
        " (Connect to the sdmail showq service: "
    )
    assert text(result.stdout).splitlines()[1].startswith(queue_id)
    assert text(result.stdout).endswith("-- 2 Kbytes in 1 Request.\n")


def test_a_socket_nobody_serves_is_down_too(mailsys: MailSystem, make_user) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(mailsys.socket_path("showq")))
    os.chmod(mailsys.socket_path("showq"), 0o666)
    result = postqueue(mailsys, "-j", user=make_user().pw_name)
    assert (result.returncode, result.stderr) == (
        69,
        b"postqueue: fatal: Queue report unavailable - mail system is down\n",
    )


def test_a_file_showq_cannot_read_is_skipped_with_a_warning(mailsys: MailSystem) -> None:
    good = put(mailsys, QueueName.DEFERRED, "a@example.org", "b@example.net")
    bad = put(mailsys, QueueName.INCOMING, "c@example.org", "d@example.net")
    path = mailsys.queue_dir / "incoming" / bad
    path.write_bytes(path.read_bytes()[:40])
    start_showq(mailsys)
    result = postqueue(mailsys, "-j")
    assert result.returncode == 0
    assert [json.loads(line)["queue_id"] for line in text(result.stdout).splitlines()] == [good]
    assert f"{bad}: warning: incoming/{bad}" in mailsys.log("showq")


def test_a_stalled_client_does_not_hold_up_the_others(mailsys: MailSystem) -> None:
    put(mailsys, QueueName.DEFERRED, "a@example.org", "b@example.net")
    start_showq(mailsys)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled:
        stalled.connect(str(mailsys.socket_path("showq")))  # and never sends its request
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as garbage:
            garbage.connect(str(mailsys.socket_path("showq")))
            garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
        result = postqueue(mailsys, "-p")
        assert result.returncode == 0
        assert text(result.stdout).endswith("-- 2 Kbytes in 1 Request.\n")


def test_showq_exits_after_max_idle_and_after_max_use(mailsys: MailSystem) -> None:
    mailsys.write_main_cf("max_idle = 1s\n")
    process = start_showq(mailsys)
    assert process.wait(timeout=20) == 0
    mailsys.write_main_cf("max_use = 2\n")
    process = start_showq(mailsys)
    for _ in range(2):
        assert postqueue(mailsys, "-p").stdout == b"Mail queue is empty\n"
    assert process.wait(timeout=20) == 0


def test_showq_without_its_socket_exits_ex_config(mailsys: MailSystem) -> None:
    process = mailsys.start("showq")
    assert process.wait(timeout=20) == 78
    assert "no listening socket named 'showq'" in mailsys.log("showq")


# --------------------------------------------------------------------------------------
# Flushing
# --------------------------------------------------------------------------------------
class TriggerListener:
    """Plays qmgr's trigger socket: records what each connection wrote."""

    def __init__(self, path: Path) -> None:
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(64):
                    data += chunk
                self.received.append(data)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_flush_without_qmgr_is_fatal(mailsys: MailSystem, make_user) -> None:
    for who in (None, make_user().pw_name):
        result = postqueue(mailsys, "-f", user=who)
        assert (result.returncode, result.stderr) == (
            69,
            b"postqueue: fatal: Cannot flush mail queue - mail system is down\n",
        )


def test_flush_sends_qmgr_its_flush_trigger(mailsys: MailSystem, make_user) -> None:
    qmgr = TriggerListener(mailsys.socket_path("qmgr"))
    mailsys.start("flush", sockets=("flush",))  # -i goes through the fast-flush service
    try:
        assert postqueue(mailsys, "-f").returncode == 0
        assert postqueue(mailsys, "-f", user=make_user().pw_name).returncode == 0
        queue_id = put(mailsys, QueueName.DEFERRED, "a@example.org", "b@example.net")
        assert postqueue(mailsys, "-i", queue_id).returncode == 0
        mailsys.wait_for(lambda: len(qmgr.received) == 3, "three triggers")
        # -i: the service makes the message due, then forget dead sites and scan deferred/.
        assert qmgr.received == [b"FADI", b"FADI", b"FD"]
    finally:
        qmgr.close()


def test_a_user_not_in_authorized_flush_users_cannot_flush(mailsys: MailSystem, make_user) -> None:
    mailsys.write_main_cf("authorized_flush_users = root\n")
    qmgr = TriggerListener(mailsys.socket_path("qmgr"))
    try:
        account = make_user()
        result = postqueue(mailsys, "-f", user=account.pw_name)
        assert result.returncode == 77
        assert text(result.stderr) == (
            f"postqueue: fatal: User {account.pw_name}({account.pw_uid}) is not allowed to"
            " flush the mail queue\n"
        )
        time.sleep(0.2)
        assert qmgr.received == []
    finally:
        qmgr.close()


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (
            ("-i", "../../etc/passwd"),
            64,
            'Cannot flush queue ID - invalid name: "../../etc/passwd"',
        ),
        (("-s", "bad_site!"), 64, 'Cannot flush mail queue - invalid destination: "bad_site!"'),
        (
            ("-s", "example.com"),
            69,
            'Flush service is not configured for destination "example.com"',
        ),
        (("-p", "-f"), 64, "usage: postqueue -f | postqueue -i queueid | postqueue -j"),
        ((), 64, "usage: postqueue -f | postqueue -i queueid | postqueue -j"),
    ],
)
def test_bad_requests_get_postfix_texts(
    mailsys: MailSystem, args: tuple[str, ...], status: int, message: str
) -> None:
    mailsys.start("flush", sockets=("flush",))  # -s asks it whether the site is eligible
    result = postqueue(mailsys, *args)
    assert result.returncode == status
    assert text(result.stderr).startswith(f"postqueue: fatal: {message}")
    assert result.stdout == b""
