"""sendmail's other modes: mailq, -q, newaliases, -bd, -bs, as real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sdmail.core.qfile import iter_content, read_envelope
from sdmail.core.records import QueueName
from sdmail.core.spool import Spool

if TYPE_CHECKING:  # the fixture's class; conftest is not importable by name
    from conftest import MailSystem


def as_program(mailsys: MailSystem, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run sendmail's main() with argv[0] NAME, as the mailq and newaliases links do."""
    code = f"import sys; sys.argv[0] = {name!r}; from sdmail.sendmail import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, env=mailsys.env, timeout=60
    )


def test_bp_mailq_and_mailq_by_name_are_postqueue_p(mailsys: MailSystem) -> None:
    mailsys.start("postdrop", sockets=("postdrop",))
    assert mailsys.run("sendmail", "bob", input=b"x\n").returncode == 0
    direct = mailsys.run("postqueue", "-p")
    for result in (
        mailsys.run("sendmail", "-bp"),
        as_program(mailsys, "/usr/bin/mailq"),
        subprocess.run(
            [sys.executable, "-c", "import sys; from sdmail.sendmail import mailq_main; sys.exit(mailq_main())"],
            capture_output=True, env=mailsys.env, timeout=60,
        ),
    ):  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (
            direct.returncode,
            direct.stdout,
            direct.stderr,
        )
    assert b"bob" in direct.stdout


def test_mailq_with_a_recipient_is_a_usage_error(mailsys: MailSystem) -> None:
    result = mailsys.run("sendmail", "-bp", "bob")
    assert result.returncode == 64
    assert result.stderr == b"sendmail: fatal: display queue mode requires no recipient\n"
    result = as_program(mailsys, "mailq", "bob")
    assert result.stderr == b"mailq: fatal: display queue mode requires no recipient\n"


@pytest.mark.parametrize(
    ("sendmail_args", "postqueue_args"),
    [
        (("-q",), ("-f",)),
        (("-qIBADID",), ("-i", "BADID")),
        (("-qRexample.org",), ("-s", "example.org")),
    ],
)
def test_flush_requests_are_postqueues(
    mailsys: MailSystem, sendmail_args: tuple[str, ...], postqueue_args: tuple[str, ...]
) -> None:
    via_sendmail = mailsys.run("sendmail", *sendmail_args)
    direct = mailsys.run("postqueue", *postqueue_args)
    assert (via_sendmail.returncode, via_sendmail.stdout, via_sendmail.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )
    assert via_sendmail.stderr.startswith(b"postqueue: ")


def test_queue_interval_is_ignored(mailsys: MailSystem) -> None:
    result = mailsys.run("sendmail", "-q30m")
    assert (result.returncode, result.stderr) == (0, b"")


def test_newaliases_bi_and_i_build_the_alias_database(mailsys: MailSystem) -> None:
    aliases = mailsys.config_dir / "aliases"
    aliases.write_text("postmaster: root\n")
    for run in (
        lambda: mailsys.run("sendmail", "-bi"),
        lambda: mailsys.run("sendmail", "-I"),
        lambda: as_program(mailsys, "/usr/bin/newaliases"),
    ):
        Path(f"{aliases}.db").unlink(missing_ok=True)
        result = run()
        assert (result.returncode, result.stderr) == (0, b"")
        assert Path(f"{aliases}.db").is_file()
    query = mailsys.run("postalias", "-q", "postmaster", f"hash:{aliases}")
    assert query.stdout == b"root\n"


def test_oa_names_another_alias_file(mailsys: MailSystem) -> None:
    other = mailsys.root / "other-aliases"
    other.write_text("abuse: root\n")
    result = mailsys.run("sendmail", "-bi", f"-oAhash:{other}")
    assert (result.returncode, result.stderr) == (0, b"")
    assert Path(f"{other}.db").is_file()
    assert not (mailsys.config_dir / "aliases.db").exists()


def test_newaliases_reports_a_broken_alias_file_as_postalias(mailsys: MailSystem) -> None:
    (mailsys.config_dir / "aliases").write_text("no colon here\n")
    result = mailsys.run("sendmail", "-bi")
    assert result.returncode != 0
    assert result.stderr.startswith(b"postalias: ")
    assert b"line 1" in result.stderr


