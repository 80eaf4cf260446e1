"""sendmail as users run it: the real program, the real postdrop, files in maildrop/."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sdmail.core.qfile import QueueFile, iter_content, read_envelope
from sdmail.core.records import DsnRet, Notify, QueueName, RewriteContext
from sdmail.core.spool import Spool

if TYPE_CHECKING:  # the fixture's class; conftest is not importable by name
    from conftest import MailSystem

MakeUser = Callable[[], pwd.struct_passwd]


def maildrop(mailsys: MailSystem) -> list[tuple[QueueFile, bytes]]:
    found = []
    with Spool(mailsys.queue_dir) as spool:
        for queue_id in spool.list_queue(QueueName.MAILDROP):
            with spool.open(QueueName.MAILDROP, queue_id) as handle:
                queue_file = read_envelope(handle.fd)
                found.append((queue_file, b"".join(iter_content(handle.fd, queue_file))))
    return found


def only_message(mailsys: MailSystem) -> tuple[QueueFile, bytes]:
    files = maildrop(mailsys)
    assert len(files) == 1, mailsys.queue_files()
    return files[0]


@pytest.fixture
def postdrop(mailsys: MailSystem) -> Iterator[MailSystem]:
    mailsys.start("postdrop", sockets=("postdrop",))
    yield mailsys


def sendmail(
    mailsys: MailSystem, *args: str, input: bytes = b"", user: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    return mailsys.run("sendmail", *args, input=input, user=user)


def test_root_submission_is_one_file_with_the_right_envelope(postdrop: MailSystem) -> None:
    result = sendmail(postdrop, "bob@example.org", "carol", input=b"Subject: hi\n\nhello\n")
    assert (result.returncode, result.stderr) == (0, b"")
    queue_file, content = only_message(postdrop)
    envelope = queue_file.envelope
    assert envelope.sender == "root"
    assert [r.address for r in envelope.recipients] == ["bob@example.org", "carol"]
    assert envelope.attribute("uid") == "0"
    assert envelope.attribute("extract_recipients") is None
    assert envelope.client.rewrite_context is RewriteContext.LOCAL
    assert content == b"Subject: hi\n\nhello\n"


def test_a_real_user_submits_as_themselves(postdrop: MailSystem, make_user: MakeUser) -> None:
    user = make_user()
    subprocess.run(["usermod", "-c", "Alice Liddell,Room 1", user.pw_name], check=True)
    result = sendmail(postdrop, "root", input=b"Subject: from a user\n\nx\n", user=user.pw_name)
    assert (result.returncode, result.stderr) == (0, b"")
    envelope = only_message(postdrop)[0].envelope
    assert envelope.sender == user.pw_name
    assert envelope.attribute("uid") == str(user.pw_uid)
    assert envelope.sender_fullname == "Alice Liddell"


def test_user_cannot_claim_another_uid_in_the_request(
    postdrop: MailSystem, make_user: MakeUser
) -> None:
    user = make_user()
    client = (
        "from sdmail.core.mail_stream import *; import sys; "
        "print(submit(sys.argv[1], SubmitRequest(sender=None, "
        "recipients=(SubmitRecipient('root'),), attributes={'uid': '0'}), b'x\\n'))"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["runuser", "-u", user.pw_name, "--", "env", f"PYTHONPATH={repo}",
         postdrop.user_python, "-c", client, str(postdrop.socket_path("postdrop"))],
        capture_output=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    envelope = only_message(postdrop)[0].envelope
    assert (envelope.sender, envelope.attribute("uid")) == (user.pw_name, str(user.pw_uid))


def test_options_are_stored(postdrop: MailSystem) -> None:
    result = sendmail(
        postdrop,
        "-f", "Lists <owner-list@example.org>", "-F", "The List", "-N", "success,failure",
        "-R", "hdrs", "-V", "env-42", "-B", "8BITMIME", "-G", "-oi", "bob@example.org",
        input=b"Subject: x\n\n.\nafter the dot\n",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")
    queue_file, content = only_message(postdrop)
    envelope = queue_file.envelope
    assert envelope.sender == "owner-list@example.org"
    assert envelope.sender_fullname == "The List"
    assert envelope.recipients[0].notify == Notify.SUCCESS | Notify.FAILURE
    assert (envelope.ret, envelope.envid, str(envelope.body_type)) == (
        DsnRet.HDRS,
        "env-42",
        "8BITMIME",
    )
    assert envelope.client.rewrite_context is RewriteContext.REMOTE
    assert content == b"Subject: x\n\n.\nafter the dot\n"


def test_t_extracts_and_a_lone_dot_ends_input(postdrop: MailSystem) -> None:
    message = (
        b"From me@example.org Mon Jan  1 00:00:00 2024\r\nTo: bob\r\n\r\nbody\r\n.\r\nlost\r\n"
    )
    result = sendmail(postdrop, "-t", input=message)
    assert (result.returncode, result.stderr) == (0, b"")
    queue_file, content = only_message(postdrop)
    assert queue_file.envelope.attribute("extract_recipients") == "yes"
    assert queue_file.envelope.recipients == ()
    assert content == b"To: bob\n\nbody\n"


def test_null_sender(postdrop: MailSystem) -> None:
    for sender in ("", "<>"):
        assert sendmail(postdrop, "-f", sender, "bob", input=b"x\n").returncode == 0
    assert [qf.envelope.sender for qf, _ in maildrop(postdrop)] == ["", ""]


def test_name_from_the_environment_when_no_f(mailsys: MailSystem) -> None:
    mailsys.start("postdrop", sockets=("postdrop",))
    result = mailsys.run("sendmail", "bob", input=b"x\n")
    assert result.returncode == 0
    env = {**mailsys.env, "NAME": "Env Name"}
    subprocess.run(
        [sys.executable, "-m", "sdmail.sendmail", "bob"], input=b"y\n", env=env, check=True
    )
    names = sorted(str(qf.envelope.sender_fullname) for qf, _ in maildrop(mailsys))
    assert "Env Name" in names


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"Subject: no body\n",
        b"Subject: nul\n\n\x00\x00 in the body\n",
        b"Subject: long\n\n" + b"x" * 5000 + b"\n",
        "Subject: 8-bit h\xe9aders, ok\nFrom: J\xfcrgen <j@example.org>\n\nb\n".encode("latin-1"),
        "Subject: \u00fcnicode\n\n\u2603\n".encode(),
    ],
)
def test_awkward_content_is_accepted_byte_for_byte(postdrop: MailSystem, content: bytes) -> None:
    result = sendmail(postdrop, "-i", "bob", input=content)
    assert (result.returncode, result.stderr) == (0, b"")
    assert only_message(postdrop)[1] == content


def test_no_recipients_is_a_usage_error_before_anything_is_sent(mailsys: MailSystem) -> None:
    result = sendmail(mailsys, input=b"x\n")
    assert result.returncode == 64
    assert result.stderr == (
        b"sendmail: fatal: Recipient addresses must be specified on the command line"
        b" or via the -t option\n"
    )


def test_t_without_recipient_headers_is_a_usage_error(postdrop: MailSystem) -> None:
    result = sendmail(postdrop, "-t", input=b"Subject: x\n\nTo: bob\n")
    assert result.returncode == 64
    assert result.stderr == b"sendmail: fatal: No recipient addresses found in message header\n"
    assert postdrop.queue_files() == []


def test_postdrop_down_exits_75_and_writes_nothing(mailsys: MailSystem) -> None:
    result = sendmail(mailsys, "bob", input=b"x\n")
    assert result.returncode == 75
    assert result.stderr.startswith(b"sendmail: fatal: cannot reach the postdrop service at ")
    assert b"Traceback" not in result.stderr
    assert mailsys.queue_files() == []


def test_postdrop_socket_without_a_listener_exits_75(mailsys: MailSystem) -> None:
    process = mailsys.start("postdrop", sockets=("postdrop",))
    process.kill()
    process.wait()
    result = sendmail(mailsys, "bob", input=b"x\n")
    assert result.returncode == 75
    assert b"Connection refused" in result.stderr
    assert mailsys.queue_files() == []


def test_unauthorized_user_gets_77_with_postfixs_text(
    mailsys: MailSystem, make_user: MakeUser
) -> None:
    mailsys.write_main_cf("authorized_submit_users = root\n")
    mailsys.start("postdrop", sockets=("postdrop",))
    user = make_user()
    result = sendmail(mailsys, "root", input=b"x\n", user=user.pw_name)
    assert result.returncode == 77
    assert (
        result.stderr
        == (
            f"sendmail: fatal: User {user.pw_name}({user.pw_uid}) is not allowed to submit mail\n"
        ).encode()
    )
    assert mailsys.queue_files() == []


def test_sender_not_allowed_for_the_user_gets_77(mailsys: MailSystem, make_user: MakeUser) -> None:
    user = make_user()
    mailsys.write_main_cf(
        f"local_login_sender_maps = inline:{{root=*, {{{user.pw_name} = {user.pw_name}, @example.org}}}}\n"
    )
    mailsys.start("postdrop", sockets=("postdrop",))
    allowed = sendmail(mailsys, "-f", "me+tag@example.org", "root", input=b"x\n", user=user.pw_name)
    assert allowed.returncode == 0, allowed.stderr
    refused = sendmail(mailsys, "-f", "boss@example.com", "root", input=b"x\n", user=user.pw_name)
    assert refused.returncode == 77
    assert b"is not allowed to use sender address <boss@example.com>" in refused.stderr
    assert len(mailsys.queue_files()) == 1


def test_a_user_cannot_read_or_remove_anothers_submission(
    postdrop: MailSystem, make_user: MakeUser
) -> None:
    alice, mallory = make_user(), make_user()
    assert sendmail(postdrop, "root", input=b"secret\n", user=alice.pw_name).returncode == 0
    [name] = postdrop.queue_files()
    path = postdrop.queue_dir / name
    for command in (["cat", str(path)], ["rm", "-f", str(path)], ["ls", str(path.parent)]):
        attempt = subprocess.run(
            ["runuser", "-u", mallory.pw_name, "--", *command], capture_output=True
        )
        assert attempt.returncode != 0, command
        assert b"Permission denied" in attempt.stderr
    # Not even the submitter can take it back: maildrop/ belongs to postdrop alone.
    attempt = subprocess.run(
        ["runuser", "-u", alice.pw_name, "--", "cat", str(path)], capture_output=True
    )
    assert attempt.returncode != 0
    assert path.exists()


def test_full_disk_exits_75_and_leaves_nothing_half_queued(mailsys: MailSystem) -> None:
    queue = mailsys.root / "small-spool"
    queue.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(queue)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with Spool(queue) as spool:
            spool.create_directories()
        mailsys.write_main_cf(f"queue_directory = {queue}\n")
        mailsys.start("postdrop", sockets=("postdrop",))
        small = sendmail(mailsys, "bob", input=b"fits\n")
        assert small.returncode == 0, small.stderr
        before = sorted(os.listdir(queue / "maildrop"))
        assert len(before) == 1
        big = sendmail(mailsys, "bob", input=b"Subject: big\n\n" + b"z" * 400_000 + b"\n")
        assert big.returncode == 75
        assert big.stderr == b"sendmail: fatal: Error: queue file write error\n"
        # The small one is still there, and no partial file beside it.
        assert sorted(os.listdir(queue / "maildrop")) == before, mailsys.log("postdrop")
    finally:
        subprocess.run(["umount", "-l", str(queue)], check=False)


def test_200_back_to_back_calls_all_land_in_maildrop(postdrop: MailSystem) -> None:
    for n in range(200):
        result = sendmail(postdrop, "bob", input=f"Subject: {n}\n\n{n}\n".encode())
        assert result.returncode == 0, (n, result.stderr)
    contents = sorted(content for _, content in maildrop(postdrop))
    assert contents == sorted(f"Subject: {n}\n\n{n}\n".encode() for n in range(200))


def test_a_dot_line_ends_input_while_stdin_stays_open(postdrop: MailSystem) -> None:
    """As at a terminal: sendmail returns after the `.` line without waiting for EOF."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sdmail.sendmail", "bob"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=postdrop.env,
    )
    assert process.stdin is not None
    process.stdin.write(b"Subject: typed\n\nhello\n.\n")
    process.stdin.flush()
    try:
        assert process.wait(timeout=30) == 0
    finally:
        process.stdin.close()
        assert process.stderr is not None
        process.stderr.close()
    assert only_message(postdrop)[1] == b"Subject: typed\n\nhello\n"
