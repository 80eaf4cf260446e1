"""Received: of mail that came over STARTTLS and AUTH, as the queue file holds it.

With smtpd_tls_received_header and smtpd_sasl_authenticated_header, Postfix's smtpd
writes comment lines between Received:'s `from` and `by` lines; without them, none.
smtpd hands the lines to the cleanup library, which writes the header.
"""

from __future__ import annotations

import os
import re
import smtplib

from sdmail.core.qfile import decode
from sdmail.smtpd.passwords import sha_crypt
from tests.peers.certs import any_certificate_client

HOST = "mail.example.test"
RECIPIENT = f"postmaster@{HOST}"


def start_smtpd(mailsys, certificate, extra: str) -> int:
    cert, key = certificate
    passwords = mailsys.config_dir / "sasl_passwd"
    passwords.write_text("joe {SHA512-CRYPT}" + sha_crypt(b"joe's secret", "TableSalt") + "\n")
    mailsys.write_main_cf(
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\n"
        f"smtpd_tls_key_file = {key}\nsmtpd_sasl_auth_enable = yes\n"
        f"smtpd_sasl_type = table\nsmtpd_sasl_path = texthash:{passwords}\n" + extra
    )
    aliases = mailsys.config_dir / "aliases"
    aliases.write_text("postmaster: root\n")
    assert mailsys.run("postalias", str(aliases)).returncode == 0
    mailsys.start("smtpd", tcp=("smtpd",))
    return mailsys.tcp_ports["smtpd"]


def send_over_tls_as_joe(port: int) -> None:
    context = any_certificate_client()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as client:
        client.starttls(context=context)
        client.login("joe", "joe's secret")
        assert client.sendmail("joe@example.org", [RECIPIENT], b"Subject: hi\r\n\r\nbody\r\n") == {}


def received(mailsys) -> tuple[str, list[str]]:
    """The queue ID and the Received: lines of the one message in incoming/."""
    (name,) = os.listdir(mailsys.queue_dir / "incoming")
    data = (mailsys.queue_dir / "incoming" / name).read_bytes()
    content = decode(data).content_from(data).decode()
    header = content.split("\nSubject: ", 1)[0]
    assert header.startswith("Received: ")
    return name, header.split("\n")


def test_tls_and_sasl_comments_sit_between_from_and_by(mailsys, certificate) -> None:
    port = start_smtpd(
        mailsys,
        certificate,
        "smtpd_tls_received_header = yes\nsmtpd_sasl_authenticated_header = yes\n",
    )
    send_over_tls_as_joe(port)
    queue_id, lines = received(mailsys)
    assert lines[0] == "Received: from client.example (localhost [127.0.0.1])"
    assert re.fullmatch(r"\t\(using TLSv1\.[23] with cipher \S+ \((\d+)/\1 bits\)\)", lines[1])
    assert lines[2:5] == [
        "\t(No client certificate requested)",
        "\t(Authenticated sender: joe)",
        f"\tby {HOST} (sdmail) with ESMTPSA id {queue_id}",
    ]
    assert lines[5].startswith(f"\tfor <{RECIPIENT}>; ")
    assert len(lines) == 6


def test_without_the_two_parameters_received_has_no_comments(mailsys, certificate) -> None:
    port = start_smtpd(mailsys, certificate, "")
    send_over_tls_as_joe(port)
    queue_id, lines = received(mailsys)
    assert lines[:2] == [
        "Received: from client.example (localhost [127.0.0.1])",
        f"\tby {HOST} (sdmail) with ESMTPSA id {queue_id}",
    ]
