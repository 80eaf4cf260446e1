"""qmgr with the real local delivery agent: a message in incoming/ ends in a user's mailbox."""

from __future__ import annotations

import time

from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool

HOST = "mail.example.test"


def test_a_message_reaches_a_local_mailbox_and_leaves_the_queue(mailsys, make_user) -> None:
    user = make_user()
    (mailsys.config_dir / "aliases").write_text("")
    mailsys.run("postalias", f"hash:{mailsys.config_dir}/aliases")
    mailsys.start("local", sockets=("local",), mode=0o600)
    mailsys.start("qmgr", sockets=("qmgr",))
    envelope = Envelope(
        f"joe@{HOST}", (Recipient(f"{user.pw_name}@{HOST}"),), arrival_sec=int(time.time())
    )
    with Spool(mailsys.queue_dir) as spool:
        queue_id = spool.create(
            QueueName.INCOMING, envelope, b"Subject: hi\n\nhello there\n"
        ).queue_id
    mbox = mailsys.mail_dir / user.pw_name
    mailsys.wait_for(lambda: mbox.exists() and b"hello there" in mbox.read_bytes(), "the mbox")
    mailsys.wait_for(
        lambda: not mailsys.queue_files("incoming", "active", "deferred"), "an empty queue"
    )
    # qmgr logs `removed` just after the file went
    mailsys.wait_for(lambda: f"{queue_id}: removed" in mailsys.log("qmgr"), "the removed line")
    assert f"{queue_id}: to=<{user.pw_name}@{HOST}>" in mailsys.log("local")
    assert "status=sent" in mailsys.log("local")


def test_mail_to_an_unknown_user_comes_back_to_the_sender_as_a_notice(mailsys, make_user) -> None:
    user = make_user()
    (mailsys.config_dir / "aliases").write_text("")
    mailsys.run("postalias", f"hash:{mailsys.config_dir}/aliases")
    mailsys.start("local", sockets=("local",), mode=0o600)
    mailsys.start("qmgr", sockets=("qmgr",))
    envelope = Envelope(
        f"{user.pw_name}@{HOST}", (Recipient(f"nosuchuser@{HOST}"),), arrival_sec=int(time.time())
    )
    with Spool(mailsys.queue_dir) as spool:
        queue_id = spool.create(
            QueueName.INCOMING, envelope, b"Subject: lost\n\nwhere did it go\n"
        ).queue_id
    mbox = mailsys.mail_dir / user.pw_name
    mailsys.wait_for(lambda: mbox.exists() and b"Status: 5.1.1" in mbox.read_bytes(), "the notice")
    mailsys.wait_for(
        lambda: not mailsys.queue_files("incoming", "active", "deferred"), "an empty queue"
    )
    notice = mbox.read_bytes()
    assert notice.startswith(b"From MAILER-DAEMON ")
    assert b"Return-Path: <>" in notice
    assert b"Subject: Undelivered Mail Returned to Sender" in notice
    assert b"Content-Type: multipart/report; report-type=delivery-status;" in notice
    assert b"Final-Recipient: rfc822; nosuchuser@" in notice
    assert b"where did it go" in notice
    assert f"{queue_id}: sender non-delivery notification: " in mailsys.log("qmgr")
