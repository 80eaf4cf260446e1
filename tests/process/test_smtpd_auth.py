"""smtpd's AUTH as clients meet it: against a real Dovecot auth server (Debian's dovecot-core,
run here with a configuration of the test's own) and against a table of hashes; the
submission listener as units/sdmail-smtpd.service configures it; relaying for logged-in
clients, sender login maps, failures counted as errors, the log lines."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sdmail.smtpd.passwords import sha_crypt
from tests.peers.certs import any_certificate_client

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "units" / "sdmail-smtpd.service"
REMOTE = "friend@remote.example"


@pytest.fixture
def dovecot(tmp_path):
    """A real Dovecot whose auth server knows joe (password `joe's secret`); its socket path."""
    if shutil.which("dovecot") is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-core)")
    root = Path(tempfile_dir(tmp_path))
    users = root / "users"
    users.write_text("joe:{SHA512-CRYPT}" + sha_crypt(b"joe's secret", "DoveSalt") + "\n")
    socket_path = root / "auth"
    conf = root / "dovecot.conf"
    conf.write_text(
        f"base_dir = {root}/run\nstate_dir = {root}/state\nlog_path = {root}/dovecot.log\n"
        "protocols =\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n"
        "auth_mechanisms = plain login\nauth_failure_delay = 0\n"
        f"passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n"
        "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}\n"
        f"service auth {{\n  unix_listener {socket_path} {{\n    mode = 0666\n  }}\n}}\n"
    )
    process = subprocess.Popen(
        ["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dovecot did not start: {process.stderr.read()!r}")
            time.sleep(0.05)
        yield socket_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


def tempfile_dir(tmp_path: Path) -> Path:
    """A directory Dovecot's unprivileged auth processes can reach (pytest's are 0700)."""
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"sdmail-dovecot-{os.getpid()}-{id(tmp_path)}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o755)
    return root


def unit_overrides() -> list[str]:
    """The -o arguments of sdmail-smtpd.service's ExecStart (the submission listener's)."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            return [words[i + 1] for i, word in enumerate(words) if word == "-o"]
    raise AssertionError("no ExecStart= in the unit")


def start(mailsys, main_cf: str, tcp=("smtpd",), args=()):
    mailsys.write_main_cf(main_cf)
    aliases = mailsys.config_dir / "aliases"
    aliases.write_text("postmaster: root\n")
    built = mailsys.run("postalias", str(aliases))
    assert built.returncode == 0, built.stderr
    return mailsys.start("smtpd", tcp=tcp, args=tuple(args))


def tls_lines(certificate) -> str:
    cert, key = certificate
    return f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"


def swaks(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.example",
            "--from", "joe@example.org", "--to", REMOTE, *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


@needs_swaks
def test_submission_listener_of_the_unit_relays_for_a_dovecot_user_over_tls(
    mailsys, dovecot, certificate
):
    """Both listeners as the unit file runs them: port 25 offers no AUTH, submission offers it
    after STARTTLS only, and relays for joe once Dovecot said yes."""
    start(
        mailsys,
        tls_lines(certificate) + f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {dovecot}\n",
        tcp=("smtpd", "submission"),
        args=[arg for override in unit_overrides() for arg in ("-o", override)],
    )
    smtp_port, submission_port = mailsys.tcp_ports["smtpd"], mailsys.tcp_ports["submission"]
    with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="client.example") as client:
        client.ehlo()
        assert client.has_extn("pipelining") and not client.has_extn("auth")
    with smtplib.SMTP("127.0.0.1", submission_port, local_hostname="client.example") as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert client.mail("joe@example.org") == (
            530,
            b"5.7.0 Must issue a STARTTLS command first",
        )
        client.starttls(context=any_certificate_client())
        client.ehlo()
        assert client.esmtp_features["auth"] == " PLAIN LOGIN"
    done = swaks(submission_port, "--tls", "--auth", "PLAIN", "--auth-user", "joe",
                 "--auth-password", "joe's secret")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<~  235 2.7.0 Authentication successful" in done.stdout
    ((queue_id, envelope, content),) = mailsys.queued()
    assert [r.address for r in envelope.recipients] == [REMOTE]
    assert b"\tby mail.example.test (sdmail) with ESMTPSA id " + queue_id.encode() in content
    assert (envelope.client.sasl_method, envelope.client.sasl_username) == ("PLAIN", "joe")
    mailsys.wait_for(lambda: "auth=1" in mailsys.log("smtpd"), "the disconnect line")
    log = mailsys.log("smtpd")
    assert f"{queue_id}: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=joe" in log
    assert "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8" in log


