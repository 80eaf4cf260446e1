"""smtpd/tls.py and the session's STARTTLS verb: levels, certificates that load or not,
what the session forgets after the handshake, and how TLS shows in Received: and logs."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from sdmail.core.config import ConfigError
from sdmail.smtpd import replies
from sdmail.smtpd.tls import TlsInfo, TlsLevel


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pair")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=mail.example.test", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_lines(level: str, cert: Path, key: Path) -> str:
    return (
        f"smtpd_tls_security_level = {level}\n"
        f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
    )


INFO = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)


@pytest.mark.parametrize(
    ("text", "level", "offered"),
    [("", TlsLevel.NONE, False), ("may", TlsLevel.MAY, True), ("Encrypt", TlsLevel.ENCRYPT, True)],
)
def test_security_levels(world, pair, text, level, offered):
    tls = world.service(tls_lines(text, *pair)).tls
    assert (tls.level, tls.offered, tls.required) == (level, offered, level is TlsLevel.ENCRYPT)


def test_an_unknown_security_level_is_a_configuration_error(world, pair):
    with pytest.raises(ConfigError, match="smtpd_tls_security_level: unknown TLS security level"):
        world.service(tls_lines("dane", *pair))


def test_a_pair_that_does_not_load_is_logged_and_starttls_not_offered(world, pair, caplog):
    cert, _ = pair
    with caplog.at_level(logging.WARNING, logger="sdmail.smtpd"):
        tls = world.service(tls_lines("encrypt", cert, cert)).tls
    assert tls.context is None and not tls.offered and tls.required
    assert f"cannot load the TLS certificate {cert} and key {cert}" in caplog.text


def test_ehlo_offers_starttls_after_vrfy_until_tls_is_active(world, pair, talk):
    session = world.session(tls_lines("may", *pair))
    ehlo = session.command(b"EHLO client.example")
    assert ehlo.lines[1:6] == ("PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS")
    assert session.command(b"STARTTLS") is replies.READY_TO_START_TLS
    session.tls_started(INFO)
    assert "STARTTLS" not in session.command(b"EHLO client.example").lines
    assert talk(session, "STARTTLS") == "554 5.5.1 Error: TLS already active"


def test_the_handshake_makes_the_session_forget_helo_and_transaction(world, pair, talk):
    session = world.session(tls_lines("may", *pair) + "smtpd_helo_required = yes\n")
    assert talk(session, "EHLO client.example").startswith("250")
    session.tls_started(INFO)
    assert (session.helo_name, session.esmtp, session.pipelining) == (None, False, False)
    assert talk(session, "MAIL FROM:<a@example.org>") == "503 5.5.1 Error: send HELO/EHLO first"


def test_encrypt_refuses_mail_and_vrfy_until_tls(world, pair, talk):
    session = world.session(tls_lines("encrypt", *pair))
    assert talk(session, "EHLO client.example").startswith("250")
    assert talk(session, "MAIL FROM:<a@example.org>") == replies.STARTTLS_FIRST.logged()
    assert talk(session, "VRFY postmaster") == replies.STARTTLS_FIRST.logged()
    session.tls_started(INFO)
    assert talk(session, "EHLO client.example").startswith("250")
    assert talk(session, "MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"


def test_received_protocol_gains_s_over_tls_and_logs_keep_esmtp(world, pair, talk):
    session = world.session(tls_lines("may", *pair))
    session.tls_started(INFO)
    assert talk(session, "EHLO client.example").startswith("250")
    assert (session.protocol, session.received_protocol) == ("ESMTP", "ESMTPS")
    assert talk(session, "HELO client.example").startswith("250")
    assert session.received_protocol == "SMTP"


def test_tls_summary_and_received_comment_are_postfix_shaped():
    assert INFO.summary() == "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    assert INFO.received_comment() == (
        "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))"
    )
    assert TlsInfo.of(None).summary() == "unknown with cipher unknown (0/0 bits)"


def test_received_comment_only_with_smtpd_tls_received_header(world, pair):
    plain = world.session(tls_lines("may", *pair))
    plain.tls_started(INFO)
    assert plain.received_comments() == ()
    shown = world.session(tls_lines("may", *pair) + "smtpd_tls_received_header = yes\n")
    shown.tls_started(INFO)
    assert shown.received_comments() == (
        INFO.received_comment(),
        "(No client certificate requested)",
    )
