"""Reports to senders through the real programs: `sendmail -bv`, `sendmail -v`, DSN
NOTIFY=SUCCESS, delay notices, and a non-delivery notice read by a real bounce parser.

sendmail (as a local user) → postdrop → pickup → cleanup → qmgr → local, and the
report comes back through cleanup to the sender's mbox, where it is parsed with
Python's `email` package.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import mailbox
import subprocess
from pathlib import Path

import pytest

HOST = "mail.example.test"


def _start(mailsys, extra: str = "", aliases: str = "") -> None:
    mailsys.write_main_cf(extra)
    (mailsys.config_dir / "aliases").write_text(aliases)
    assert mailsys.run("postalias", f"hash:{mailsys.config_dir}/aliases").returncode == 0
    mailsys.start("postdrop", sockets=("postdrop",))
    mailsys.start("local", sockets=("local",), mode=0o600)
    mailsys.start("cleanup", sockets=("cleanup",))
    mailsys.start("qmgr", sockets=("qmgr",))
    mailsys.start("pickup")


def _messages(mbox: Path) -> list[email.message.EmailMessage]:
    if not mbox.exists():
        return []
    box = mailbox.mbox(str(mbox), create=False)
    try:
        return [
            email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            for key in box.iterkeys()
        ]
    finally:
        box.close()


def _wait_for_messages(mailsys, mbox: Path, count: int) -> list[email.message.EmailMessage]:
    mailsys.wait_for(lambda: len(_messages(mbox)) >= count, f"{count} message(s) in {mbox}")
    mailsys.wait_for(
        lambda: not mailsys.queue_files("maildrop", "incoming", "active", "deferred"),
        "an empty queue",
    )
    return _messages(mbox)


def _report_parts(notice: email.message.EmailMessage) -> tuple[str, list[dict[str, str]]]:
    """The notice's human text and its per-recipient delivery-status fields."""
    assert notice.get_content_type() == "multipart/report"
    assert notice.get_param("report-type") == "delivery-status"
    human, status = notice.get_payload()[:2]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    recipients = [{k.lower(): str(v) for k, v in block.items()} for block in blocks[1:]]
    return " ".join(human.get_content().split()), recipients  # unfolded


def _sendmail(mailsys, user: str, *args: str, message: bytes = b"") -> subprocess.CompletedProcess:
    return mailsys.run("sendmail", *args, input=message, user=user)


# -- sendmail -bv -------------------------------------------------------------------------


def test_bv_reports_what_would_happen_and_delivers_nothing(mailsys, make_user) -> None:
    sender, target = make_user(), make_user()
    files = mailsys.root / "files"
    files.mkdir(mode=0o777)
    _start(mailsys, aliases=f"archive: {files}/archive\nteam: {target.pw_name}\n")
    done = _sendmail(mailsys, sender.pw_name, "-bv", target.pw_name, "nosuchuser", "archive")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == f"Mail Delivery Status Report will be mailed to <{sender.pw_name}>.\n".encode()
    )
    (report,) = _wait_for_messages(mailsys, mailsys.mail_dir / sender.pw_name, 1)
    assert report["Subject"] == "Mail Delivery Status Report"
    assert str(report["From"]).startswith("Mail Delivery System <MAILER-DAEMON@")
    text, recipients = _report_parts(report)
    assert "Enclosed is the mail delivery report that you requested." in text
    by_address = {r["final-recipient"]: r for r in recipients}
    mine = by_address[f"rfc822; {target.pw_name}@{HOST}"]
    assert (mine["action"], mine["status"]) == ("deliverable", "2.0.0")
    assert (
        f"<{target.pw_name}@{HOST}> (expanded from <{target.pw_name}>): "
        "delivery via local: delivers to mailbox"
    ) in text
    unknown = by_address[f"rfc822; nosuchuser@{HOST}"]
    assert (unknown["action"], unknown["status"]) == ("undeliverable", "5.1.1")
    archive = by_address[f"rfc822; archive@{HOST}"]
    assert archive["action"] == "deliverable"
    assert f"delivers to file: {files}/archive" in text
    # Nothing was delivered: no mailbox for the target, no file, no bounce notice.
    assert not (mailsys.mail_dir / target.pw_name).exists()
    assert not (files / "archive").exists()
    assert "non-delivery notification" not in mailsys.log("qmgr")
    assert "status=deliverable (delivers to mailbox)" in mailsys.log("local")
    assert "status=undeliverable (unknown user" in mailsys.log("local")
    assert "sender delivery status notification: " in mailsys.log("qmgr")


