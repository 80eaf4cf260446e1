"""The postdrop service as systemd runs it: its socket, its replies, what it leaves in maildrop/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sdmail.core.mail_stream import SubmitError, SubmitRecipient, SubmitRequest, submit
from sdmail.core.qfile import QueueFile, iter_content, read_envelope
from sdmail.core.records import QueueName
from sdmail.core.spool import Spool

if TYPE_CHECKING:  # the fixture's class; conftest is not importable by name
    from conftest import MailSystem


def maildrop(mailsys: MailSystem) -> list[tuple[QueueFile, bytes]]:
    """Every file in maildrop/, decoded: (queue file, content)."""
    found = []
    with Spool(mailsys.queue_dir) as spool:
        for queue_id in spool.list_queue(QueueName.MAILDROP):
            with spool.open(QueueName.MAILDROP, queue_id) as handle:
                queue_file = read_envelope(handle.fd)
                content = b"".join(iter_content(handle.fd, queue_file))
            found.append((queue_file, content))
    return found


def start_postdrop(mailsys: MailSystem) -> subprocess.Popen[bytes]:
    process = mailsys.start("postdrop", sockets=("postdrop",))
    return process


def send(mailsys: MailSystem, req: SubmitRequest, content: bytes) -> str:
    return submit(str(mailsys.socket_path("postdrop")), req, content, timeout=30)


def to_bob(**fields: object) -> SubmitRequest:
    return SubmitRequest(sender=None, recipients=(SubmitRecipient("bob@example.org"),), **fields)  # type: ignore[arg-type]


def test_a_message_becomes_one_maildrop_file_named_by_its_queue_id(mailsys: MailSystem) -> None:
    start_postdrop(mailsys)
    content = b"Subject: hello\n\nbody with \x00 and \xff\n"
    queue_id = send(mailsys, to_bob(), content)
    assert mailsys.queue_files() == [f"maildrop/{queue_id}"]
    [(queue_file, stored)] = maildrop(mailsys)
    assert stored == content
    envelope = queue_file.envelope
    assert envelope.sender == "root"
    assert [r.address for r in envelope.recipients] == ["bob@example.org"]
    assert envelope.attribute("uid") == str(os.getuid())
    path = mailsys.queue_dir / "maildrop" / queue_id
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_refusal_reaches_the_client_and_leaves_nothing(mailsys: MailSystem) -> None:
    start_postdrop(mailsys)
    with pytest.raises(SubmitError) as caught:
        send(mailsys, SubmitRequest(sender=None), b"no recipients\n")
    assert (caught.value.code, caught.value.dsn) == (550, "5.1.0")
    assert mailsys.queue_files() == []
    assert "reject: 550 5.1.0" in mailsys.log("postdrop")


def test_message_over_the_size_limit_is_read_and_refused(mailsys: MailSystem) -> None:
    mailsys.write_main_cf("message_size_limit = 1000\n")
    start_postdrop(mailsys)
    with pytest.raises(SubmitError) as caught:
        send(mailsys, to_bob(), b"x" * 200_000)
    assert (caught.value.code, caught.value.dsn, caught.value.text) == (
        552,
        "5.3.4",
        "Error: message file too big",
    )
    assert mailsys.queue_files() == []
    assert send(mailsys, to_bob(), b"x" * 900)  # and the service goes on


def test_garbled_request_gets_a_5xx_reply_and_the_service_goes_on(mailsys: MailSystem) -> None:
    start_postdrop(mailsys)
    mailsys.wait_for(lambda: mailsys.socket_path("postdrop").exists(), "the socket")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(mailsys.socket_path("postdrop")))
        sock.sendall(b'{"v":1,"op":"submit","recipients":"nonsense"}\n')
        reply = json.loads(sock.makefile("rb").readline())
    assert (reply["status"], reply["code"]) == ("error", 500)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(mailsys.socket_path("postdrop")))
        sock.sendall(b'{"v":1,"op":"submit","payload":100}\nshort')
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        reply = json.loads(sock.makefile("rb").readline())
    assert (reply["status"], reply["code"]) == ("error", 500)
    assert send(mailsys, to_bob(), b"still here\n")
    assert "payload cut short" in mailsys.log("postdrop")


def test_concurrent_submissions_all_land_in_maildrop(mailsys: MailSystem) -> None:
    start_postdrop(mailsys)
    ids: list[str] = []
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            ids.append(send(mailsys, to_bob(), f"Subject: {n}\n\n{n}\n".encode()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 50
    assert sorted(mailsys.queue_files()) == sorted(f"maildrop/{i}" for i in ids)
    bodies = sorted(content for _, content in maildrop(mailsys))
    assert bodies == sorted(f"Subject: {n}\n\n{n}\n".encode() for n in range(50))


def test_reload_applies_a_new_authorized_submit_users(mailsys: MailSystem) -> None:
    process = start_postdrop(mailsys)
    assert send(mailsys, to_bob(), b"before\n")
    mailsys.write_main_cf("authorized_submit_users = !root, static:anyone\n")
    process.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload" in mailsys.log("postdrop"), "the reload")
    with pytest.raises(SubmitError) as caught:
        send(mailsys, to_bob(), b"after\n")
    assert caught.value.text == "User root(0) is not allowed to submit mail"


def test_exits_after_max_idle_without_connections(mailsys: MailSystem) -> None:
    mailsys.write_main_cf("max_idle = 1s\n")
    process = start_postdrop(mailsys)
    assert send(mailsys, to_bob(), b"one\n")
    assert process.wait(timeout=20) == 0


def test_without_its_socket_it_exits_78_naming_the_problem(mailsys: MailSystem) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sdmail.postdrop", "-c", str(mailsys.config_dir)],
        env=mailsys.env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert b"no listening socket named postdrop" in result.stderr


def test_unreadable_table_at_start_exits_78(mailsys: MailSystem) -> None:
    mailsys.write_main_cf(f"local_login_sender_maps = hash:{mailsys.root}/missing\n")
    process = start_postdrop(mailsys)
    assert process.wait(timeout=30) == 78
    assert "missing" in mailsys.log("postdrop")


def test_missing_maildrop_directory_is_a_temporary_refusal(mailsys: MailSystem) -> None:
    start_postdrop(mailsys)
    (mailsys.queue_dir / "maildrop").rmdir()
    with pytest.raises(SubmitError) as caught:
        send(mailsys, to_bob(), b"x\n")
    assert (caught.value.code, caught.value.dsn) == (451, "4.3.0")
    assert not Path(mailsys.queue_dir / "maildrop").exists()
