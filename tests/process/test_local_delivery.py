"""The local delivery agent as a process: the test plays qmgr (and the cleanup service).

Each test puts a queue file into active/ with core/spool, takes the recipients' offsets
from core/qfile, connects to `$socket_directory/local` and sends a core/deliver_request
DeliveryRequest, as qmgr does; then it looks at what a user would see: mbox files and
Maildirs, files written by alias commands, done marks in the queue file, and the
agent's log lines. Forwarded mail reaches `FakeCleanup`, a tiny cleanup service in the
test that records each SubmitRequest and answers with a queue ID.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdmail.core import ipc, qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.mail_stream import SubmitRequest, accepted
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool

HOST = "mail.example.test"
SENDER = "ann@example.org"
CONTENT = b"Subject: hello\nFrom: Ann <ann@example.org>\n\nFrom the start\nbody line\n"
NOBODY = pwd.getpwnam("nobody")


# -- playing qmgr ----------------------------------------------------------------------------
def queue_message(mailsys, *recipients: str, content: bytes = CONTENT) -> DeliveryRequest:
    envelope = Envelope(
        sender=SENDER,
        recipients=tuple(Recipient(r, orig_address=r) for r in recipients),
        arrival_sec=int(time.time()),
    )
    with Spool(mailsys.queue_dir) as spool:
        created = spool.create(QueueName.ACTIVE, envelope, content)
        with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
            stored = qfile.read_envelope(handle.fd).envelope
    return DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport="local",
        nexthop=HOST,
        sender=SENDER,
        recipients=tuple(
            RequestRecipient(r.address, r.offset or 0, r.orig_address) for r in stored.recipients
        ),
        arrival=float(envelope.arrival_sec),
        queue_active_at=time.time(),
    )


def ask_local(mailsys, request: DeliveryRequest) -> DeliveryResult:
    path = str(mailsys.socket_path("local"))
    frame = ipc.request(path, request.to_header(), timeout=60)
    return DeliveryResult.from_header(frame.header)


def deliver(mailsys, *recipients: str, content: bytes = CONTENT) -> tuple[str, list[tuple]]:
    """Queue a message, have local deliver it; (queue ID, [(status, dsn, text)])."""
    request = queue_message(mailsys, *recipients, content=content)
    result = ask_local(mailsys, request)
    return request.queue_id, [(r.status, r.dsn, r.text) for r in result.recipients]


def done_marks(mailsys, queue_id: str) -> list[bool]:
    data = (mailsys.queue_dir / "active" / queue_id).read_bytes()
    return [r.done for r in qfile.decode(data).envelope.recipients]


def log_lines(mailsys, queue_id: str) -> list[str]:
    pattern = re.compile(rf"sdmail/local\[\d+\]: ({re.escape(queue_id)}: .*)")
    return [m.group(1) for m in map(pattern.search, mailsys.log("local").splitlines()) if m]


def delivery_line(queue_id: str, to: str, dsn: str, status: str, text: str) -> re.Pattern[str]:
    return re.compile(
        rf"{re.escape(queue_id)}: to=<{re.escape(to)}>, relay=local, delay=[\d.]+, "
        rf"delays=[\d.]+/[\d.]+/0/[\d.]+, dsn={re.escape(dsn)}, status={status} "
        rf"\({re.escape(text)}\)"
    )


def has_line(mailsys, queue_id: str, pattern: re.Pattern[str]) -> bool:
    return any(pattern.fullmatch(line) for line in log_lines(mailsys, queue_id))


def start_local(mailsys, extra: str = ""):
    if extra:
        mailsys.write_main_cf(extra)
    if not (mailsys.config_dir / "aliases.db").exists():
        build_aliases(mailsys, "")
    return mailsys.start("local", sockets=("local",), mode=0o666)


def build_aliases(mailsys, text: str) -> Path:
    source = mailsys.config_dir / "aliases"
    source.write_text(text)
    done = mailsys.run("postalias", str(source))
    assert done.returncode == 0, done.stderr
    return source


def scratch(mailsys) -> Path:
    directory = mailsys.root / "scratch"
    directory.mkdir(mode=0o777, exist_ok=True)
    directory.chmod(0o777)
    return directory


# -- the cleanup service's side ---------------------------------------------------------------
@dataclass
class Submission:
    request: SubmitRequest
    content: bytes
    uid: int


class FakeCleanup:
    """Records each submission to `$socket_directory/cleanup` and answers with a queue ID."""

    def __init__(self, path: Path) -> None:
        self.submissions: list[Submission] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path.unlink(missing_ok=True)
        self.listener.bind(str(path))
        self.listener.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                caller = ipc.peer_credentials(conn)
                with conn.makefile("rb") as reader:
                    frame = ipc.recv_frame(reader)
                request = SubmitRequest.from_header(frame.header)
                self.submissions.append(Submission(request, frame.payload, caller.uid))
                ipc.send_frame(conn, accepted(f"4jFAKE{len(self.submissions):04d}z1"))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cleanup(mailsys) -> Iterator[FakeCleanup]:
    fake = FakeCleanup(mailsys.socket_path("cleanup"))
    yield fake
    fake.close()


# -- mailboxes ---------------------------------------------------------------------------------
def test_mail_lands_in_the_users_mbox_and_the_recipient_is_marked_done(mailsys, make_user):
    joe = make_user()
    start_local(mailsys)
    address = f"{joe.pw_name}@{HOST}"
    queue_id, results = deliver(mailsys, address)
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    assert done_marks(mailsys, queue_id) == [True]
    mbox = mailsys.mail_dir / joe.pw_name
    text = mbox.read_text()
    first, rest = text.split("\n", 1)
    assert re.fullmatch(rf"From {SENDER}  \w{{3}} \w{{3}} [ \d]\d \d\d:\d\d:\d\d \d{{4}}", first)
    assert rest == (
        f"Return-Path: <{SENDER}>\n"
        f"X-Original-To: {address}\n"
        f"Delivered-To: {address}\n"
        "Subject: hello\nFrom: Ann <ann@example.org>\n\n>From the start\nbody line\n\n"
    )
    assert (mbox.stat().st_uid, mbox.stat().st_mode & 0o777) == (joe.pw_uid, 0o600)
    assert has_line(
        mailsys, queue_id, delivery_line(queue_id, address, "2.0.0", "sent", "delivered to mailbox")
    )


def test_two_messages_append_to_one_mbox(mailsys, make_user):
    joe = make_user()
    start_local(mailsys)
    deliver(mailsys, f"{joe.pw_name}@{HOST}", content=b"Subject: one\n\n1\n")
    deliver(mailsys, f"{joe.pw_name}@{HOST}", content=b"Subject: two\n\n2\n")
    text = (mailsys.mail_dir / joe.pw_name).read_text()
    assert text.count(f"From {SENDER}  ") == 2
    assert text.index("Subject: one") < text.index("Subject: two")


def test_home_maildir_gets_the_message_in_new(mailsys, make_user):
    joe = make_user()
    start_local(mailsys, "home_mailbox = Maildir/\n")
    address = f"{joe.pw_name}@{HOST}"
    queue_id, results = deliver(mailsys, address)
    assert results == [("sent", "2.0.0", "delivered to maildir")]
    maildir = Path(joe.pw_dir, "Maildir")
    files = list((maildir / "new").iterdir())
    assert len(files) == 1 and os.listdir(maildir / "tmp") == []
    assert files[0].read_bytes() == (
        f"Return-Path: <{SENDER}>\nX-Original-To: {address}\nDelivered-To: {address}\n".encode()
        + CONTENT
    )
    assert files[0].stat().st_uid == joe.pw_uid
    assert maildir.stat().st_uid == joe.pw_uid
    assert done_marks(mailsys, queue_id) == [True]


def test_extension_is_delivered_to_the_users_mailbox(mailsys, make_user):
    joe = make_user()
    start_local(mailsys, "recipient_delimiter = +\n")
    address = f"{joe.pw_name}+lists@{HOST}"
    _, results = deliver(mailsys, address)
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    assert f"Delivered-To: {address}\n" in (mailsys.mail_dir / joe.pw_name).read_text()


def test_unknown_user_bounces_with_postfix_text(mailsys):
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"nosuchuser@{HOST}")
    assert results == [("bounced", "5.1.1", 'unknown user: "nosuchuser"')]
    assert done_marks(mailsys, queue_id) == [True]
    assert has_line(
        mailsys,
        queue_id,
        delivery_line(
            queue_id, f"nosuchuser@{HOST}", "5.1.1", "bounced", 'unknown user: "nosuchuser"'
        ),
    )


def test_symlinked_mailbox_is_refused_and_deferred(mailsys, make_user):
    joe = make_user()
    start_local(mailsys)
    target = mailsys.root / "precious"
    target.write_text("precious\n")
    (mailsys.mail_dir / joe.pw_name).symlink_to(target)
    queue_id, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    [(status, dsn, text)] = results
    assert (status, dsn) == ("deferred", "4.2.0")
    assert "is a symbolic link" in text and text.startswith("cannot update mailbox")
    assert target.read_text() == "precious\n"
    assert done_marks(mailsys, queue_id) == [False]


def test_mailbox_the_user_cannot_write_is_deferred(mailsys, make_user):
    joe = make_user()
    start_local(mailsys)
    mbox = mailsys.mail_dir / joe.pw_name
    mbox.write_text("")
    mbox.chmod(0o600)  # root's file: the user's child cannot open it
    queue_id, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert [(s, d) for s, d, _ in results] == [("deferred", "4.2.0")]
    assert "Permission denied" in results[0][2]
    assert done_marks(mailsys, queue_id) == [False]


def test_mailbox_command_runs_as_the_user(mailsys, make_user):
    joe = make_user()
    start_local(mailsys, 'mailbox_command = id -u > "$HOME/mbc.uid"; cat > "$HOME/mbc.msg"\n')
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    command = 'id -u > "$HOME/mbc.uid"; cat > "$HOME/mbc.msg"'
    assert results == [("sent", "2.0.0", f"delivered to command: {command}")]
    assert Path(joe.pw_dir, "mbc.uid").read_text().strip() == str(joe.pw_uid)
    assert Path(joe.pw_dir, "mbc.msg").read_bytes().startswith(f"From {SENDER}  ".encode())


# -- the caller and the service ---------------------------------------------------------------
def test_callers_other_than_root_are_refused(mailsys):
    start_local(mailsys)
    request = queue_message(mailsys, f"nobody@{HOST}")
    code = (
        "import sys, json; from sdmail.core import ipc\n"
        "try:\n"
        "    ipc.request(sys.argv[1], json.loads(sys.argv[2]), timeout=30)\n"
        "except (ipc.ConnectionClosed, ConnectionResetError):\n"
        "    sys.exit(3)\n"
    )
    # Debian's python3: the test's own interpreter may live where nobody cannot read it.
    done = subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            code,
            str(mailsys.socket_path("local")),
            json.dumps(request.to_header()),
        ],
        env=mailsys.env,
        user=NOBODY.pw_uid,
        group=NOBODY.pw_gid,
        extra_groups=[],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert done_marks(mailsys, request.queue_id) == [False]
    assert re.search(rf"refusing a request from pid \d+ uid {NOBODY.pw_uid}", mailsys.log("local"))


def test_requests_are_served_at_once_and_the_service_exits_when_idle(mailsys, make_user):
    joe = make_user()
    directory = scratch(mailsys)
    build_aliases(mailsys, f"slow: |sleep 3; touch {directory}/slow-done\n")
    process = start_local(mailsys, "max_idle = 2s\n")
    slow = queue_message(mailsys, f"slow@{HOST}")
    answers: list[DeliveryResult] = []
    waiter = threading.Thread(target=lambda: answers.append(ask_local(mailsys, slow)))
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    assert time.monotonic() - started < 2.5  # not queued behind the slow command
    waiter.join(30)
    assert [r.status for r in answers[0].recipients] == ["sent"]
    assert process.wait(30) == 0


# -- aliases ------------------------------------------------------------------------------------
def test_alias_command_runs_as_default_privs_with_postfix_environment(mailsys):
    directory = scratch(mailsys)
    script = directory / "robot.sh"
    script.write_text(
        f"id -u > {directory}/uid; cat > {directory}/msg\n"
        'echo "$SENDER|$RECIPIENT|$USER|$EXTENSION|$LOCAL|$DOMAIN|$ORIGINAL_RECIPIENT"'
        f" > {directory}/env\n"
    )
    build_aliases(mailsys, f'robot: "|/bin/sh {script}"\n')
    start_local(mailsys, "recipient_delimiter = +\n")
    address = f"robot+tag@{HOST}"
    queue_id, results = deliver(mailsys, address)
    assert results == [("sent", "2.0.0", f"delivered to command: /bin/sh {script}")]
    assert (directory / "uid").read_text().strip() == str(NOBODY.pw_uid)
    assert (directory / "env").read_text().strip() == (
        f"{SENDER}|{address}|robot|tag|robot+tag|{HOST}|{address}"
    )
    message = (directory / "msg").read_bytes()
    assert message.startswith(f"From {SENDER}  ".encode())
    assert f"Delivered-To: {address}\n".encode() in message
    assert message.endswith(CONTENT)  # commands get no >From quoting and no blank line
    assert done_marks(mailsys, queue_id) == [True]


def test_alias_file_owned_by_a_user_runs_commands_as_that_user(mailsys, make_user):
    owner = make_user()
    directory = scratch(mailsys)
    build_aliases(mailsys, f"robot: |id -u > {directory}/uid\n")
    os.chown(mailsys.config_dir / "aliases.db", owner.pw_uid, owner.pw_gid)
    start_local(mailsys)
    deliver(mailsys, f"robot@{HOST}")
    assert (directory / "uid").read_text().strip() == str(owner.pw_uid)


def test_alias_command_exiting_75_defers_and_1_bounces(mailsys):
    build_aliases(mailsys, 'later: "|echo busy; exit 75"\nnever: "|echo go away; exit 1"\n')
    start_local(mailsys)
    later_id, later = deliver(mailsys, f"later@{HOST}")
    never_id, never = deliver(mailsys, f"never@{HOST}")
    assert later == [("deferred", "4.3.0", "temporary failure. Command output: busy")]
    assert never == [
        (
            "bounced",
            "5.3.0",
            'Command died with status 1: "echo go away; exit 1". Command output: go away',
        )
    ]
    assert done_marks(mailsys, later_id) == [False]
    assert done_marks(mailsys, never_id) == [True]


def test_alias_command_past_the_time_limit_bounces(mailsys):
    build_aliases(mailsys, "stuck: |sleep 30\n")
    start_local(mailsys, "command_time_limit = 1s\n")
    started = time.monotonic()
    _, results = deliver(mailsys, f"stuck@{HOST}")
    assert results == [("bounced", "5.3.0", 'Command time limit exceeded: "sleep 30"')]
    assert time.monotonic() - started < 15


def test_alias_file_target_is_appended_as_default_privs(mailsys):
    directory = scratch(mailsys)
    build_aliases(mailsys, f"archive: {directory}/archive.mbox\n")
    start_local(mailsys)
    _, results = deliver(mailsys, f"archive@{HOST}")
    target = directory / "archive.mbox"
    assert results == [("sent", "2.0.0", f"delivered to file: {target}")]
    assert target.stat().st_uid == NOBODY.pw_uid
    text = target.read_text()
    assert text.startswith(f"From {SENDER}  ") and text.endswith("body line\n\n")
    assert "\n>From the start\n" in text


def test_alias_addresses_are_forwarded_through_the_cleanup_service(mailsys, cleanup):
    build_aliases(mailsys, "team: bob, carol@example.net\n")
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"team@{HOST}")
    assert results == [("sent", "2.0.0", "forwarded as 4jFAKE0001z1")]
    [submission] = cleanup.submissions
    request = submission.request
    assert request.origin == "forward" and request.sender == SENDER
    assert [r.address for r in request.recipients] == ["bob", "carol@example.net"]
    assert request.attributes == {"orig_queue_id": queue_id}
    assert submission.uid == 0
    head, _, rest = submission.content.partition(b"\n\tid ")
    assert head == f"Received: by {HOST} (sdmail)".encode()
    assert rest.startswith(f"{queue_id}; ".encode())
    assert f"\nDelivered-To: team@{HOST}\n".encode() + CONTENT in submission.content
    assert has_line(
        mailsys,
        queue_id,
        delivery_line(queue_id, f"team@{HOST}", "2.0.0", "sent", "forwarded as 4jFAKE0001z1"),
    )


def test_owner_alias_becomes_the_sender_of_forwarded_mail(mailsys, cleanup):
    build_aliases(mailsys, "list: bob, carol\nowner-list: listmaster\n")
    start_local(mailsys)
    deliver(mailsys, f"list@{HOST}")
    assert cleanup.submissions[0].request.sender == f"owner-list@{HOST}"


def test_alias_naming_itself_goes_to_its_mailbox(mailsys, make_user, cleanup):
    joe = make_user()
    build_aliases(mailsys, f"{joe.pw_name}: {joe.pw_name}, bob\n")
    start_local(mailsys)
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    assert (mailsys.mail_dir / joe.pw_name).exists()
    assert [r.address for r in cleanup.submissions[0].request.recipients] == ["bob"]


def test_include_file_is_expanded_and_its_files_are_restricted(mailsys, cleanup):
    directory = scratch(mailsys)
    members = directory / "members"
    members.write_text("# the team\nbob\ncarol@example.net, /tmp/not-allowed\n")
    build_aliases(mailsys, f"crew: :include:{members}\n")
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"crew@{HOST}")
    assert results == [("bounced", "5.7.1", "mail to file is restricted")]
    assert [r.address for r in cleanup.submissions[0].request.recipients] == [
        "bob",
        "carol@example.net",
    ]
    assert not Path("/tmp/not-allowed").exists()
    lines = log_lines(mailsys, queue_id)
    assert any("status=sent (forwarded as 4jFAKE0001z1)" in line for line in lines)
    assert any("status=bounced (mail to file is restricted)" in line for line in lines)


# -- .forward -----------------------------------------------------------------------------------
def write_forward(user: pwd.struct_passwd, text: str) -> Path:
    path = Path(user.pw_dir, ".forward")
    path.write_text(text)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o644)
    return path


def test_forward_to_another_local_user_is_resubmitted(mailsys, make_user, cleanup):
    joe, sue = make_user(), make_user()
    write_forward(joe, f"{sue.pw_name}\n")
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "forwarded as 4jFAKE0001z1")]
    assert [r.address for r in cleanup.submissions[0].request.recipients] == [sue.pw_name]
    assert f"Delivered-To: {joe.pw_name}@{HOST}\n".encode() in cleanup.submissions[0].content
    assert not (mailsys.mail_dir / joe.pw_name).exists()
    assert done_marks(mailsys, queue_id) == [True]


def test_forward_to_a_file_the_user_cannot_write_is_deferred(mailsys, make_user):
    joe = make_user()
    locked = mailsys.root / "locked"
    locked.mkdir(mode=0o755)  # root's directory
    write_forward(joe, f"{locked}/copy\n")
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    [(status, dsn, text)] = results
    assert (status, dsn) == ("deferred", "4.2.0")
    assert text.startswith(f"cannot append message to file {locked}/copy: ")
    assert "Permission denied" in text
    assert not (locked / "copy").exists()
    assert done_marks(mailsys, queue_id) == [False]


def test_forward_keeping_a_copy_writes_mailbox_and_file_as_the_user(mailsys, make_user):
    joe = make_user()
    copy = Path(joe.pw_dir, "copy.mbox")
    write_forward(joe, f"\\{joe.pw_name}, {copy}\n")
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    lines = log_lines(mailsys, queue_id)
    assert any(line.endswith("status=sent (delivered to mailbox)") for line in lines)
    assert any(line.endswith(f"status=sent (delivered to file: {copy})") for line in lines)
    assert (mailsys.mail_dir / joe.pw_name).exists()
    assert copy.stat().st_uid == joe.pw_uid


def test_looping_forward_bounces_with_postfix_text(mailsys, make_user):
    joe = make_user()
    write_forward(joe, f"{joe.pw_name}@elsewhere.example\n")
    start_local(mailsys)
    address = f"{joe.pw_name}@{HOST}"
    looped = f"Delivered-To: {address}\n".encode() + CONTENT
    queue_id, results = deliver(mailsys, address, content=looped)
    assert results == [("bounced", "5.4.6", f"mail forwarding loop for {address}")]
    assert done_marks(mailsys, queue_id) == [True]


def test_forward_writable_by_others_is_ignored(mailsys, make_user, cleanup):
    joe = make_user()
    write_forward(joe, "bob\n").chmod(0o666)
    start_local(mailsys)
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    assert cleanup.submissions == []
    assert "writable by everyone; ignoring it" in mailsys.log("local")


def test_backslash_names_the_users_own_mailbox_past_its_alias(mailsys, make_user, cleanup):
    joe = make_user()
    build_aliases(mailsys, f"{joe.pw_name}: \\{joe.pw_name}, bob\n")
    write_forward(joe, "elsewhere@example.net\n")  # \user skips .forward too
    start_local(mailsys)
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    assert [r.address for r in cleanup.submissions[0].request.recipients] == ["bob"]
    assert len(cleanup.submissions) == 1


# -- hostile content, Debian's spool, the service's lifetime -------------------------------------
def test_hostile_content_reaches_the_mailbox_byte_for_byte(mailsys, make_user):
    joe = make_user()
    start_local(mailsys)
    content = (
        "Subject: caf\u00e9 \u2603\n".encode()
        + b"X-Raw: \xff\xfe\n\n"
        + b"nul\x00byte\n"
        + b"x" * 5000
        + b"\nno final newline"
    )
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}", content=content)
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    data = (mailsys.mail_dir / joe.pw_name).read_bytes()
    assert content + b"\n\n" in data


def test_debian_mail_spool_owned_by_group_mail_is_written_as_the_user(mailsys, make_user):
    joe = make_user()
    mail_gid = 8  # Debian's group "mail"
    os.chown(mailsys.mail_dir, 0, mail_gid)
    mailsys.mail_dir.chmod(0o2775)
    start_local(mailsys)
    _, results = deliver(mailsys, f"{joe.pw_name}@{HOST}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")]
    mbox = (mailsys.mail_dir / joe.pw_name).stat()
    assert (mbox.st_uid, mbox.st_gid) == (joe.pw_uid, mail_gid)
    assert not (mailsys.mail_dir / f"{joe.pw_name}.lock").exists()


def test_service_exits_after_max_use_connections(mailsys, make_user):
    joe = make_user()
    process = start_local(mailsys, "max_use = 2\n")
    for _ in range(2):
        assert deliver(mailsys, f"{joe.pw_name}@{HOST}")[1][0][0] == "sent"
    assert process.wait(30) == 0


def test_sigterm_lets_a_running_delivery_finish(mailsys):
    directory = scratch(mailsys)
    build_aliases(mailsys, f"slow: |sleep 2; touch {directory}/finished\n")
    process = start_local(mailsys)
    request = queue_message(mailsys, f"slow@{HOST}")
    answers: list[DeliveryResult] = []
    waiter = threading.Thread(target=lambda: answers.append(ask_local(mailsys, request)))
    waiter.start()
    time.sleep(0.7)
    process.terminate()
    waiter.join(30)
    assert [r.status for r in answers[0].recipients] == ["sent"]
    assert (directory / "finished").exists()
    assert process.wait(30) == 0
    assert done_marks(mailsys, request.queue_id) == [True]


def test_unknown_lock_style_stops_the_start_with_exit_78(mailsys):
    process = start_local(mailsys, "mailbox_delivery_lock = posix\n")
    assert process.wait(30) == 78
    assert "unknown mailbox lock style: posix" in mailsys.log("local")


def test_one_failing_target_leaves_the_others_delivered_and_logged(mailsys):
    directory = scratch(mailsys)
    build_aliases(mailsys, f"ghost: ghost, {directory}/ghost.mbox\n")
    start_local(mailsys)
    queue_id, results = deliver(mailsys, f"ghost@{HOST}")
    assert results == [("bounced", "5.1.1", 'unknown user: "ghost"')]
    assert (directory / "ghost.mbox").exists()
    lines = log_lines(mailsys, queue_id)
    assert any(line.endswith('status=bounced (unknown user: "ghost")') for line in lines)
    assert any(f"status=sent (delivered to file: {directory}/ghost.mbox)" in line for line in lines)
