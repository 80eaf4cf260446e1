"""smtpd/sasl.py and the session's AUTH: PLAIN and LOGIN exchanges, the table backend, the
Dovecot protocol against a scripted auth server (a fake at the door; the real Dovecot is in
tests/process/test_smtpd_auth.py), when AUTH is offered, and the sender login checks."""

from __future__ import annotations

import base64
import logging
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.config import ConfigError
from sdmail.smtpd import replies
from sdmail.smtpd.passwords import sha_crypt
from sdmail.smtpd.sasl import (
    Challenge,
    Credentials,
    DovecotBackend,
    Exchange,
    Malformed,
    Peer,
)
from sdmail.smtpd.tls import TlsInfo

JOE_HASH = "{SHA512-CRYPT}" + sha_crypt(b"joe's secret", "Pepper", "6", 1000)
INFO = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth_world(world, extra: str = "") -> str:
    table = world.table("sasl_passwd", f"joe {JOE_HASH}\nbroken {{MD5}}x\n")
    return (
        f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = table\nsmtpd_sasl_path = {table}\n"
        + extra
    )


# -- the exchange ------------------------------------------------------------------------------
def test_plain_with_an_initial_response():
    step = Exchange("PLAIN").step(b64("\0joe\0pw"))
    assert step == Credentials("", "joe", "pw")


def test_plain_without_initial_response_gets_an_empty_challenge():
    exchange = Exchange("PLAIN")
    assert exchange.step(None) == Challenge("")
    assert exchange.step(b64("admin\0joe\0pw")) == Credentials("admin", "joe", "pw")


def test_login_asks_username_then_password():
    exchange = Exchange("LOGIN")
    assert exchange.step(None) == Challenge("VXNlcm5hbWU6")
    assert exchange.step(b64("joe")) == Challenge("UGFzc3dvcmQ6")
    assert exchange.step(b64("pw")) == Credentials("", "joe", "pw")


@pytest.mark.parametrize("response", ["not base64!", b64("joe\0pw"), b64("\0\0pw"), "YQ"])
def test_malformed_responses(response):
    assert isinstance(Exchange("PLAIN").step(response), Malformed)


@given(st.text(max_size=200))
def test_any_response_is_a_step_never_an_exception(text):
    assert isinstance(Exchange("PLAIN").step(text), Credentials | Challenge | Malformed)
    login = Exchange("LOGIN")
    login.step(None)
    assert isinstance(login.step(text), Credentials | Challenge | Malformed)


# -- AUTH in the session, with the table backend ---------------------------------------------
def test_auth_is_offered_after_starttls_and_before_enhancedstatuscodes(world, talk):
    session = world.session(auth_world(world))
    lines = session.command(b"EHLO client.example").lines
    assert lines[lines.index("ETRN") + 1] == "AUTH PLAIN LOGIN"
    assert lines[lines.index("AUTH PLAIN LOGIN") + 1] == "ENHANCEDSTATUSCODES"


def test_auth_plain_success_makes_esmtpa_and_permits_relay(world, talk):
    session = world.session(auth_world(world))
    assert talk(session, "EHLO client.example").startswith("250")
    assert talk(session, "MAIL FROM:<joe@example.org>") == "250 2.1.0 Ok"
    assert talk(session, "RCPT TO:<someone@remote.example>").startswith("454 4.7.1")
    assert talk(session, "RSET") == "250 2.0.0 Ok"
    response = b64("\0joe\0joe's secret")
    assert talk(session, f"AUTH PLAIN {response}") == "235 2.7.0 Authentication successful"
    assert (session.sasl_username, session.sasl_method) == ("joe", "PLAIN")
    assert session.received_protocol == "ESMTPA"
    assert talk(session, "MAIL FROM:<joe@example.org>") == "250 2.1.0 Ok"
    assert talk(session, "RCPT TO:<someone@remote.example>") == "250 2.1.5 Ok"
    assert talk(session, f"AUTH PLAIN {response}") == replies.MAIL_IN_PROGRESS.logged()
    assert talk(session, "RSET") == "250 2.0.0 Ok"
    assert talk(session, f"AUTH PLAIN {response}") == replies.ALREADY_AUTHENTICATED.logged()
    assert "auth=1/3" in session.disconnect_line()


