"""The virtual delivery agent as a process: the test plays qmgr.

Each test writes main.cf's virtual_* settings with a table built by the real postmap,
starts `python3 -m sdmail.virtual` with its socket passed the systemd way, puts a queue
file into active/, sends a DeliveryRequest, and looks at what an administrator would see:
the mailbox files and their owner, the done marks, the log lines.
"""

from __future__ import annotations

import os
import re
import time
from email import message_from_bytes
from pathlib import Path

from sdmail.core import ipc, qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool

DEBIAN_PYTHON = "/usr/bin/python3"  # the interpreter the package runs on
DOMAIN = "vdomain.test"
CONTENT = b"Subject: virtual mailbox\nFrom: ann@example.org\n\nFrom me\nbody\n"


def setup_virtual(mailsys, owner, entries: list[str], extra: str = "") -> Path:
    base = mailsys.root / "vmail"
    base.mkdir(exist_ok=True)
    os.chown(base, owner.pw_uid, owner.pw_gid)
    table = mailsys.config_dir / "vmailbox"
    table.write_text("".join(f"{line}\n" for line in entries))
    built = mailsys.run("postmap", str(table))
    assert built.returncode == 0, built.stderr
    mailsys.write_main_cf(
        f"virtual_mailbox_domains = {DOMAIN}\n"
        f"virtual_mailbox_maps = hash:{table}\n"
        f"virtual_mailbox_base = {base}\n"
        f"virtual_uid_maps = static:{owner.pw_uid}\n"
        f"virtual_gid_maps = static:{owner.pw_gid}\n" + extra
    )
    return base


def deliver(mailsys, *recipients: str, content: bytes = CONTENT) -> tuple[str, list[tuple]]:
    envelope = Envelope(
        sender="ann@example.org",
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
        transport="virtual",
        nexthop=DOMAIN,
        sender=envelope.sender,
        recipients=tuple(
            RequestRecipient(r.address, r.offset or 0, r.orig_address) for r in stored.recipients
        ),
        arrival=float(envelope.arrival_sec),
        queue_active_at=time.time(),
    )
    path = mailsys.socket_path("virtual")
    frame = ipc.request(str(path), request.to_header(), timeout=60)
    result = DeliveryResult.from_header(frame.header)
    return created.queue_id, [(r.status, r.dsn, r.text) for r in result.recipients]


def done_marks(mailsys, queue_id: str) -> list[bool]:
    data = (mailsys.queue_dir / "active" / queue_id).read_bytes()
    return [r.done for r in qfile.decode(data).envelope.recipients]


def log_has(mailsys, pattern: str) -> bool:
    return any(re.search(pattern, line) for line in mailsys.log("virtual").splitlines())


def test_maildir_delivery_lands_under_the_base_owned_by_the_mapped_uid(mailsys, make_user):
    vmail = make_user()
    base = setup_virtual(mailsys, vmail, [f"someone@{DOMAIN}\t{DOMAIN}/someone/"])
    mailsys.start("virtual", sockets=("virtual",))
    queue_id, results = deliver(mailsys, f"someone@{DOMAIN}")
    assert results == [("sent", "2.0.0", "delivered to maildir")]
    assert done_marks(mailsys, queue_id) == [True]
    (written,) = (base / DOMAIN / "someone" / "new").iterdir()
    assert written.stat().st_uid == vmail.pw_uid
    message = message_from_bytes(written.read_bytes())
    assert message["Subject"] == "virtual mailbox"
    assert message["Delivered-To"] == f"someone@{DOMAIN}"
    assert message["Return-Path"] == "<ann@example.org>"
    assert log_has(
        mailsys,
        rf"sdmail/virtual\[\d+\]: {queue_id}: to=<someone@{DOMAIN}>, relay=virtual, "
        r"delay=[\d.]+, delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=2\.0\.0, "
        r"status=sent \(delivered to maildir\)",
    )


def test_mbox_delivery_and_a_catch_all_entry(mailsys, make_user):
    vmail = make_user()
    base = setup_virtual(mailsys, vmail, [f"@{DOMAIN}\tcatchall"])
    mailsys.start("virtual", sockets=("virtual",), interpreter=DEBIAN_PYTHON)
    _, results = deliver(mailsys, f"anyone@{DOMAIN}", f"other@{DOMAIN}")
    assert results == [("sent", "2.0.0", "delivered to mailbox")] * 2
    text = (base / "catchall").read_bytes()
    assert len(re.findall(rb"^From ann@example\.org  ", text, re.MULTILINE)) == 2
    assert b"\n>From me\n" in text
    assert (base / "catchall").stat().st_uid == vmail.pw_uid


