"""sendmail -bs: the SMTP dialogue on stdin/stdout, with postdrop played at its socket."""

from __future__ import annotations

import io
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdmail.core.ipc import recv_frame, send_frame
from sdmail.core.mail_stream import SubmitRequest, accepted, refused
from sdmail.core.records import Notify
from sdmail.sendmail import (
    SendmailSettings,
    SmtpSettings,
    StandaloneSmtp,
    decoded_orcpt,
    split_command_argument,
    xtext_decode,
)


class FakePostdrop:
    """Plays postdrop's side of the socket: records requests, answers as told."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "postdrop"
        self.requests: list[tuple[SubmitRequest, bytes]] = []
        self.answer: dict[str, Any] | None = None
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(self.path))
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                frame = recv_frame(reader)
                self.requests.append((SubmitRequest.from_header(frame.header), frame.payload))
                send_frame(conn, self.answer or accepted(f"ID{len(self.requests)}"))

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def postdrop() -> Iterator[FakePostdrop]:
    with tempfile.TemporaryDirectory() as directory:
        fake = FakePostdrop(Path(directory))
        yield fake
        fake.close()


def settings(socket_directory: Path, **smtp: Any) -> tuple[SendmailSettings, SmtpSettings]:
    base = SmtpSettings(
        myhostname="mail.example.test",
        smtpd_banner="mail.example.test ESMTP sdmail",
        message_size_limit=10240000,
        smtpd_recipient_limit=1000,
        smtpd_hard_error_limit=20,
        disable_vrfy_command=False,
        smtputf8_enable=True,
        line_length_limit=2048,
    )
    values = {**base.__dict__, **smtp}
    return (
        SendmailSettings(str(socket_directory), ("hash:/etc/aliases",), "always", 60),
        SmtpSettings(**values),
    )


def dialogue(fake: FakePostdrop | Path, script: bytes, **smtp: Any) -> list[str]:
    """The replies to SCRIPT, talking to FAKE (or to nothing in the directory FAKE)."""
    directory = fake.path.parent if isinstance(fake, FakePostdrop) else fake
    out = io.BytesIO()
    status = StandaloneSmtp(*settings(directory, **smtp)).serve(io.BytesIO(script), out)
    assert status == 0
    text = out.getvalue().decode()
    assert text.endswith("\r\n")
    return text[:-2].split("\r\n")


def test_a_whole_session_queues_one_message(postdrop: FakePostdrop) -> None:
    replies = dialogue(
        postdrop,
        b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n"
        b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..leading dot\r\n"
        b"line\r\n.\r\nQUIT\r\n",
    )
    assert replies[0] == "220 mail.example.test ESMTP sdmail"
    assert replies[1:10] == [
        "250-mail.example.test",
        "250-PIPELINING",
        "250-SIZE 10240000",
        "250-VRFY",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-DSN",
        "250 SMTPUTF8",
        "250 2.1.0 Ok",
    ]
    assert replies[10:] == [
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as ID1",
        "221 2.0.0 Bye",
    ]
    [(req, content)] = postdrop.requests
    assert req.sender == "alice@example.org"
    assert [r.address for r in req.recipients] == ["bob@example.org"]
    assert content == b"Subject: hi\n\n.leading dot\nline\n"


def test_two_messages_in_one_session_and_rset(postdrop: FakePostdrop) -> None:
    replies = dialogue(
        postdrop,
        b"HELO x\nMAIL FROM:<>\nRCPT TO:<a@x>\nDATA\none\n.\n"
        b"MAIL FROM:<b@x>\nRSET\nRCPT TO:<c@x>\n"
        b"MAIL FROM:<b@x>\nRCPT TO:<c@x>\nDATA\ntwo\n.\nQUIT\n",
    )
    assert replies == [
        "220 mail.example.test ESMTP sdmail",
        "250 mail.example.test",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as ID1",
        "250 2.1.0 Ok",
        "250 2.0.0 Ok",
        "503 5.5.1 Error: need MAIL command",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as ID2",
        "221 2.0.0 Bye",
    ]
    assert [(r.sender, c) for r, c in postdrop.requests] == [("", b"one\n"), ("b@x", b"two\n")]


@pytest.mark.parametrize(
    ("commands", "reply"),
    [
        (b"MAIL FROM:<a@x>\nMAIL FROM:<a@x>\n", "503 5.5.1 Error: nested MAIL command"),
        (b"RCPT TO:<a@x>\n", "503 5.5.1 Error: need MAIL command"),
        (b"DATA\n", "503 5.5.1 Error: need RCPT command"),
        (b"MAIL FROM:<a@x>\nDATA\n", "503 5.5.1 Error: need RCPT command"),
        (b"MAIL TO:<a@x>\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROM:\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROM:<a@x>\nRCPT FROM:<a@x>\n", "501 5.5.4 Syntax: RCPT TO:<address>"),
        (b"MAIL FROM:<a b>\n", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@x>\nRCPT TO:<>\n", "501 5.1.3 Bad recipient address syntax"),
        (b"MAIL FROM:<a@x> FOO=1\n", "555 5.5.4 Unsupported option: FOO=1"),
        (b"MAIL FROM:<a@x> SIZE=99999999\n", "552 5.3.4 Message size exceeds fixed limit"),
        (b"MAIL FROM:<a@x> RET=most\n", "501 5.5.4 Bad RET parameter syntax"),
        (b"MAIL FROM:<\xc3\xa4@x>\n", "553 5.6.7 Must declare SMTPUTF8 to send unicode address"),
        (
            b"MAIL FROM:<a@x>\nRCPT TO:<b@x> NOTIFY=NEVER,SUCCESS\n",
            "501 5.5.4 Bad NOTIFY parameter syntax",
        ),
        (b"MAIL FROM:<a@x>\nRCPT TO:<b@x> ORCPT=rfc822\n", "501 5.5.4 Bad ORCPT parameter syntax"),
        (b"EHLO\n", "501 Syntax: EHLO hostname"),
        (b"HELO\n", "501 Syntax: HELO hostname"),
        (b"DATA x\n", "501 5.5.4 Syntax: DATA"),
        (b"RSET x\n", "501 5.5.4 Syntax: RSET"),
        (b"STARTTLS\n", "500 5.5.2 Error: command not recognized"),
        (b"\n", "500 5.5.2 Error: bad syntax"),
        (b"VRFY bob\n", "252 2.0.0 bob"),
        (b"NOOP\n", "250 2.0.0 Ok"),
    ],
)
def test_replies_to_bad_sequences_and_syntax(
    postdrop: FakePostdrop, commands: bytes, reply: str
) -> None:
    replies = dialogue(postdrop, commands + b"QUIT\n")
    assert replies[-2] == reply
    assert postdrop.requests == []


def test_vrfy_can_be_disabled(postdrop: FakePostdrop) -> None:
    replies = dialogue(postdrop, b"EHLO x\nVRFY bob\n", disable_vrfy_command=True)
    assert "250-VRFY" not in replies
    assert replies[-1] == "502 5.5.1 VRFY command is disabled"


def test_esmtp_parameters_reach_postdrop(postdrop: FakePostdrop) -> None:
    dialogue(
        postdrop,
        b"EHLO x\nMAIL FROM:<a@x> BODY=8BITMIME RET=HDRS ENVID=id+2B1 SMTPUTF8 SIZE=10\n"
        b"RCPT TO:<\xc3\xbc@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40x\nDATA\nx\n.\n",
    )
    [(req, _)] = postdrop.requests
    assert (req.body_type, req.ret, req.envid, req.smtputf8) == ("8BITMIME", "HDRS", "id+1", True)
    [recipient] = req.recipients
    assert recipient.address == "ü@x"
    assert Notify(recipient.notify) == Notify.SUCCESS | Notify.FAILURE
    assert recipient.orcpt == "rfc822;u@x"


def test_postdrop_refusal_is_the_reply(postdrop: FakePostdrop) -> None:
    postdrop.answer = refused(550, "5.7.1", "User alice(1000) is not allowed to submit mail")
    replies = dialogue(postdrop, b"MAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\nx\n.\nQUIT\n")
    assert replies[-2] == "550 5.7.1 User alice(1000) is not allowed to submit mail"


def test_postdrop_down_is_a_4xx_and_the_session_goes_on(tmp_path: Path) -> None:
    replies = dialogue(tmp_path, b"MAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\nx\n.\nNOOP\nQUIT\n")
    assert replies[-3:] == [
        "451 4.3.0 Error: queue file write error",
        "250 2.0.0 Ok",
        "221 2.0.0 Bye",
    ]


def test_message_over_the_limit_is_refused_and_not_submitted(postdrop: FakePostdrop) -> None:
    script = b"MAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\n" + b"x" * 200 + b"\n.\nQUIT\n"
    replies = dialogue(postdrop, script, message_size_limit=100)
    assert replies[-2] == "552 5.3.4 Error: message file too big"
    assert postdrop.requests == []


def test_end_of_input_inside_data_queues_nothing(postdrop: FakePostdrop) -> None:
    replies = dialogue(postdrop, b"MAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\nhalf a message\n")
    assert replies[-1] == "354 End data with <CR><LF>.<CR><LF>"
    assert postdrop.requests == []


def test_long_text_lines_stay_whole_and_long_commands_are_refused(postdrop: FakePostdrop) -> None:
    long_line = b"y" * 5000
    replies = dialogue(
        postdrop,
        b"NOOP " + b"z" * 3000 + b"\nMAIL FROM:<a@x>\nRCPT TO:<b@x>\nDATA\n" + long_line + b"\n.\n",
    )
    assert replies[1] == "500 5.5.2 mail.example.test Error: command too long"
    assert postdrop.requests[0][1] == long_line + b"\n"


def test_too_many_errors_end_the_session(postdrop: FakePostdrop) -> None:
    replies = dialogue(postdrop, b"BOGUS\n" * 5 + b"NOOP\n", smtpd_hard_error_limit=3)
    assert replies[-1] == "421 4.7.0 mail.example.test Error: too many errors"
    assert len(replies) == 1 + 3 + 1


def test_too_many_recipients(postdrop: FakePostdrop) -> None:
    replies = dialogue(
        postdrop, b"MAIL FROM:<a@x>\nRCPT TO:<b@x>\nRCPT TO:<c@x>\n", smtpd_recipient_limit=1
    )
    assert replies[-1] == "452 4.5.3 Error: too many recipients"


def test_split_command_argument() -> None:
    assert split_command_argument("FROM:<a@b> SIZE=10 BODY=8BITMIME", "FROM:") == (
        "<a@b>",
        ["SIZE=10", "BODY=8BITMIME"],
    )
    assert split_command_argument('from: <"a >b"@c>', "FROM:") == ('<"a >b"@c>', [])
    assert split_command_argument("FROM:a@b", "FROM:") == ("a@b", [])
    assert split_command_argument("FROM:<a@b>x", "FROM:") == (None, [])
    assert split_command_argument("TO:<a@b>", "FROM:") == (None, [])


def test_xtext() -> None:
    assert xtext_decode("a+2Bb+3D") == "a+b="
    assert xtext_decode("a+2") is None
    assert xtext_decode("a=b") is None
    assert decoded_orcpt("RFC822;a+40b") == "rfc822;a@b"
    assert decoded_orcpt("a@b") is None