def test_auth_login_through_challenges(world, talk):
    session = world.session(auth_world(world))
    assert talk(session, "EHLO client.example").startswith("250")
    assert talk(session, "AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert session.sasl_pending
    assert session.sasl_response(b64("joe").encode()).logged() == "334 UGFzc3dvcmQ6"
    assert session.sasl_response(b64("joe's secret").encode()) is replies.AUTHENTICATED
    assert not session.sasl_pending
    assert "auth=1 " in session.disconnect_line()


def test_a_wrong_password_is_535_logged_and_counted_as_an_error(world, talk, caplog):
    session = world.session(auth_world(world))
    assert talk(session, "EHLO client.example").startswith("250")
    with caplog.at_level(logging.WARNING, logger="sdmail.smtpd"):
        outcome = talk(session, f"AUTH PLAIN {b64(chr(0) + 'joe' + chr(0) + 'guess')}")
    assert outcome == "535 5.7.8 Error: authentication failed: authentication failure"
    assert session.sasl_username is None and session.error_count == 1
    assert "client.example[192.0.2.10]: SASL PLAIN authentication failed: " in caplog.text
    assert talk(session, f"AUTH PLAIN {b64(chr(0) + 'nobody' + chr(0) + 'x')}").startswith("535")
    assert session.error_count == 2


def test_abort_unknown_mechanism_and_syntax(world, talk):
    session = world.session(auth_world(world))
    assert talk(session, "EHLO client.example").startswith("250")
    assert talk(session, "AUTH PLAIN") == "334 "
    assert session.sasl_response(b"*") is replies.AUTH_ABORTED
    assert talk(session, "AUTH CRAM-MD5") == (
        "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
    )
    assert talk(session, "AUTH") == replies.AUTH_SYNTAX.logged()
    assert talk(session, "AUTH PLAIN !!!").startswith("535 5.7.8 Error: authentication failed: ")
    assert session.error_count == 4


def test_an_unreadable_hash_is_a_temporary_failure(world, talk):
    session = world.session(auth_world(world))
    assert talk(session, "EHLO client.example").startswith("250")
    outcome = talk(session, f"AUTH PLAIN {b64(chr(0) + 'broken' + chr(0) + 'x')}")
    assert outcome.startswith("454 4.7.0 Temporary authentication failure: ")


def test_auth_not_enabled(world, talk):
    session = world.session()
    assert "AUTH" not in " ".join(session.command(b"EHLO client.example").lines)
    assert talk(session, "AUTH PLAIN") == "503 5.5.1 Error: authentication not enabled"


@pytest.mark.parametrize(
    "extra",
    [
        "smtpd_tls_auth_only = yes\n",
        "smtpd_sasl_security_options = noanonymous, noplaintext\n"
        "smtpd_sasl_tls_security_options = noanonymous\n",
    ],
)
def test_auth_waits_for_tls_when_told_to(world, talk, extra):
    session = world.session(auth_world(world, extra))
    assert "AUTH PLAIN LOGIN" not in session.command(b"EHLO client.example").lines
    assert talk(session, "AUTH PLAIN") == replies.AUTH_NOT_ENABLED.logged()
    session.tls_started(INFO)
    assert "AUTH PLAIN LOGIN" in session.command(b"EHLO client.example").lines


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("smtpd_sasl_type = cyrus\n", "smtpd_sasl_type: unknown SASL type 'cyrus'"),
        ("smtpd_sasl_path =\n", "smtpd_sasl_path: empty"),
        ("smtpd_sasl_security_options = nothing\n", "unknown SASL security option 'nothing'"),
    ],
)
def test_configuration_errors(world, extra, message):
    with pytest.raises(ConfigError, match=message):
        world.service(auth_world(world) + extra)


# -- sender login maps -------------------------------------------------------------------------
def login_session(world, restriction: str):
    logins = world.table("logins", "joe@example.org joe\nshared@example.org joe, ann\n")
    extra = auth_world(
        world,
        f"smtpd_sender_login_maps = {logins}\nsmtpd_sender_restrictions = {restriction}\n",
    )
    return world.session(extra)


def authenticated(session, talk) -> None:
    assert talk(session, "EHLO client.example").startswith("250")
    response = b64("\0joe\0joe's secret")
    assert talk(session, f"AUTH PLAIN {response}").startswith("235")


def first_rcpt(session, talk, sender: str) -> str:
    assert talk(session, f"MAIL FROM:<{sender}>") == "250 2.1.0 Ok"
    outcome = talk(session, "RCPT TO:<postmaster@mail.example.test>")
    assert talk(session, "RSET") == "250 2.0.0 Ok"
    return outcome


