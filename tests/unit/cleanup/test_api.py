"""cleanup as a library: what reaches the queue, and what is refused (cleanup/api.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from sdmail.cleanup.api import Accepted, Cleanup, CleanupError, Origin, Submission
from sdmail.core import qfile
from sdmail.core.config import load_config
from sdmail.core.records import ClientInfo, Recipient, RewriteContext
from sdmail.core.spool import Spool

HOST = "mail.example.com"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


class Gate:
    """A Cleanup on a queue in a temporary directory, with helpers to read what it wrote."""

    def __init__(self, root: Path, main_cf: str = "") -> None:
        self.root = root
        (root / "queue").mkdir(exist_ok=True)
        (root / "main.cf").write_text(
            f"myhostname = {HOST}\nqueue_directory = {root / 'queue'}\n" + main_cf
        )
        self.spool = Spool(root / "queue")
        self.spool.create_directories()
        self.cleanup = Cleanup(load_config(root), self.spool)

    def submit(self, content: bytes, *recipients: str, sender: str = "joe", **kw) -> Accepted:
        rcpts = tuple(Recipient(r) for r in recipients)
        kw.setdefault("origin", Origin.LOCAL)
        return self.cleanup.submit(Submission(sender, rcpts, **kw), content)

    def read(self, queue_id: str, queue: str = "incoming") -> tuple[qfile.QueueFile, bytes]:
        with self.spool.open(queue, queue_id) as handle:
            data = os.pread(handle.fd, 1 << 24, 0)
        parsed = qfile.decode(data)
        return parsed, parsed.content_from(data)

    def queued(self) -> list[str]:
        return [name for q in ("incoming", "hold") for name in os.listdir(self.root / "queue" / q)]


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path)


def submit_at(
    gate: Gate, content: bytes, *recipients: str, **kw
) -> tuple[qfile.QueueFile, bytes, str]:
    accepted = gate.submit(content, *recipients, arrival=1764021061.0, **kw)
    parsed, body = gate.read(accepted.queue_id)
    return parsed, body, accepted.queue_id


def test_local_submission_gets_received_message_id_date_and_from(gate):
    parsed, content, qid = submit_at(
        gate,
        b"Subject: hi\nBcc: secret@example.org\nReturn-Path: <forged@x>\n\nhello\n",
        "bob@example.org",
        uid=1000,
        full_name="Joe User",
    )
    stamp = content.split(b"Message-Id: <")[1][:14].decode()
    assert (
        content
        == (
            f"Received: by {HOST} (sdmail, from userid 1000)\n"
            f"\tid {qid}; Mon, 24 Nov 2025 21:51:01 +0000 (UTC)\n"
            "Subject: hi\n"
            f"Message-Id: <{stamp}.{qid}@{HOST}>\n"
            "Date: Mon, 24 Nov 2025 21:51:01 +0000 (UTC)\n"
            f"From: Joe User <joe@{HOST}>\n"
            "\nhello\n"
        ).encode()
    )
    envelope = parsed.envelope
    assert envelope.sender == f"joe@{HOST}"
    assert [r.address for r in envelope.recipients] == ["bob@example.org"]
    assert envelope.client.rewrite_context is RewriteContext.LOCAL
    assert envelope.arrival_sec == 1764021061


def test_message_id_is_logged(gate, caplog):
    caplog.set_level(logging.INFO)
    accepted = gate.submit(b"Message-ID: <given@x>\n\nbody\n", "bob@example.org")
    assert logged(caplog, accepted.queue_id) == ["message-id=<given@x>"]
    assert accepted.message_id == "<given@x>"


def logged(caplog, queue_id: str) -> list[str]:
    """What was logged about QUEUE_ID (the handler puts `QUEUEID: ` before each)."""
    return [r.getMessage() for r in caplog.records if getattr(r, "queue_id", None) == queue_id]


def remote(helo="client.example", address="192.0.2.1", name="client.example") -> ClientInfo:
    return ClientInfo(
        log_client_name=name,
        log_client_address=address,
        log_helo_name=helo,
        log_protocol_name="ESMTP",
    )


def test_remote_smtp_client_gets_smtpd_received_and_no_added_headers(gate, caplog):
    caplog.set_level(logging.INFO)
    parsed, content, qid = submit_at(
        gate,
        b"Subject: x\r\n\r\nbody\r\n",
        "bob@example.org",
        sender="alice@remote.example",
        origin=Origin.SMTP,
        client=remote(),
    )
    assert (
        content
        == (
            "Received: from client.example (client.example [192.0.2.1])\n"
            f"\tby {HOST} (sdmail) with ESMTP id {qid}\n"
            "\tfor <bob@example.org>; Mon, 24 Nov 2025 21:51:01 +0000 (UTC)\n"
            "Subject: x\n\nbody\n"
        ).encode()
    )
    assert parsed.envelope.client.rewrite_context is RewriteContext.REMOTE
    assert logged(caplog, qid) == ["message-id=<>"]


def test_smtpds_received_comments_reach_the_queue_file(gate):
    _, content, qid = submit_at(
        gate,
        b"Subject: x\n\nbody\n",
        "bob@example.org",
        sender="alice@remote.example",
        origin=Origin.SMTP,
        client=remote(),
        received_comments=("(Authenticated sender: alice)",),
    )
    assert content.startswith(
        (
            "Received: from client.example (client.example [192.0.2.1])\n"
            "\t(Authenticated sender: alice)\n"
            f"\tby {HOST} (sdmail) with ESMTP id {qid}\n"
        ).encode()
    )


def test_client_on_a_local_interface_is_local(gate):
    _, content, _ = submit_at(
        gate,
        b"Subject: x\n\nbody\n",
        "bob@example.org",
        origin=Origin.SMTP,
        client=remote(address="127.0.0.1", name="localhost"),
    )
    assert b"\nMessage-Id: <" in content and b"\nFrom: joe@mail.example.com\n" in content


def test_always_add_missing_headers(tmp_path):
    gate = Gate(tmp_path, "always_add_missing_headers = yes\n")
    _, content, _ = submit_at(
        gate, b"\nbody\n", "bob@example.org", origin=Origin.SMTP, client=remote()
    )
    assert b"\nMessage-Id: <" in content and b"\nDate: " in content


def test_sendmail_t_takes_recipients_from_headers_and_drops_bcc(gate):
    parsed, content, _ = submit_at(
        gate,
        b"To: Ann <ann@example.org>, bob\nCc: carol@example.org\nBcc: dave@example.org\n\nx\n",
        extract_recipients=True,
    )
    assert [r.address for r in parsed.envelope.recipients] == [
        "ann@example.org",
        f"bob@{HOST}",
        "carol@example.org",
        "dave@example.org",
    ]
    assert b"dave@" not in content
    assert f"To: Ann <ann@example.org>, bob@{HOST}\n".encode() in content


def test_resent_headers_take_over_for_sendmail_t(gate):
    parsed, content, _ = submit_at(
        gate, b"To: old@example.org\nResent-To: new@example.org\n\nx\n", extract_recipients=True
    )
    assert [r.address for r in parsed.envelope.recipients] == ["new@example.org"]
    assert b"\nResent-Message-Id: <" in content and b"\nResent-From: " in content


def test_no_recipients_is_refused(gate):
    with pytest.raises(CleanupError) as error:
        gate.submit(b"Subject: x\n\nbody\n", extract_recipients=True)
    assert (error.value.code, error.value.status.dsn) == (550, "5.1.0")
    assert gate.queued() == []


def test_message_size_limit(tmp_path):
    gate = Gate(tmp_path, "message_size_limit = 1000\n")
    gate.submit(b"Subject: small\n\n" + b"x" * 500 + b"\n", "bob@example.org")
    with pytest.raises(CleanupError) as error:
        gate.submit(b"Subject: big\n\n" + b"x" * 2000 + b"\n", "bob@example.org")
    assert str(error.value) == "552 5.3.4 Error: message file too big"
    assert len(gate.queued()) == 1


def test_too_many_hops(tmp_path):
    gate = Gate(tmp_path, "hopcount_limit = 3\n")
    with pytest.raises(CleanupError) as error:
        gate.submit(b"Received: a\nReceived: b\nReceived: c\n\nloop\n", "bob@example.org")
    assert str(error.value) == "554 5.4.0 Error: too many hops"
    assert gate.queued() == []


def test_canonical_maps_for_sender_recipients_and_headers(tmp_path):
    gate = Gate(
        tmp_path,
        "sender_canonical_maps = inline:{ joe=joe.user@example.com }\n"
        "recipient_canonical_maps = inline:{ @old.example=@new.example }\n"
        "canonical_maps = inline:{ joe.user@example.com=j@example.com }\n",
    )
    parsed, content, _ = submit_at(
        gate, b"From: joe\nTo: amy@old.example\n\nx\n", "amy@old.example"
    )
    assert parsed.envelope.sender == "j@example.com"
    (recipient,) = parsed.envelope.recipients
    assert (recipient.address, recipient.orig_address) == ("amy@new.example", "amy@old.example")
    assert b"From: j@example.com\n" in content and b"To: amy@new.example\n" in content


def test_virtual_alias_expansion_recursion_self_reference_and_duplicates(tmp_path):
    gate = Gate(
        tmp_path,
        "virtual_alias_maps = inline:{ {team@example.com = a@example.com, list@example.com},"
        " {list@example.com = b@example.org, a@example.com, list@example.com} }\n",
    )
    parsed, _, _ = submit_at(gate, b"\nx\n", "team@example.com", "b@example.org")
    assert [r.address for r in parsed.envelope.recipients] == [
        "a@example.com",
        "b@example.org",
        "list@example.com",
    ]
    assert {r.orig_address for r in parsed.envelope.recipients[:2]} == {"team@example.com"}


def test_virtual_alias_loop_is_a_temporary_failure(tmp_path):
    gate = Gate(
        tmp_path,
        "virtual_alias_maps = inline:{ a@x.example=b@x.example, b@x.example=a@x.example }\n"
        "virtual_alias_recursion_limit = 20\n",
    )
    with pytest.raises(CleanupError) as error:
        gate.submit(b"\nx\n", "a@x.example")
    assert str(error.value) == "451 4.6.0 Alias expansion error"
    assert error.value.temporary
    assert gate.queued() == []


def test_virtual_alias_expansion_limit(tmp_path):
    many = ",".join(f"u{i}@y.example" for i in range(30))
    gate = Gate(
        tmp_path,
        f"virtual_alias_maps = inline:{{ {{big@x.example = {many}}} }}\n"
        "virtual_alias_expansion_limit = 10\n",
    )
    with pytest.raises(CleanupError, match=r"4\.6\.0"):
        gate.submit(b"\nx\n", "big@x.example")


def test_lookup_table_that_cannot_be_read_defers(tmp_path):
    gate = Gate(
        tmp_path, f"virtual_alias_domains =\nvirtual_alias_maps = hash:{tmp_path}/missing\n"
    )
    with pytest.raises(CleanupError) as error:
        gate.submit(b"\nx\n", "a@x.example")
    assert error.value.code == 451
    assert gate.queued() == []


def test_duplicate_recipients_are_dropped(gate):
    parsed, _, _ = submit_at(
        gate, b"\nx\n", "bob@example.org", "BOB@example.org", "bob@example.org"
    )
    assert len(parsed.envelope.recipients) == 1


def test_delay_warning_time_is_scheduled_for_non_null_senders(tmp_path):
    gate = Gate(tmp_path, "delay_warning_time = 4h\n")
    parsed, _, _ = submit_at(gate, b"\nx\n", "bob@example.org")
    assert parsed.envelope.delay_warning_time == 1764021061 + 4 * 3600
    parsed, _, _ = submit_at(gate, b"\nx\n", "bob@example.org", sender="")
    assert parsed.envelope.delay_warning_time == 0


def test_null_sender_gets_mailer_daemon_from(gate):
    parsed, content, _ = submit_at(
        gate, b"\nbounce\n", "bob@example.org", sender="", origin=Origin.NOTICE
    )
    assert parsed.envelope.sender == ""
    assert b"\nFrom: MAILER-DAEMON\n" in content
    assert content.startswith(f"Received: by {HOST} (sdmail)\n\tid ".encode())


def test_forwarded_mail_keeps_the_agents_received(gate):
    _, content, _ = submit_at(
        gate,
        b"Received: by h (sdmail)\n\tid OLD; date\nMessage-Id: <m@x>\n\nfwd\n",
        "bob@example.org",
        origin=Origin.FORWARD,
    )
    assert content.startswith(b"Received: by h (sdmail)\n\tid OLD; date\n")


def test_hold_lands_in_hold(gate):
    accepted = gate.submit(b"\nx\n", "bob@example.org", hold=True)
    gate.read(accepted.queue_id, "hold")


@pytest.mark.parametrize(
    ("content", "stored_body"),
    [
        (b"no header here\nsecond line\n", b"no header here\nsecond line\n"),
        (b"Subject: a\nnot a header\n", b"not a header\n"),
        (b"Subject: bare\nlf only\n\nbody\r\nmixed\n", b"not used"),
        (b"Subject: nul\n\nnul\x00byte\n", b"nul\x00byte\n"),
        (b"Subject: caf\xc3\xa9 \xff\n\nx\n", b"x\n"),
        (b"Subject: long\n\n" + b"L" * 5000 + b"\n", b"L" * 5000 + b"\n"),
        (b"", b""),
    ],
    ids=[
        "no-separator",
        "header-then-text",
        "bare-lf",
        "nul",
        "8bit-header",
        "5000-octets",
        "empty",
    ],
)
def test_malformed_messages_are_queued_repaired(gate, content, stored_body):
    _, stored, _ = submit_at(gate, content, "bob@example.org")
    assert b"\r" not in stored
    head, _, body = stored.partition(b"\n\n")
    if stored_body != b"not used":
        assert body == stored_body
    assert head.startswith(b"Received: by ")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_is_a_temporary_error_and_leaves_nothing(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        gate = Gate(small)
        with pytest.raises(CleanupError) as error:
            gate.submit(b"Subject: big\n\n" + b"x" * 200_000 + b"\n", "bob@example.org")
        assert str(error.value) == "451 4.3.0 Error: queue file write error"
        assert gate.queued() == []
        assert os.listdir(small / "queue" / "incoming") == []
        gate.submit(b"Subject: small\n\nfits\n", "bob@example.org")
        gate.spool.close()
    finally:
        subprocess.run(["umount", str(small)], check=True)
