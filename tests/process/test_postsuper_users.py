"""postsuper as a command: root may manage the queue, any other user is refused and nothing
changes (sdmail/postsuper.py, run as `python3 -m sdmail.postsuper` by real accounts)."""

from __future__ import annotations

from sdmail.core.records import Envelope, Recipient
from sdmail.core.spool import Spool

REFUSAL = b"postsuper: fatal: use of this command is reserved for the superuser\n"


def queued(mailsys, queue: str = "deferred") -> str:
    with Spool(mailsys.queue_dir) as spool:
        envelope = Envelope("ann@example.com", (Recipient("bob@example.org"),))
        return spool.create(queue, envelope, b"Subject: x\n\nbody\n").queue_id


def test_a_user_other_than_root_is_refused_and_nothing_changes(mailsys, make_user):
    queue_id = queued(mailsys)
    user = make_user()
    for args in (["-d", queue_id], ["-d", "ALL"], ["-h", queue_id], ["-s"], []):
        result = mailsys.run("postsuper", *args, user=user.pw_name)
        assert (result.returncode, result.stderr, result.stdout) == (1, REFUSAL, b""), args
    assert mailsys.queue_files() == [f"deferred/{queue_id}"]


def test_root_deletes_with_postfix_lines_on_stderr(mailsys):
    queue_id = queued(mailsys)
    result = mailsys.run("postsuper", "-d", queue_id)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        f"postsuper: {queue_id}: removed",
        "postsuper: Deleted: 1 message",
    ]
    assert mailsys.queue_files() == []