def test_bv_does_not_wait_for_a_message_on_stdin(mailsys, make_user) -> None:
    sender = make_user()
    _start(mailsys)
    command = [
        "runuser", "-u", sender.pw_name, "--", "env", f"PYTHONPATH={Path.cwd()}",
        f"SDMAIL_CONFIG_DIR={mailsys.config_dir}", mailsys.user_python, "-m", "sdmail.sendmail",
        "-bv", sender.pw_name,
    ]  # fmt: skip
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        out, _ = process.communicate(timeout=30)  # stdin is never closed before it exits...
    assert process.returncode == 0
    assert b"Mail Delivery Status Report will be mailed to" in out
    (report,) = _wait_for_messages(mailsys, mailsys.mail_dir / sender.pw_name, 1)
    assert report["Subject"] == "Mail Delivery Status Report"


@pytest.mark.parametrize("flag", ["-t", "-N success", "-R full"])
def test_bv_refuses_options_that_make_no_sense_with_it(mailsys, make_user, flag: str) -> None:
    sender = make_user()
    done = _sendmail(mailsys, sender.pw_name, "-bv", *flag.split(), sender.pw_name)
    assert done.returncode == 64
    assert b"cannot be used with -bv" in done.stderr


# -- sendmail -v ----------------------------------------------------------------------------


def test_v_delivers_and_reports_the_first_attempt(mailsys, make_user) -> None:
    sender = make_user()
    _start(mailsys)
    done = _sendmail(
        mailsys, sender.pw_name, "-v", sender.pw_name, "ghost",
        message=b"Subject: traced\n\nfollow me\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert b"Mail Delivery Status Report will be mailed to" in done.stdout
    messages = _wait_for_messages(mailsys, mailsys.mail_dir / sender.pw_name, 3)
    subjects = sorted(str(m["Subject"]) for m in messages)
    assert subjects == [
        "Mail Delivery Status Report",
        "Undelivered Mail Returned to Sender",
        "traced",
    ]
    (report,) = [m for m in messages if m["Subject"] == "Mail Delivery Status Report"]
    text, recipients = _report_parts(report)
    actions = {r["final-recipient"]: r["action"] for r in recipients}
    assert actions == {
        f"rfc822; {sender.pw_name}@{HOST}": "delivered",
        f"rfc822; ghost@{HOST}": "failed",
    }
    assert "delivery via local: delivered to mailbox" in text
    returned = report.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: traced" in returned.get_content()


def test_v_reports_a_deferred_message_once(mailsys, make_user) -> None:
    sender = make_user()
    _start(
        mailsys,
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\nqueue_run_delay = 1s\n",
        aliases='later: "|exit 75"\n',
    )
    done = _sendmail(mailsys, sender.pw_name, "-v", "later", message=b"Subject: s\n\nx\n")
    assert done.returncode == 0, done.stderr
    mbox = mailsys.mail_dir / sender.pw_name
    mailsys.wait_for(lambda: len(_messages(mbox)) >= 1, "the report")
    mailsys.wait_for(lambda: mailsys.log("local").count("status=deferred") >= 3, "3 attempts")
    messages = _messages(mbox)
    assert [str(m["Subject"]) for m in messages] == ["Mail Delivery Status Report"]
    _, recipients = _report_parts(messages[0])
    assert [(r["action"], r["status"][:1]) for r in recipients] == [("delayed", "4")]


# -- DSN NOTIFY=SUCCESS -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        ("success", ["Successful Mail Delivery Report", "hello"]),
        ("never", ["hello"]),
        (None, ["hello"]),
    ],
)
def test_notify_success_gives_a_success_notice(
    mailsys, make_user, notify: str | None, expected: list[str]
) -> None:
    sender = make_user()
    _start(mailsys)
    options = ["-N", notify] if notify else []
    done = _sendmail(
        mailsys, sender.pw_name, *options, sender.pw_name, message=b"Subject: hello\n\nhi\n"
    )
    assert done.returncode == 0, done.stderr
    if notify == "success":
        mailsys.wait_for(
            lambda: "sender delivery status notification" in mailsys.log("qmgr"), "the notice"
        )
    messages = _wait_for_messages(mailsys, mailsys.mail_dir / sender.pw_name, len(expected))
    assert sorted(str(m["Subject"]) for m in messages) == sorted(expected)
    if notify != "success":
        assert "delivery status notification" not in mailsys.log("qmgr")
        return
    (notice,) = [m for m in messages if m["Subject"] == expected[0]]
    text, recipients = _report_parts(notice)
    assert "Your message was successfully delivered to the destination(s)" in text
    assert [(r["action"], r["status"]) for r in recipients] == [("delivered", "2.0.0")]
    assert notice.get_payload()[2]["Content-Description"] == "Message Headers"