def test_bd_starts_the_mail_system_with_systemctl(mailsys: MailSystem) -> None:
    bin_dir = mailsys.root / "bin"
    bin_dir.mkdir()
    record = mailsys.root / "systemctl.args"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    fake.chmod(0o755)
    env = {**mailsys.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "sdmail.sendmail", "-bd"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0
    assert record.read_text() == "start sdmail.service\n"


def test_bh_is_accepted_and_does_nothing(mailsys: MailSystem) -> None:
    assert mailsys.run("sendmail", "-bh").returncode == 0


def test_bv_queues_a_verification_request_not_the_message(mailsys: MailSystem) -> None:
    from sdmail.core import qfile
    from sdmail.core.records import TraceFlag

    mailsys.start("postdrop", sockets=("postdrop",))
    result = mailsys.run("sendmail", "-bv", "bob", input=b"Subject: not read\n\nx\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Mail Delivery Status Report will be mailed to <root>.\n"
    (name,) = mailsys.queue_files("maildrop")
    data = (mailsys.queue_dir / name).read_bytes()
    queued = qfile.decode(data)
    assert queued.envelope.trace_flags == TraceFlag.VERIFY
    assert queued.content_from(data) == b""  # -bv collects no message


def test_bad_main_cf_exits_78_naming_file_and_line(mailsys: MailSystem) -> None:
    (mailsys.config_dir / "main.cf").write_text("message_size_limit = lots\n")
    result = mailsys.run("sendmail", "bob", input=b"x\n")
    assert result.returncode == 78
    assert result.stderr.startswith(b"sendmail: fatal: ")
    assert b"main.cf, line 1: message_size_limit" in result.stderr


def test_capital_c_names_another_configuration(mailsys: MailSystem) -> None:
    mailsys.start("postdrop", sockets=("postdrop",))
    other = mailsys.root / "other-etc"
    other.mkdir()
    (other / "main.cf").write_text(f"socket_directory = {mailsys.root}/nowhere\n")
    result = mailsys.run("sendmail", "-C", str(other / "main.cf"), "bob", input=b"x\n")
    assert result.returncode == 75
    assert f"{mailsys.root}/nowhere/postdrop".encode() in result.stderr


# -- sendmail -bs with real SMTP clients --------------------------------------------------
def test_swaks_sends_through_bs(mailsys: MailSystem) -> None:
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed")
    mailsys.start("postdrop", sockets=("postdrop",))
    sendmail = f"env PYTHONPATH={mailsys.env['PYTHONPATH']} {sys.executable} -m sdmail.sendmail -bs"
    result = subprocess.run(
        ["swaks", "--pipe", sendmail, "--from", "alice@example.org", "--to", "bob@example.org",
         "--header", "Subject: via swaks", "--body", "line one\n.leading dot\n"],
        capture_output=True, env=mailsys.env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"<-  250 2.0.0 Ok: queued as " in result.stdout
    with Spool(mailsys.queue_dir) as spool:
        [queue_id] = spool.list_queue(QueueName.MAILDROP)
        with spool.open(QueueName.MAILDROP, queue_id) as handle:
            queue_file = read_envelope(handle.fd)
            content = b"".join(iter_content(handle.fd, queue_file))
    assert queue_file.envelope.sender == "alice@example.org"
    assert [r.address for r in queue_file.envelope.recipients] == ["bob@example.org"]
    assert queue_file.envelope.attribute("uid") == "0"
    assert b"Subject: via swaks\n" in content
    assert b"\n.leading dot\n" in content
    assert b"\r" not in content


def test_lockstep_client_reads_each_reply_before_the_next_command(mailsys: MailSystem) -> None:
    mailsys.start("postdrop", sockets=("postdrop",))
    process = subprocess.Popen(
        [sys.executable, "-m", "sdmail.sendmail", "-bs"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=mailsys.env,
    )
    assert process.stdin is not None and process.stdout is not None

    def say(line: bytes) -> bytes:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(line + b"\r\n")
        process.stdin.flush()
        return process.stdout.readline()

    assert process.stdout.readline().startswith(b"220 ")
    assert say(b"HELO me") == b"250 mail.example.test\r\n"
    assert say(b"RCPT TO:<bob>") == b"503 5.5.1 Error: need MAIL command\r\n"
    assert say(b"MAIL FROM:<>") == b"250 2.1.0 Ok\r\n"
    assert say(b"RCPT TO:<bob>") == b"250 2.1.5 Ok\r\n"
    assert say(b"DATA") == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    process.stdin.write(b"Subject: t\r\n\r\nbody\r\n")
    assert say(b".").startswith(b"250 2.0.0 Ok: queued as ")
    assert say(b"QUIT") == b"221 2.0.0 Bye\r\n"
    process.stdin.close()
    assert process.wait(timeout=30) == 0
    process.stdout.close()
    assert len(mailsys.queue_files("maildrop")) == 1