def test_an_unlisted_recipient_bounces_and_a_listed_one_is_delivered(mailsys, make_user):
    vmail = make_user()
    setup_virtual(mailsys, vmail, [f"someone@{DOMAIN}\t{DOMAIN}/someone/"])
    mailsys.start("virtual", sockets=("virtual",))
    queue_id, results = deliver(mailsys, f"nobody-here@{DOMAIN}", f"someone@{DOMAIN}")
    assert results == [
        ("bounced", "5.1.1", f'unknown user: "nobody-here@{DOMAIN}"'),
        ("sent", "2.0.0", "delivered to maildir"),
    ]
    assert done_marks(mailsys, queue_id) == [True, True]


def test_a_rebuilt_table_is_used_by_the_next_delivery_without_a_restart(mailsys, make_user):
    vmail = make_user()
    base = setup_virtual(mailsys, vmail, [f"someone@{DOMAIN}\t{DOMAIN}/someone/"])
    mailsys.start("virtual", sockets=("virtual",))
    assert deliver(mailsys, f"new@{DOMAIN}")[1][0][1] == "5.1.1"
    table = mailsys.config_dir / "vmailbox"
    table.write_text(f"new@{DOMAIN}\t{DOMAIN}/new/\n")
    assert mailsys.run("postmap", str(table)).returncode == 0
    assert deliver(mailsys, f"new@{DOMAIN}")[1] == [("sent", "2.0.0", "delivered to maildir")]
    assert len(list((base / DOMAIN / "new" / "new").iterdir())) == 1


def test_a_link_planted_below_the_base_is_not_followed(mailsys, make_user):
    vmail = make_user()
    base = setup_virtual(mailsys, vmail, [f"someone@{DOMAIN}\t{DOMAIN}/someone/"])
    target = mailsys.root / "target"
    target.mkdir()
    os.chown(target, vmail.pw_uid, vmail.pw_gid)
    (base / DOMAIN).symlink_to(target)
    mailsys.start("virtual", sockets=("virtual",))
    queue_id, results = deliver(mailsys, f"someone@{DOMAIN}")
    assert results == [("deferred", "4.2.0", f"{base}/{DOMAIN}: is a symbolic link")]
    assert done_marks(mailsys, queue_id) == [False]
    assert list(target.iterdir()) == []


def test_a_base_the_owner_cannot_write_defers(mailsys, make_user):
    vmail = make_user()
    base = setup_virtual(mailsys, vmail, [f"someone@{DOMAIN}\t{DOMAIN}/someone/"])
    os.chown(base, 0, 0)
    mailsys.start("virtual", sockets=("virtual",))
    queue_id, results = deliver(mailsys, f"someone@{DOMAIN}")
    ((status, dsn, text),) = results
    assert (status, dsn) == ("deferred", "4.2.0")
    assert "Permission denied" in text
    assert done_marks(mailsys, queue_id) == [False]


def test_an_unknown_lock_style_stops_the_start_with_ex_config(mailsys, make_user):
    vmail = make_user()
    setup_virtual(mailsys, vmail, [], extra="virtual_mailbox_lock = dotlock, nfs\n")
    process = mailsys.start("virtual", sockets=("virtual",))
    assert process.wait(30) == 78
    assert "virtual_mailbox_lock: unknown mailbox lock style: nfs" in mailsys.log("virtual")


def test_qmgr_routes_a_virtual_domain_to_the_agent_and_the_queue_empties(mailsys, make_user):
    vmail = make_user()
    base = setup_virtual(mailsys, vmail, [f"someone@{DOMAIN}\t{DOMAIN}/someone/"])
    mailsys.start("virtual", sockets=("virtual",), mode=0o600)
    mailsys.start("qmgr", sockets=("qmgr",))
    envelope = Envelope(
        "ann@example.org", (Recipient(f"someone@{DOMAIN}"),), arrival_sec=int(time.time())
    )
    with Spool(mailsys.queue_dir) as spool:
        queue_id = spool.create(QueueName.INCOMING, envelope, CONTENT).queue_id
    new = base / DOMAIN / "someone" / "new"
    mailsys.wait_for(lambda: new.is_dir() and list(new.iterdir()), "the maildir message")
    mailsys.wait_for(
        lambda: not mailsys.queue_files("incoming", "active", "deferred"), "an empty queue"
    )
    # qmgr logs `removed` just after the file went
    mailsys.wait_for(lambda: f"{queue_id}: removed" in mailsys.log("qmgr"), "the removed line")
    assert log_has(mailsys, rf"{queue_id}: to=<someone@{DOMAIN}>, relay=virtual, .*status=sent")
