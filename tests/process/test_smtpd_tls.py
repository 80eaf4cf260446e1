"""smtpd's STARTTLS as clients meet it: offered or not, required, the handshake, what a
client pipelines after STARTTLS (CVE-2024-34083), handshakes that fail half-way, Received:
and the logs; under PyPI's aiosmtpd and Debian's (python3-aiosmtpd 1.4.3+deb12u1)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import sys

import pytest

from tests.peers.certs import any_certificate_client
from tests.peers.interpreters import interpreters

INTERPRETERS = interpreters("aiosmtpd")

POSTMASTER = "postmaster@mail.example.test"


class Smtpd:
    def __init__(self, mailsys, interpreter: str, extra: str) -> None:
        self.mailsys = mailsys
        mailsys.write_main_cf(extra)
        aliases = mailsys.config_dir / "aliases"
        aliases.write_text("postmaster: root\n")
        built = mailsys.run("postalias", str(aliases))
        assert built.returncode == 0, built.stderr
        self.process = mailsys.start("smtpd", tcp=("smtpd",), interpreter=interpreter)
        self.port = mailsys.tcp_ports["smtpd"]

    def log(self) -> str:
        return self.mailsys.log("smtpd")

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        self.mailsys.wait_for(lambda: text in self.log(), f"{text!r} in the log", timeout)

    def queued(self) -> list:
        return self.mailsys.queued()

    def connect(self) -> Line:
        return Line(socket.create_connection(("127.0.0.1", self.port), timeout=10))


class Line:
    """A raw SMTP client whose socket can be wrapped in TLS halfway."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.pending = b""
        self.greeting = self.reply()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _line(self) -> bytes:
        while b"\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed; pending {self.pending!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> str:
        lines = []
        while True:
            line = self._line().decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.send(line + "\r\n")
        return self.reply()

    def start_tls(self) -> None:
        assert self.pending == b"", self.pending
        self.sock = any_certificate_client().wrap_socket(
            self.sock, server_hostname="mail.example.test"
        )

    def closed(self) -> bool:
        try:
            return self.sock.recv(100) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=INTERPRETERS)
def tls_smtpd(request, mailsys, certificate):
    cert, key = certificate

    def start(extra: str = "", level: str = "may") -> Smtpd:
        settings = (
            f"smtpd_tls_security_level = {level}\n"
            f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
        )
        return Smtpd(mailsys, request.param, settings + extra)

    return start


def test_starttls_is_offered_then_mail_goes_over_tls_and_received_says_esmtps(tls_smtpd):
    smtpd = tls_smtpd("smtpd_tls_loglevel = 1\n")
    with smtplib.SMTP("127.0.0.1", smtpd.port, local_hostname="client.example") as client:
        code, text = client.ehlo()
        keywords = text.decode().splitlines()[1:]
        assert keywords[:5] == ["PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS"]
        assert client.starttls(context=any_certificate_client()) == (
            220,
            b"2.0.0 Ready to start TLS",
        )
        code, text = client.ehlo()
        assert code == 250 and "STARTTLS" not in text.decode()
        client.sendmail("sender@example.org", [POSTMASTER], b"Subject: tls\r\n\r\nsecret\r\n")
    ((queue_id, envelope, content),) = smtpd.queued()
    assert b"\tby mail.example.test (sdmail) with ESMTPS id " + queue_id.encode() in content
    assert envelope.client.log_protocol_name == "ESMTPS"
    smtpd.wait_for_log("disconnect from")
    log = smtpd.log()
    established = "Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3"
    assert established + " with cipher" in log
    assert "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7" in log


def test_encrypt_refuses_mail_before_starttls_and_takes_it_after(tls_smtpd):
    smtpd = tls_smtpd(level="encrypt")
    line = smtpd.connect()
    assert line.command("EHLO client.example").startswith("250-mail.example.test")
    assert line.command("MAIL FROM:<sender@example.org>") == (
        "530 5.7.0 Must issue a STARTTLS command first"
    )
    assert line.command("VRFY postmaster") == "530 5.7.0 Must issue a STARTTLS command first"
    assert line.command("STARTTLS") == "220 2.0.0 Ready to start TLS"
    line.start_tls()
    assert line.command("MAIL FROM:<sender@example.org>") == "250 2.1.0 Ok"
    assert line.command(f"RCPT TO:<{POSTMASTER}>") == "250 2.1.5 Ok"
    assert line.command("STARTTLS") == "554 5.5.1 Error: TLS already active"
    assert line.command("QUIT") == "221 2.0.0 Bye"
    line.close()


