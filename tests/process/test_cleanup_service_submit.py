"""The cleanup service as a process: real clients (core/mail_stream.submit) on its socket."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sdmail.core import qfile
from sdmail.core.ipc import PROTOCOL_VERSION, encode_frame
from sdmail.core.mail_stream import SubmitError, SubmitRecipient, SubmitRequest, submit
from sdmail.core.records import Notify
from sdmail.core.spool import valid_queue_id

HOST = "mail.example.test"


def forward(*recipients: str, sender: str = "alice@example.org", **fields) -> SubmitRequest:
    fields.setdefault("origin", "forward")
    return SubmitRequest(sender, tuple(SubmitRecipient(r) for r in recipients), **fields)


def incoming(mailsys) -> dict[str, tuple[qfile.QueueFile, bytes]]:
    out = {}
    for name in os.listdir(mailsys.queue_dir / "incoming"):
        if not valid_queue_id(name):
            continue  # cleanup at work
        data = (mailsys.queue_dir / "incoming" / name).read_bytes()
        parsed = qfile.decode(data)
        out[name] = (parsed, parsed.content_from(data))
    return out


def exited(process, timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def raw_exchange(path, data: bytes, *, shut: bool = True) -> tuple[dict, bytes]:
    """Send DATA as is; return the first reply header and whatever followed until EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        # The service closes after a refusal; bytes of ours it never read make the kernel
        # report ECONNRESET once its reply has been read.
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    line, _, rest = received.partition(b"\n")
    return json.loads(line), rest


@pytest.fixture
def service(mailsys):
    mailsys.write_main_cf("max_idle = 30s\n")
    process = mailsys.start("cleanup", sockets=("cleanup",))
    return mailsys, process, str(mailsys.socket_path("cleanup"))


def test_a_forwarded_message_is_queued_as_is_and_logged_with_the_caller(service):
    mailsys, _process, path = service
    content = b"Received: from agent\nSubject: fwd\n\nbody\n"
    queue_id = submit(path, forward("bob", attributes={"orig_queue_id": "4jZAAAAAAAzB"}), content)
    parsed, queued = incoming(mailsys)[queue_id]
    assert parsed.envelope.sender == "alice@example.org"
    assert [r.address for r in parsed.envelope.recipients] == [f"bob@{HOST}"]
    assert queued.startswith(b"Received: from agent\n")  # cleanup adds no Received: to a forward
    assert f".{queue_id}@{HOST}>".encode() in queued  # but the missing Message-Id:
    log = mailsys.log("cleanup")
    assert re.search(
        rf"sdmail/cleanup\[\d+\]: {queue_id}: origin=forward, uid={os.geteuid()}, pid=\d+, "
        rf"orig_queue_id=4jZAAAAAAAzB\n",
        log,
    )
    assert f"{queue_id}: message-id=<" in log


def test_a_notice_with_the_null_sender_and_dsn_fields(service):
    mailsys, _process, path = service
    req = SubmitRequest(
        "",
        (SubmitRecipient("joe@example.org", "rfc822;joe@example.org", Notify.NEVER.value),),
        origin="notice",
        ret="HDRS",
        envid="ENV",
    )
    queue_id = submit(path, req, b"Subject: Undelivered Mail Returned to Sender\n\nsorry\n")
    parsed, content = incoming(mailsys)[queue_id]
    envelope = parsed.envelope
    assert envelope.sender == ""
    assert envelope.recipients[0].notify == Notify.NEVER
    assert envelope.recipients[0].orcpt == "rfc822;joe@example.org"
    assert (envelope.ret, envelope.envid) == ("HDRS", "ENV")
    assert content.startswith(f"Received: by {HOST} (sdmail)\n\tid {queue_id};".encode())
    assert b"\nFrom: MAILER-DAEMON\n" in content


