"""qmgr under load: 200 messages through sendmail, postdrop, pickup, cleanup, qmgr and local.

Under a steady stream every arrival in incoming/ asks qmgr for another scan, so a
file is listed again while a feeder is still taking it.  Each message must be
taken once: no `cannot take` error, and no file put back to rest for a minute.
"""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import time

MESSAGES = 200
SUBMITTERS = 4
STALL = 60.0  # what a message put back after a failed take waits in incoming/


def test_two_hundred_messages_reach_a_maildir_each_taken_once(mailsys) -> None:
    mailsys.write_main_cf("max_use = 10000\n")
    maildir = mailsys.root / "Maildir"
    maildir.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(maildir, nobody.pw_uid, nobody.pw_gid)  # an alias's Maildir is default_privs'
    (mailsys.config_dir / "aliases").write_text(f"load: {maildir}/\n")
    assert mailsys.run("postalias", f"hash:{mailsys.config_dir}/aliases").returncode == 0
    mailsys.start("postdrop", sockets=("postdrop",))
    mailsys.start("local", sockets=("local",), mode=0o600)
    mailsys.start("qmgr", sockets=("qmgr",))
    mailsys.start("pickup")

    def send(number: int) -> int:
        message = f"Subject: load {number}\n\nmessage {number}\n".encode()
        return mailsys.run("sendmail", "load", input=message).returncode

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
        exits = list(pool.map(send, range(MESSAGES)))
    assert exits == [0] * MESSAGES
    mailsys.wait_for(
        lambda: len(os.listdir(maildir / "new")) == MESSAGES,
        f"{MESSAGES} messages in the Maildir",
        timeout=STALL - (time.monotonic() - started) - 5,
    )
    mailsys.wait_for(
        lambda: not mailsys.queue_files("maildrop", "incoming", "active", "deferred"),
        "an empty queue",
    )
    mailsys.wait_for(  # qmgr logs `removed` just after the file went
        lambda: mailsys.log("qmgr").count(": removed\n") == MESSAGES, "every removed line"
    )
    qmgr_log = mailsys.log("qmgr")
    assert "cannot take" not in qmgr_log
    assert ": error: " not in qmgr_log
    assert qmgr_log.count(" (queue active)\n") == MESSAGES