def test_starttls_in_a_transaction_or_with_an_argument_is_refused(tls_smtpd):
    smtpd = tls_smtpd()
    line = smtpd.connect()
    assert line.command("EHLO client.example").startswith("250")
    assert line.command("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
    assert line.command("MAIL FROM:<sender@example.org>") == "250 2.1.0 Ok"
    assert line.command("STARTTLS") == "503 5.5.1 Error: MAIL transaction in progress"
    line.close()


def test_without_a_security_level_starttls_is_not_a_command(mailsys, certificate):
    cert, key = certificate
    smtpd = Smtpd(
        mailsys, sys.executable, f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
    )
    line = smtpd.connect()
    assert "STARTTLS" not in line.command("EHLO client.example")
    assert line.command("STARTTLS") == "502 5.5.1 Error: command not implemented"
    line.close()


def test_a_certificate_that_does_not_load_means_no_starttls_and_a_warning(mailsys, tmp_path):
    missing = tmp_path / "nothing.pem"
    smtpd = Smtpd(
        mailsys,
        sys.executable,
        "smtpd_tls_security_level = may\n"
        f"smtpd_tls_cert_file = {missing}\nsmtpd_tls_key_file = {missing}\n",
    )
    line = smtpd.connect()
    assert "STARTTLS" not in line.command("EHLO client.example")
    assert line.command("STARTTLS") == "454 4.7.0 TLS not available due to local problem"
    assert line.command("MAIL FROM:<sender@example.org>") == "250 2.1.0 Ok"
    line.close()
    assert f"cannot load the TLS certificate {missing} and key {missing}" in smtpd.log()


def test_commands_pipelined_with_starttls_never_run_after_the_handshake(tls_smtpd):
    """CVE-2024-34083: plaintext sent after STARTTLS in the same packet is thrown away.

    With improper pipelining let through (smtpd_forbid_unauth_pipelining = no), the MAIL and
    RCPT below sit in the read buffer while the handshake runs; were they kept, the first
    reply over TLS would be MAIL's 250 2.1.0 and the message would reach the queue."""
    smtpd = tls_smtpd("smtpd_forbid_unauth_pipelining = no\n")
    line = smtpd.connect()
    assert line.command("EHLO client.example").startswith("250")
    line.send(
        "STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n"
        f"RCPT TO:<{POSTMASTER}>\r\nDATA\r\nSubject: injected\r\n\r\n.\r\n"
    )
    assert line.reply() == "220 2.0.0 Ready to start TLS"
    line.start_tls()
    assert line.command("EHLO client.example").startswith("250-mail.example.test")
    assert line.command(f"RCPT TO:<{POSTMASTER}>") == "503 5.5.1 Error: need MAIL command"
    assert line.command("QUIT") == "221 2.0.0 Bye"
    line.close()
    smtpd.wait_for_log("disconnect from")
    assert smtpd.queued() == []
    assert "improper command pipelining after STARTTLS from localhost[127.0.0.1]" in smtpd.log()


@pytest.mark.parametrize(
    "half_way",
    [
        pytest.param(b"EHLO plaintext.example\r\n", id="plaintext-instead-of-tls"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="half-a-client-hello"),
    ],
)
def test_a_handshake_that_fails_half_way_ends_that_session_only(tls_smtpd, half_way):
    smtpd = tls_smtpd()
    line = smtpd.connect()
    assert line.command("EHLO client.example").startswith("250")
    assert line.command("STARTTLS") == "220 2.0.0 Ready to start TLS"
    line.send(half_way)
    line.sock.shutdown(socket.SHUT_WR)
    assert line.closed()
    line.close()
    smtpd.wait_for_log("lost connection after STARTTLS from localhost[127.0.0.1]")
    assert "SSL_accept error from localhost[127.0.0.1]: " in smtpd.log()
    with smtplib.SMTP("127.0.0.1", smtpd.port, local_hostname="client.example") as client:
        client.starttls(context=any_certificate_client())
        assert client.sendmail("sender@example.org", [POSTMASTER], b"Subject: next\r\n\r\n") == {}
    assert len(smtpd.queued()) == 1
    assert "starttls=0/1" in smtpd.log()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_sends_over_starttls(tls_smtpd):
    smtpd = tls_smtpd(level="encrypt")
    done = subprocess.run(
        [
            "swaks", "--server", f"127.0.0.1:{smtpd.port}", "--tls", "--helo", "client.example",
            "--from", "sender@example.org", "--to", POSTMASTER, "--header", "Subject: swaks tls",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<~  250 2.0.0 Ok: queued as " in done.stdout
    ((_, _, content),) = smtpd.queued()
    assert b"with ESMTPS id" in content and b"Subject: swaks tls" in content