def test_qmgr_is_woken_after_each_message(service):
    mailsys, _process, path = service
    qmgr = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qmgr.bind(str(mailsys.socket_path("qmgr")))
    qmgr.listen(8)
    qmgr.settimeout(10)
    submit(path, forward("bob"), b"Subject: 1\n\n")
    conn, _ = qmgr.accept()
    with conn, qmgr:
        assert conn.recv(8) == b"W"


@pytest.mark.parametrize("origin", ["local", "smtp", "bogus", ""])
def test_origins_other_than_forward_and_notice_are_refused(service, origin):
    mailsys, _process, path = service
    with pytest.raises(SubmitError) as caught:
        submit(path, forward("bob", origin=origin), b"Subject: x\n\n")
    assert (caught.value.code, caught.value.dsn) == (554, "5.7.1")
    assert f"origin {origin!r} is not served here" in caught.value.text
    assert incoming(mailsys) == {}


def test_cleanups_refusals_reach_the_client(service):
    mailsys, _process, path = service
    with pytest.raises(SubmitError) as caught:
        submit(path, forward(), b"Subject: nobody\n\n")
    assert str(caught.value) == "550 5.1.0 Error: no recipients specified"
    hops = b"".join(b"Received: from hop%d\n" % n for n in range(60)) + b"\nbody\n"
    with pytest.raises(SubmitError) as caught:
        submit(path, forward("bob"), hops)
    assert str(caught.value) == "554 5.4.0 Error: too many hops"
    assert incoming(mailsys) == {}
    assert "warning: uid=0 pid=" in mailsys.log("cleanup")


def test_a_message_over_the_size_limit_is_refused_and_the_connection_stays_usable(mailsys):
    mailsys.write_main_cf("message_size_limit = 10000\n")
    mailsys.start("cleanup", sockets=("cleanup",))
    path = mailsys.socket_path("cleanup")
    big = encode_frame(forward("bob").to_header(), b"x" * 50_000)
    small = encode_frame(forward("bob").to_header(), b"Subject: small\n\nok\n")
    first, rest = raw_exchange(path, big + small)
    assert (first["status"], first["code"], first["dsn"]) == ("error", 552, "5.3.4")
    second = json.loads(rest.partition(b"\n")[0])
    assert second["status"] == "ok"
    assert list(incoming(mailsys)) == [second["queue_id"]]


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not json\n",
        b'{"v":1,"op":"submit","recipients":7}\n',
        b'{"v":1,"op":"reply"}\n',
        b'{"v":2,"op":"submit"}\n',
        b'{"v":1,"op":"submit","sender":"a\\r\\nX","recipients":[{"address":"b"}],"origin":"forward"}\n',
        b'{"v":1,"op":"submit","sender":"a","recipients":[{"address":"b","notify":99}],"origin":"forward"}\n',
    ],
)
def test_a_malformed_frame_is_refused_and_the_service_goes_on(service, garbage):
    mailsys, process, path = service
    reply, _rest = raw_exchange(path, garbage)
    assert (reply["status"], reply["code"], reply["dsn"]) == ("error", 500, "5.5.2")
    assert process.poll() is None
    assert submit(path, forward("bob"), b"Subject: after\n\n") in incoming(mailsys)
    assert "Traceback" not in mailsys.log("cleanup")


def test_a_frame_cut_short_or_a_silent_client_does_not_hurt(service):
    mailsys, process, path = service
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b'{"v":%d,"op":"submit","payload":1000}\nonly a bit' % PROTOCOL_VERSION)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(path)  # holds a connection open without a word
    try:
        assert submit(path, forward("bob"), b"Subject: still\n\n") in incoming(mailsys)
    finally:
        silent.close()
    mailsys.wait_for(lambda: "payload cut short" in mailsys.log("cleanup"), "the warning")
    assert process.poll() is None


def test_a_silent_client_is_dropped_after_ipc_timeout(mailsys):
    mailsys.write_main_cf("ipc_timeout = 1s\n")
    mailsys.start("cleanup", sockets=("cleanup",))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(mailsys.socket_path("cleanup")))
        assert sock.recv(100) == b""  # closed by the service
    assert "timeout after 1s" in mailsys.log("cleanup")