@needs_swaks
def test_a_wrong_dovecot_password_is_535_and_nothing_is_relayed(mailsys, dovecot, certificate):
    start(
        mailsys,
        tls_lines(certificate)
        + "smtpd_tls_security_level = may\nsmtpd_sasl_auth_enable = yes\n"
        + f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {dovecot}\n",
    )
    port = mailsys.tcp_ports["smtpd"]
    done = swaks(port, "--tls", "--auth", "LOGIN", "--auth-user", "joe",
                 "--auth-password", "guess")  # fmt: skip
    assert done.returncode != 0
    assert "<~* 535 5.7.8 Error: authentication failed: authentication failure" in done.stdout
    assert mailsys.queued() == []
    mailsys.wait_for(
        lambda: "SASL LOGIN authentication failed" in mailsys.log("smtpd"), "the warning"
    )
    assert "warning: localhost[127.0.0.1]: SASL LOGIN authentication failed: " in mailsys.log(
        "smtpd"
    )


def test_without_tls_auth_only_auth_works_in_plaintext_against_dovecot(mailsys, dovecot):
    start(
        mailsys,
        f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {dovecot}\n",
    )
    with smtplib.SMTP(
        "127.0.0.1", mailsys.tcp_ports["smtpd"], local_hostname="client.example"
    ) as client:
        client.login("joe", "joe's secret")
        assert client.sendmail("joe@example.org", [REMOTE], b"Subject: plain\r\n\r\n") == {}
    ((_, _, content),) = mailsys.queued()
    assert b"with ESMTPA id" in content


def table_main_cf(mailsys, certificate) -> str:
    passwords = mailsys.config_dir / "sasl_passwd"
    passwords.write_text("joe {SHA512-CRYPT}" + sha_crypt(b"joe's secret", "TableSalt") + "\n")
    logins = mailsys.config_dir / "logins"
    logins.write_text("joe@example.org joe\nann@example.org ann\n")
    return (
        tls_lines(certificate)
        + "smtpd_tls_security_level = encrypt\nsmtpd_sasl_auth_enable = yes\n"
        + f"smtpd_sasl_type = table\nsmtpd_sasl_path = texthash:{passwords}\n"
        + f"smtpd_sender_login_maps = texthash:{logins}\n"
        + "smtpd_sender_restrictions = reject_sender_login_mismatch\n"
        + "smtpd_relay_restrictions = permit_sasl_authenticated, reject\n"
        + "smtpd_hard_error_limit = 3\n"
    )


def test_table_backend_relays_and_sender_login_maps_hold(mailsys, certificate):
    start(mailsys, table_main_cf(mailsys, certificate))
    port = mailsys.tcp_ports["smtpd"]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as client:
        client.starttls(context=any_certificate_client())
        client.login("joe", "joe's secret")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("ann@example.org", [REMOTE], b"Subject: not mine\r\n\r\n")
        assert refused.value.recipients[REMOTE] == (
            553,
            b"5.7.1 <ann@example.org>: Sender address rejected: not owned by user joe",
        )
        client.rset()
        assert client.sendmail("joe@example.org", [REMOTE], b"Subject: mine\r\n\r\n") == {}
    assert len(mailsys.queued()) == 1
    mailsys.wait_for(lambda: "not owned by user joe" in mailsys.log("smtpd"), "the reject line")
    assert (
        "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 553 5.7.1 <ann@example.org>: Sender "
        "address rejected: not owned by user joe; from=<ann@example.org> to=<friend@remote."
        "example> proto=ESMTP helo=<client.example>" in mailsys.log("smtpd")
    )


def test_failed_auth_counts_toward_the_hard_error_limit(mailsys, certificate):
    start(mailsys, table_main_cf(mailsys, certificate))
    sock = socket.create_connection(("127.0.0.1", mailsys.tcp_ports["smtpd"]), timeout=10)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    sock.sendall(b"STARTTLS\r\n")
    assert reader.readline() == b"220 2.0.0 Ready to start TLS\r\n"
    reader.close()
    tls = any_certificate_client().wrap_socket(sock, server_hostname="mail.example.test")
    reader = tls.makefile("rb")
    tls.sendall(b"EHLO client.example\r\n")
    while not reader.readline().startswith(b"250 "):
        pass
    wrong = base64.b64encode(b"\0joe\0wrong").decode()
    replies = []
    for _ in range(3):
        tls.sendall(f"AUTH PLAIN {wrong}\r\n".encode())
        replies.append(reader.readline().decode().rstrip())
    assert replies == ["535 5.7.8 Error: authentication failed: authentication failure"] * 3
    assert reader.readline() == b"421 4.7.0 mail.example.test Error: too many errors\r\n"
    reader.close()
    tls.close()
    mailsys.wait_for(lambda: "auth=0/3" in mailsys.log("smtpd"), "the disconnect line")
