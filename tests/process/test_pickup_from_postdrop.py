"""pickup takes what the real postdrop writes: sendmail -> postdrop -> maildrop/ -> pickup."""

from __future__ import annotations

import os
import re
import subprocess

from sdmail.core import qfile
from sdmail.core.spool import valid_queue_id

HOST = "mail.example.test"


def incoming(mailsys) -> list[tuple[str, qfile.QueueFile, bytes]]:
    out = []
    for name in sorted(os.listdir(mailsys.queue_dir / "incoming")):
        if not valid_queue_id(name):
            continue  # cleanup at work
        data = (mailsys.queue_dir / "incoming" / name).read_bytes()
        parsed = qfile.decode(data)
        out.append((name, parsed, parsed.content_from(data)))
    return out


def test_a_users_sendmail_t_reaches_incoming_with_their_uid_and_name(mailsys, make_user):
    user = make_user()
    subprocess.run(["usermod", "-c", "Alice Liddell", user.pw_name], check=True)
    mailsys.write_main_cf("max_idle = 2s\n")
    mailsys.start("postdrop", sockets=("postdrop",))
    pickup = mailsys.start("pickup")
    sent = mailsys.run(
        "sendmail",
        "-t",
        input=b"To: bob\nCc: carol@example.org\nSubject: by -t\n\nhello\n",
        user=user.pw_name,
    )
    assert (sent.returncode, sent.stderr) == (0, b"")
    mailsys.wait_for(lambda: incoming(mailsys), "the message in incoming/")
    [(queue_id, parsed, content)] = incoming(mailsys)
    envelope = parsed.envelope
    assert envelope.sender == f"{user.pw_name}@{HOST}"
    assert sorted(r.address for r in envelope.recipients) == [f"bob@{HOST}", "carol@example.org"]
    assert content.startswith(
        f"Received: by {HOST} (sdmail, from userid {user.pw_uid})\n\tid {queue_id}; ".encode()
    )
    assert f"\nFrom: Alice Liddell <{user.pw_name}@{HOST}>\n".encode() in content
    assert pickup.wait(15) == 0
    assert os.listdir(mailsys.queue_dir / "maildrop") == []
    assert re.search(
        rf"sdmail/pickup\[\d+\]: {queue_id}: uid={user.pw_uid} from=<{user.pw_name}>\n",
        mailsys.log("pickup"),
    )
    assert "warning" not in mailsys.log("pickup")