@pytest.mark.parametrize(
    "case",
    [
        ("reject_sender_login_mismatch", "joe@example.org", True, "250 2.1.5 Ok"),
        ("reject_sender_login_mismatch", "shared@example.org", True, "250 2.1.5 Ok"),
        (
            "reject_sender_login_mismatch",
            "ann@example.org",
            True,
            "553 5.7.1 <ann@example.org>: Sender address rejected: not owned by user joe",
        ),
        (
            "reject_sender_login_mismatch",
            "joe@example.org",
            False,
            "553 5.7.1 <joe@example.org>: Sender address rejected: not logged in",
        ),
        ("reject_sender_login_mismatch", "ann@example.org", False, "250 2.1.5 Ok"),
        ("reject_sender_login_mismatch", "", True, "250 2.1.5 Ok"),
        ("reject_known_sender_login_mismatch", "ann@example.org", True, "250 2.1.5 Ok"),
        ("reject_authenticated_sender_login_mismatch", "joe@example.org", False, "250 2.1.5 Ok"),
        ("reject_unauthenticated_sender_login_mismatch", "ann@example.org", True, "250 2.1.5 Ok"),
        (
            "reject_unauthenticated_sender_login_mismatch",
            "shared@example.org",
            False,
            "553 5.7.1 <shared@example.org>: Sender address rejected: not logged in",
        ),
    ],
)
def test_sender_login_mismatch(world, talk, case):
    restriction, sender, logged_in, expected = case
    session = login_session(world, restriction)
    if logged_in:
        authenticated(session, talk)
    else:
        assert talk(session, "EHLO client.example").startswith("250")
    assert first_rcpt(session, talk, sender) == expected


# -- the Dovecot protocol, against a scripted auth server --------------------------------------
class ScriptedDovecot:
    """A UNIX socket that answers like Dovecot's auth server would, with ANSWER to AUTH."""

    def __init__(self, path: Path, answer: str | None, handshake: str | None = None) -> None:
        self.path = path
        self.answer = answer
        self.handshake = handshake or (
            "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
            "SPID\t1\nCUID\t7\nCOOKIE\t0123\nDONE\n"
        )
        self.received: list[str] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection, connection.makefile("rwb") as stream:
            stream.write(self.handshake.encode())
            stream.flush()
            while True:
                line = stream.readline()
                if not line:
                    return
                self.received.append(line.decode())
                if line.startswith(b"AUTH\t"):
                    if self.answer is None:
                        return
                    stream.write(self.answer.encode())
                    stream.flush()

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


CREDENTIALS = Credentials("", "joe", "pw")
UNAVAILABLE = (False, "", "the authentication server is not available", True)
PEER = Peer("192.0.2.10", "198.51.100.1", secured=True)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("OK\t1\tuser=joe@example.org\n", (True, "joe@example.org", "", False)),
        ("OK\t1\n", (True, "joe", "", False)),
        ("FAIL\t1\tuser=joe\n", (False, "", "authentication failure", False)),
        ("FAIL\t1\treason=Password\x01texpired\n", (False, "", "Password\texpired", False)),
        ("FAIL\t1\ttemp\treason=backend down\n", (False, "", "backend down", True)),
        ("CONT\t1\t\n", UNAVAILABLE),
        (None, UNAVAILABLE),
    ],
)
def test_dovecot_answers(tmp_path, answer, expected):
    server = ScriptedDovecot(tmp_path / "auth", answer)
    checked = DovecotBackend(str(tmp_path / "auth"), "smtp", 5).check(CREDENTIALS, PEER)
    server.close()
    assert (checked.ok, checked.username, checked.reason, checked.temporary) == expected
    assert server.received[0] == "VERSION\t1\t1\n"
    assert server.received[1].startswith("CPID\t")
    request = server.received[2].rstrip("\n").split("\t")
    assert request == [
        "AUTH",
        "1",
        "PLAIN",
        "service=smtp",
        "nologin",
        "lip=198.51.100.1",
        "rip=192.0.2.10",
        "secured",
        "resp=" + b64("\0joe\0pw"),
    ]


def test_dovecot_of_another_major_version_or_without_plain_is_unavailable(tmp_path):
    for handshake in ("VERSION\t2\t0\nDONE\n", "VERSION\t1\t2\nMECH\tGSSAPI\nDONE\n"):
        path = tmp_path / "auth"
        path.unlink(missing_ok=True)
        server = ScriptedDovecot(path, "OK\t1\n", handshake)
        checked = DovecotBackend(str(path), "smtp", 5).check(CREDENTIALS, PEER)
        server.listener.close()
        assert (checked.ok, checked.temporary) == (False, True)


def test_no_dovecot_socket_is_a_temporary_failure_and_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sdmail.smtpd"):
        checked = DovecotBackend(str(tmp_path / "absent"), "smtp", 5).check(CREDENTIALS, PEER)
    assert (checked.ok, checked.temporary) == (False, True)
    assert f"SASL: connect to {tmp_path / 'absent'} failed: No such file or directory" in (
        caplog.text
    )


def test_received_comments_follow_the_two_parameters(world, talk):
    extra = "smtpd_tls_received_header = yes\nsmtpd_sasl_authenticated_header = yes\n"
    session = world.session(auth_world(world, extra))
    assert session.received_comments() == ()
    authenticated(session, talk)
    assert session.received_comments() == ("(Authenticated sender: joe)",)
    plain = world.session(auth_world(world))
    authenticated(plain, talk)
    assert plain.received_comments() == ()
