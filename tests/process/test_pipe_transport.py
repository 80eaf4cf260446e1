"""A pipe transport as a process: `python3 -m sdmail.pipe -n maildrop`, the test plays qmgr.

The transport is defined the way an administrator defines it, in
`$config_directory/pipe.d/maildrop.conf`; its command is `record.py`, a small program
that writes down what it was given (arguments, stdin, user, directory) and ends the way
the test asks: exit status, output, a signal, or sleeping past the time limit.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from pathlib import Path

import pytest

from sdmail.core import ipc, qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool

DEBIAN_PYTHON = "/usr/bin/python3"
CONTENT = b"Subject: piped\nFrom: ann@example.org\n\nFrom the start\n.a dot\nend\n"
RECORDER = """\
    #!/usr/bin/python3
    import json, os, signal, sys, time
    out, mode = sys.argv[1], sys.argv[2]
    data = sys.stdin.buffer.read()
    record = {"argv": sys.argv[3:], "uid": os.getuid(), "gid": os.getgid(),
              "groups": os.getgroups(), "cwd": os.getcwd(), "env": dict(os.environ),
              "stdin": data.decode("utf-8", "surrogateescape")}
    with open(os.path.join(out, f"{time.time_ns()}.json"), "w") as handle:
        json.dump(record, handle)
    if mode == "ok":
        print("queued as 42")
    elif mode.startswith("exit"):
        sys.exit(int(mode[4:]))
    elif mode.startswith("say"):
        print(mode[3:].replace("_", " "))
        sys.exit(1)
    elif mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "sleep":
        time.sleep(60)
"""


@pytest.fixture
def pipe(mailsys, make_user):
    """The maildrop transport's files: the recorder, its output directory, its user."""
    user = make_user()
    scratch = mailsys.root / "scratch"
    scratch.mkdir(mode=0o777)
    scratch.chmod(0o777)
    recorder = mailsys.root / "record.py"
    recorder.write_text(textwrap.dedent(RECORDER))
    recorder.chmod(0o755)
    (mailsys.config_dir / "pipe.d").mkdir()
    return PipeTransport(mailsys, user, recorder, scratch)


class PipeTransport:
    def __init__(self, mailsys, user, recorder: Path, scratch: Path) -> None:
        self.mailsys = mailsys
        self.user = user
        self.recorder = recorder
        self.scratch = scratch

    def define(self, mode: str = "ok", flags: str = "", user: str | None = None, extra: str = ""):
        (self.mailsys.config_dir / "pipe.d" / "maildrop.conf").write_text(
            f"# the maildrop transport\nflags={flags} user={user or self.user.pw_name} {extra}\n"
            f"argv={self.recorder} {self.scratch} {mode} -f $sender -- ${{recipient}}\n"
        )

    def start(self, main_cf: str = "", interpreter: str | None = None):
        self.mailsys.write_main_cf(main_cf)
        return self.mailsys.start(
            "pipe", sockets=("maildrop",), args=("-n", "maildrop"), interpreter=interpreter
        )

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.scratch.glob("*.json"))]


def deliver(mailsys, *recipients: str, content: bytes = CONTENT, sender: str = "ann@example.org"):
    envelope = Envelope(
        sender=sender,
        recipients=tuple(Recipient(r, orig_address=r) for r in recipients),
        arrival_sec=int(time.time()),
    )
    with Spool(mailsys.queue_dir) as spool:
        created = spool.create(QueueName.ACTIVE, envelope, content)
        with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
            stored = qfile.read_envelope(handle.fd).envelope
    request = DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport="maildrop",
        nexthop="Pipe.Example",
        sender=sender,
        recipients=tuple(
            RequestRecipient(r.address, r.offset or 0, r.orig_address) for r in stored.recipients
        ),
        arrival=float(envelope.arrival_sec),
        queue_active_at=time.time(),
    )
    frame = ipc.request(str(mailsys.socket_path("maildrop")), request.to_header(), timeout=60)
    result = DeliveryResult.from_header(frame.header)
    return created.queue_id, [(r.status, r.dsn, r.text) for r in result.recipients]


def done_marks(mailsys, queue_id: str) -> list[bool]:
    data = (mailsys.queue_dir / "active" / queue_id).read_bytes()
    return [r.done for r in qfile.decode(data).envelope.recipients]


def log_has(mailsys, pattern: str) -> bool:
    return any(re.search(pattern, line) for line in mailsys.log("pipe").splitlines())