# -- delay notices ------------------------------------------------------------------------


def test_one_delay_notice_while_a_message_keeps_being_deferred(mailsys, make_user) -> None:
    sender = make_user()
    _start(
        mailsys,
        "delay_warning_time = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n"
        "queue_run_delay = 1s\n",
        aliases='later: "|exit 75"\n',
    )
    done = _sendmail(mailsys, sender.pw_name, "later", message=b"Subject: slow one\n\nx\n")
    assert done.returncode == 0, done.stderr
    mbox = mailsys.mail_dir / sender.pw_name
    mailsys.wait_for(lambda: len(_messages(mbox)) >= 1, "the delay notice")
    mailsys.wait_for(lambda: mailsys.log("local").count("status=deferred") >= 4, "4 attempts")
    (notice,) = _messages(mbox)
    assert notice["Subject"] == "Delayed Mail (still being retried)"
    text, recipients = _report_parts(notice)
    assert "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE." in text
    assert "It will be retried until it is 5 day(s) old." in text
    assert [(r["action"], r["status"][:1]) for r in recipients] == [("delayed", "4")]
    assert "will-retry-until" in recipients[0]
    assert "Subject: slow one" in notice.get_payload()[2].get_content()
    assert mailsys.log("qmgr").count("sender delay notification: ") == 1
    assert mailsys.queue_files("deferred")  # still being retried


# -- what mailing-list software understands -----------------------------------------------