def test_fifty_concurrent_clients_are_all_queued(service):
    mailsys, _process, path = service

    def one(n: int) -> str:
        return submit(path, forward(f"user{n}"), f"Subject: {n}\n\nbody\n".encode())

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(one, range(50)))
    assert len(set(ids)) == 50
    assert sorted(incoming(mailsys)) == sorted(ids)


def test_the_caller_is_known_from_the_kernel_not_the_request(mailsys, make_user):
    user = make_user()
    mailsys.start("cleanup", sockets=("cleanup",), mode=0o666)
    script = (
        "import sys\n"
        "from sdmail.core.mail_stream import SubmitRecipient, SubmitRequest, submit\n"
        "req = SubmitRequest(None, (SubmitRecipient('bob'),), origin='forward')\n"
        "print(submit(sys.argv[1], req, b'Subject: from a user\\n\\nhi\\n'))\n"
    )
    done = subprocess.run(
        [
            "runuser",
            "-u",
            user.pw_name,
            "--",
            mailsys.user_python,
            "-c",
            script,
            str(mailsys.socket_path("cleanup")),
        ],
        capture_output=True,
        env=mailsys.env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    queue_id = done.stdout.decode().strip()
    parsed, _content = incoming(mailsys)[queue_id]
    assert parsed.envelope.sender == f"{user.pw_name}@{HOST}"
    assert f"{queue_id}: origin=forward, uid={user.pw_uid}, pid=" in mailsys.log("cleanup")


def test_the_service_exits_after_max_idle_without_a_client(mailsys):
    mailsys.write_main_cf("max_idle = 2s\n")
    began = time.monotonic()
    process = mailsys.start("cleanup", sockets=("cleanup",))
    assert exited(process, 15) == 0
    assert 1.9 <= time.monotonic() - began < 10


def test_after_max_use_connections_the_service_exits_once_none_is_open(mailsys):
    mailsys.write_main_cf("max_idle = 60s\nmax_use = 3\n")
    process = mailsys.start("cleanup", sockets=("cleanup",))
    path = str(mailsys.socket_path("cleanup"))
    for n in range(3):
        submit(path, forward("bob"), f"Subject: {n}\n\n".encode())
    assert exited(process, 10) == 0
    assert len(incoming(mailsys)) == 3


def test_sigterm_lets_the_service_exit_with_a_client_connected(service):
    _mailsys, process, path = service
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting.connect(path)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    try:
        assert exited(process, 10) == 0
    finally:
        waiting.close()


def test_without_its_socket_the_service_exits_with_ex_config(mailsys):
    process = mailsys.start("cleanup")
    assert exited(process, 10) == 78
    assert 'no listening socket named "cleanup"' in mailsys.log("cleanup")


def test_sighup_makes_the_next_message_use_the_new_main_cf(service):
    mailsys, process, path = service
    first = submit(path, forward("bob"), b"Subject: 1\n\n")
    mailsys.write_main_cf("myhostname = reloaded.example.test\n")
    process.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload -- configuration" in mailsys.log("cleanup"), "the reload")
    second = submit(path, forward("bob"), b"Subject: 2\n\n")
    queued = incoming(mailsys)
    assert queued[first][0].envelope.recipients[0].address == f"bob@{HOST}"
    assert queued[second][0].envelope.recipients[0].address == "bob@reloaded.example.test"


def test_a_client_thread_storm_of_garbage_and_good_frames_loses_no_good_message(service):
    mailsys, process, path = service
    good: list[str] = []

    def bad(n: int) -> None:
        raw_exchange(path, os.urandom(64) + b"\n")

    threads = [threading.Thread(target=bad, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for n in range(20):
        good.append(submit(path, forward("bob"), f"Subject: {n}\n\n".encode()))
    for thread in threads:
        thread.join()
    assert process.poll() is None
    assert sorted(incoming(mailsys)) == sorted(good)