# -- delivery -------------------------------------------------------------------------------
def test_one_command_run_for_all_recipients_each_one_argument(mailsys, pipe):
    pipe.define()
    pipe.start()
    queue_id, results = deliver(mailsys, "joe@x.test", "sue@y.test")
    sent = ("sent", "2.0.0", "delivered via maildrop service (queued as 42)")
    assert results == [sent, sent]
    assert done_marks(mailsys, queue_id) == [True, True]
    (record,) = pipe.records()
    assert record["argv"] == ["-f", "ann@example.org", "--", "joe@x.test", "sue@y.test"]
    assert record["stdin"].encode() == CONTENT
    assert (record["uid"], record["gid"]) == (pipe.user.pw_uid, pipe.user.pw_gid)
    assert record["groups"] in ([], [pipe.user.pw_gid])
    assert record["cwd"] in (str(mailsys.queue_dir), "/")
    assert record["env"]["PATH"] == "/usr/bin:/bin"
    assert log_has(
        mailsys,
        rf"sdmail/pipe\[\d+\]: {queue_id}: to=<sue@y\.test>, relay=maildrop, delay=[\d.]+, "
        r"delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=2\.0\.0, "
        r"status=sent \(delivered via maildrop service \(queued as 42\)\)",
    )


def test_flags_shape_what_the_command_reads(mailsys, pipe):
    pipe.define(flags="DORF>.B")
    pipe.start(interpreter=DEBIAN_PYTHON)  # the interpreter the package runs on
    _, results = deliver(mailsys, "Joe@X.test")
    assert results[0][0] == "sent"
    first, rest = pipe.records()[0]["stdin"].split("\n", 1)
    assert re.fullmatch(r"From ann@example\.org  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", first)
    assert rest == (
        "Return-Path: <ann@example.org>\nX-Original-To: Joe@X.test\nDelivered-To: joe@x.test\n"
        "Subject: piped\nFrom: ann@example.org\n\n>From the start\n..a dot\nend\n\n"
    )


def test_the_null_sender_is_mailer_daemon_unless_null_sender_says_otherwise(mailsys, pipe):
    pipe.define(flags="R")
    pipe.start()
    deliver(mailsys, "joe@x.test", sender="")
    record = pipe.records()[-1]
    assert record["argv"][:2] == ["-f", "MAILER-DAEMON"]
    assert record["stdin"].startswith("Return-Path: <MAILER-DAEMON>\n")
    pipe.define(flags="R", extra="null_sender=")
    deliver(mailsys, "joe@x.test", sender="")
    record = pipe.records()[-1]
    assert record["argv"][:2] == ["-f", ""]
    assert record["stdin"].startswith("Return-Path: <>\n")


def test_hostile_addresses_stay_single_arguments_and_reach_no_shell(mailsys, pipe):
    pipe.define(flags="q")
    pipe.start()
    planted = mailsys.root / "pwned"
    hostile = [
        f"x;touch {planted}@x.test",
        f"$(touch {planted})@x.test",
        "a b\nc@x.test",
        "--help@x.test",
    ]
    _, results = deliver(mailsys, *hostile, sender=f"`touch {planted}`@evil.test")
    assert [r[0] for r in results] == ["sent"] * 4
    (record,) = pipe.records()
    assert record["argv"] == [
        "-f",
        f'"`touch {planted}`"@evil.test',
        "--",
        f'"x;touch {planted}"@x.test',
        f'"$(touch {planted})"@x.test',
        '"a b?c"@x.test',
        "--help@x.test",
    ]
    assert not planted.exists()


# -- how commands end -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected", "done"),
    [
        ("exit75", ("deferred", "4.3.0", "temporary failure"), False),
        ("exit71", ("deferred", "4.3.0", "system resource problem"), False),
        ("exit67", ("bounced", "5.1.1", "user unknown"), True),
        ("say4.2.2_mailbox_over_quota", ("deferred", "4.2.2", "mailbox over quota"), False),
        ("say5.7.1_not_allowed", ("bounced", "5.7.1", "not allowed"), True),
    ],
)
def test_exit_statuses_map_as_postfix_maps_them(mailsys, pipe, mode, expected, done):
    pipe.define(mode=mode)
    pipe.start()
    queue_id, results = deliver(mailsys, "joe@x.test")
    assert results == [expected]
    assert done_marks(mailsys, queue_id) == [done]


def test_another_status_bounces_with_the_command_and_its_output(mailsys, pipe):
    pipe.define(mode="say_disk_says_no")
    pipe.start()
    _, results = deliver(mailsys, "joe@x.test")
    assert results == [
        (
            "bounced",
            "5.3.0",
            f'Command died with status 1: "{pipe.recorder}". Command output: disk says no',
        )
    ]