def test_a_non_delivery_notice_names_its_failed_recipient_to_flufl_bounce(
    mailsys, make_user
) -> None:
    flufl = subprocess.run(["/usr/bin/python3", "-c", "import flufl.bounce"], capture_output=True)
    if flufl.returncode != 0:
        pytest.skip("Debian's python3-flufl.bounce is not installed")
    sender = make_user()
    _start(mailsys)
    # A list server names its subscribers in full, as here.
    done = _sendmail(
        mailsys, sender.pw_name, f"nosuchuser@{HOST}", message=b"Subject: list post\n\nx\n"
    )
    assert done.returncode == 0, done.stderr
    mbox = mailsys.mail_dir / sender.pw_name
    (notice,) = _wait_for_messages(mailsys, mbox, 1)
    assert notice["Subject"] == "Undelivered Mail Returned to Sender"
    box = mailbox.mbox(str(mbox), create=False)
    raw = box.get_bytes(next(box.iterkeys()))
    box.close()
    scan = (
        "import sys, email\n"
        "from flufl.bounce import scan_message\n"
        "print(sorted(a.decode() for a in scan_message(email.message_from_bytes(sys.stdin.buffer.read()))))\n"
    )
    found = subprocess.run(["/usr/bin/python3", "-c", scan], input=raw, capture_output=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.decode().strip() == f"['nosuchuser@{HOST}']"


# -- notify_classes: the postmaster's copies --------------------------------------------


def test_notify_classes_bounce_sends_the_postmaster_a_copy(mailsys, make_user) -> None:
    sender, postmaster = make_user(), make_user()
    _start(mailsys, "notify_classes = bounce\n", aliases=f"postmaster: {postmaster.pw_name}\n")
    message = b"Subject: lost\n\nthe body stays private\n"
    done = _sendmail(mailsys, sender.pw_name, "nosuchuser", message=message)
    assert done.returncode == 0, done.stderr
    (notice,) = _wait_for_messages(mailsys, mailsys.mail_dir / sender.pw_name, 1)
    assert notice["Subject"] == "Undelivered Mail Returned to Sender"
    (copy,) = _wait_for_messages(mailsys, mailsys.mail_dir / postmaster.pw_name, 1)
    assert copy["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert copy["Auto-Submitted"] == "auto-generated"
    assert copy["Return-Path"] == f"<double-bounce@{HOST}>"
    _, recipients = _report_parts(copy)
    assert [(r["action"], r["status"]) for r in recipients] == [("failed", "5.1.1")]
    returned = copy.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "the body stays private" not in copy.as_string()
    assert "postmaster non-delivery notification: " in mailsys.log("qmgr")


@pytest.mark.parametrize("classes", ["2bounce", "resource, software"])
def test_an_undeliverable_bounce_goes_to_the_postmaster_only_with_2bounce(
    mailsys, make_user, classes: str
) -> None:
    postmaster = make_user()
    _start(mailsys, f"notify_classes = {classes}\n", aliases=f"postmaster: {postmaster.pw_name}\n")
    # A bounce (null sender) that cannot be delivered: root may send as <>.
    done = mailsys.run("sendmail", "-f", "<>", "nosuchuser", input=b"Subject: notice\n\nbody\n")
    assert done.returncode == 0, done.stderr
    mailsys.wait_for(
        lambda: "notification" in mailsys.log("qmgr"), "what qmgr does with the double bounce"
    )
    if classes == "2bounce":
        (copy,) = _wait_for_messages(mailsys, mailsys.mail_dir / postmaster.pw_name, 1)
        assert copy["Subject"] == "Undelivered Mail Returned to Sender"
        assert copy["To"] == "postmaster@" + HOST
        assert copy.get_payload()[2].get_content_type() == "message/rfc822"
        assert "postmaster non-delivery notification: " in mailsys.log("qmgr")
    else:
        mailsys.wait_for(
            lambda: not mailsys.queue_files("incoming", "active", "deferred"), "an empty queue"
        )
        assert "non-delivery notification to the null sender discarded" in mailsys.log("qmgr")
        assert not (mailsys.mail_dir / postmaster.pw_name).exists()


def test_notify_classes_delay_sends_the_postmaster_a_warning(mailsys, make_user) -> None:
    sender, postmaster = make_user(), make_user()
    _start(
        mailsys,
        "notify_classes = delay\ndelay_warning_time = 1s\nminimal_backoff_time = 1s\n"
        "maximal_backoff_time = 1s\nqueue_run_delay = 1s\n",
        aliases=f'later: "|exit 75"\npostmaster: {postmaster.pw_name}\n',
    )
    done = _sendmail(mailsys, sender.pw_name, "later", message=b"Subject: slow\n\nx\n")
    assert done.returncode == 0, done.stderr
    pm_mbox = mailsys.mail_dir / postmaster.pw_name
    mailsys.wait_for(lambda: len(_messages(pm_mbox)) >= 1, "the postmaster's warning")
    (copy,) = _messages(pm_mbox)
    assert copy["Subject"] == "Postmaster Warning: Delayed Mail"
    assert copy["Auto-Submitted"] == "auto-generated"
    assert "postmaster delay notification: " in mailsys.log("qmgr")


def test_an_alias_that_expands_reports_expanded_once(mailsys, make_user) -> None:
    sender, ann, bob = make_user(), make_user(), make_user()
    _start(mailsys, aliases=f"team: {ann.pw_name}@{HOST}, {bob.pw_name}@{HOST}\n")
    done = _sendmail(
        mailsys, sender.pw_name, "-N", "success", "team", message=b"Subject: all\n\nx\n"
    )
    assert done.returncode == 0, done.stderr
    for member in (ann, bob):
        _wait_for_messages(mailsys, mailsys.mail_dir / member.pw_name, 1)
    (notice,) = _wait_for_messages(mailsys, mailsys.mail_dir / sender.pw_name, 1)
    assert notice["Subject"] == "Successful Mail Delivery Report"
    _, recipients = _report_parts(notice)
    assert [(r["final-recipient"], r["action"]) for r in recipients] == [
        (f"rfc822; team@{HOST}", "expanded")
    ]
    # The copies asked for no success notice of their own: still one message.
    assert mailsys.log("qmgr").count("sender delivery status notification") == 1