def test_a_command_killed_by_a_signal_defers(mailsys, pipe):
    pipe.define(mode="kill")
    pipe.start()
    _, results = deliver(mailsys, "joe@x.test")
    assert results == [("deferred", "4.3.0", f'Command died with signal 9: "{pipe.recorder}"')]


def test_the_transport_time_limit_bounces(mailsys, pipe):
    pipe.define(mode="sleep")
    pipe.start("maildrop_time_limit = 1s\n")
    started = time.monotonic()
    _, results = deliver(mailsys, "joe@x.test")
    assert time.monotonic() - started < 20
    assert results == [("bounced", "5.3.0", f'Command time limit exceeded: "{pipe.recorder}"')]


def test_a_message_over_size_bounces_without_running_the_command(mailsys, pipe):
    pipe.define(extra="size=20")
    pipe.start()
    _, results = deliver(mailsys, "joe@x.test")
    assert results == [("bounced", "5.2.3", "message too large")]
    assert pipe.records() == []


def test_flag_d_bounces_a_forwarding_loop(mailsys, pipe):
    pipe.define(flags="D")
    pipe.start()
    content = b"Delivered-To: joe@x.test\nSubject: again\n\nbody\n"
    _, results = deliver(mailsys, "joe@x.test", content=content)
    assert results == [("bounced", "5.4.6", "mail forwarding loop for joe@x.test")]
    assert pipe.records() == []


# -- configuration ------------------------------------------------------------------------------
def test_flag_d_with_several_recipients_defers_and_names_the_parameter(mailsys, pipe):
    pipe.define(flags="D")
    pipe.start()
    queue_id, results = deliver(mailsys, "joe@x.test", "sue@x.test")
    assert results == [("deferred", "4.3.5", "mail system configuration error")] * 2
    assert done_marks(mailsys, queue_id) == [False, False]
    assert log_has(mailsys, r"requires maildrop_destination_recipient_limit = 1")
    assert pipe.records() == []


def test_root_is_refused_and_nothing_runs(mailsys, pipe):
    pipe.define(user="root")
    pipe.start()
    _, results = deliver(mailsys, "joe@x.test")
    assert results == [("deferred", "4.3.5", "mail system configuration error")]
    assert log_has(mailsys, r"maildrop\.conf, line 2: user=: root has root privileges")
    assert pipe.records() == []


def test_a_fixed_definition_is_used_by_the_next_delivery_without_a_restart(mailsys, pipe):
    pipe.start()
    _, results = deliver(mailsys, "joe@x.test")
    assert results == [("deferred", "4.3.5", "mail system configuration error")]
    assert log_has(mailsys, r"pipe transport maildrop: .*maildrop\.conf: cannot read")
    pipe.define()
    assert deliver(mailsys, "joe@x.test")[1][0][0] == "sent"


def test_without_a_service_name_the_agent_does_not_start(mailsys):
    process = mailsys.start("pipe", sockets=("maildrop",))
    assert process.wait(30) == 64
    assert "a service name is required: -n NAME" in mailsys.log("pipe")


def test_a_bad_time_limit_stops_the_start_naming_main_cf(mailsys, pipe):
    pipe.define()
    process = pipe.start("maildrop_time_limit = soon\n")
    assert process.wait(30) == 78
    assert re.search(r"main\.cf, line \d+: maildrop_time_limit: ", mailsys.log("pipe"))


def test_qmgr_routes_a_transport_map_entry_to_the_pipe_transport(mailsys, pipe):
    pipe.define()
    table = mailsys.config_dir / "transport"
    table.write_text("pipe.example maildrop:\n")
    pipe.start(f"transport_maps = texthash:{table}\n")
    mailsys.start("qmgr", sockets=("qmgr",))
    envelope = Envelope(
        "ann@example.org", (Recipient("joe@pipe.example"),), arrival_sec=int(time.time())
    )
    with Spool(mailsys.queue_dir) as spool:
        queue_id = spool.create(QueueName.INCOMING, envelope, CONTENT).queue_id
    mailsys.wait_for(pipe.records, "the command's record")
    mailsys.wait_for(
        lambda: not mailsys.queue_files("incoming", "active", "deferred"), "an empty queue"
    )
    assert pipe.records()[0]["argv"] == ["-f", "ann@example.org", "--", "joe@pipe.example"]
    # qmgr logs `removed` just after the file went
    mailsys.wait_for(lambda: f"{queue_id}: removed" in mailsys.log("qmgr"), "the removed line")
    assert os.path.exists(mailsys.socket_path("maildrop"))
