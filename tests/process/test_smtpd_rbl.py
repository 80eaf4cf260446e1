"""smtpd's DNS blocklists and domain checks against a real DNS server: a small authoritative
server (dnspython's message codec on a UDP socket) on a loopback address of its own, port 53,
named in a resolv.conf that SDMAIL_RESOLV_CONF points smtpd at. The resolver is never mocked.
"""

from __future__ import annotations

import random
import smtplib
import socket
import sys
import threading
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from sdmail.core.dns import DnsError, Failure
from sdmail.smtpd.dnsbl import Dns, parse_blocklist
from tests.peers.interpreters import interpreters

INTERPRETERS = interpreters("aiosmtpd", "dns.asyncresolver")

POSTMASTER = "postmaster@mail.example.test"
RECORDS = {
    ("1.0.0.127.zen.test.", "A"): ["127.0.0.2"],
    ("1.0.0.127.zen.test.", "TXT"): ['"Listed for testing"'],
    ("1.0.0.127.quiet.test.", "A"): ["127.0.0.4"],
    ("spam.example.dbl.test.", "A"): ["127.0.1.2"],
    ("good.example.", "MX"): ["10 mx.good.example."],
    ("nullmx.example.", "MX"): ["0 ."],
}


class TinyDns:
    """An authoritative server for RECORDS ((name, type) -> rdata texts); NXDOMAIN else."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = records
        self.names = {name for name, _ in records}
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            self.address = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError as exc:
                error = exc
        else:
            self.sock.close()
            pytest.skip(f"cannot bind a DNS server to port 53 of a loopback address: {error}")
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if (name, rdtype) in self.records:
                response.answer.append(
                    dns.rrset.from_text(name, 60, "IN", rdtype, *self.records[(name, rdtype)])
                )
            elif name not in self.names:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def resolv_conf(self, folder: Path) -> Path:
        path = folder / "resolv.conf"
        path.write_text(f"nameserver {self.address}\noptions timeout:2 attempts:1\n")
        return path

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def tiny_dns(tmp_path, monkeypatch):
    server = TinyDns(RECORDS)
    monkeypatch.setenv("SDMAIL_RESOLV_CONF", str(server.resolv_conf(tmp_path)))
    yield server
    server.stop()


def test_the_resolver_reads_the_resolv_conf_it_is_given(tiny_dns, tmp_path):
    resolver = Dns(resolv_conf=str(tiny_dns.resolv_conf(tmp_path)))
    assert resolver.addresses("1.0.0.127.zen.test", ipv6=False).addresses == ("127.0.0.2",)
    assert resolver.txt("1.0.0.127.zen.test").records == ("Listed for testing",)
    with pytest.raises(DnsError) as missing:
        resolver.addresses("nothing.test", ipv6=False)
    assert missing.value.failure is Failure.NOT_FOUND
    resolver.addresses("1.0.0.127.zen.test", ipv6=False)
    assert tiny_dns.queries.count(("1.0.0.127.zen.test.", "A")) == 1  # the cache answered


def start(mailsys, interpreter: str, restrictions: str):
    mailsys.write_main_cf(f"smtpd_recipient_restrictions = {restrictions}\n")
    aliases = mailsys.config_dir / "aliases"
    aliases.write_text("postmaster: root\n")
    assert mailsys.run("postalias", str(aliases)).returncode == 0
    mailsys.start("smtpd", tcp=("smtpd",), interpreter=interpreter)
    return mailsys.tcp_ports["smtpd"]


def rcpt(port: int, sender: str = "someone@example.org") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as client:
        client.ehlo()
        assert client.mail(sender)[0] == 250
        return client.rcpt(POSTMASTER)


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_a_listed_client_is_refused_with_postfixs_reply_and_the_txt_reason(
    mailsys, tiny_dns, interpreter
):
    port = start(mailsys, interpreter, "reject_rbl_client zen.test")
    assert rcpt(port) == (
        554,
        b"5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.test; "
        b"Listed for testing",
    )
    mailsys.wait_for(lambda: "NOQUEUE: reject" in mailsys.log("smtpd"), "the reject line")
    assert (
        "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 Service unavailable; "
        "Client host [127.0.0.1] blocked using zen.test; Listed for testing; "
        f"from=<someone@example.org> to=<{POSTMASTER}> proto=ESMTP helo=<client.example>"
    ) in mailsys.log("smtpd")


def test_an_answer_outside_the_filter_or_no_listing_lets_the_client_through(mailsys, tiny_dns):
    port = start(
        mailsys,
        sys.executable,
        "reject_rbl_client zen.test=127.0.0.[3..5;9], reject_rbl_client absent.test",
    )
    assert rcpt(port) == (250, b"2.1.5 Ok")
    assert ("1.0.0.127.absent.test.", "A") in tiny_dns.queries


def test_a_filter_that_matches_refuses_without_a_reason(mailsys, tiny_dns):
    port = start(mailsys, sys.executable, "reject_rbl_client quiet.test=127.0.0.[2..4]")
    assert rcpt(port) == (
        554,
        b"5.7.1 Service unavailable; Client host [127.0.0.1] blocked using quiet.test",
    )


def test_reject_rhsbl_sender(mailsys, tiny_dns):
    port = start(mailsys, sys.executable, "reject_rhsbl_sender dbl.test")
    assert rcpt(port, "joe@spam.example") == (
        554,
        b"5.7.1 Service unavailable; Sender address [spam.example] blocked using dbl.test",
    )
    assert rcpt(port, "joe@good.example") == (250, b"2.1.5 Ok")


def test_unknown_and_null_mx_sender_domains_through_the_same_resolver(mailsys, tiny_dns):
    port = start(mailsys, sys.executable, "reject_unknown_sender_domain")
    assert rcpt(port, "joe@good.example") == (250, b"2.1.5 Ok")
    assert rcpt(port, "joe@nowhere.example") == (
        450,
        b"4.1.8 <joe@nowhere.example>: Sender address rejected: Domain not found",
    )
    assert rcpt(port, "joe@nullmx.example") == (
        556,
        b"5.1.10 <joe@nullmx.example>: Sender address rejected: Domain nullmx.example does "
        b"not accept mail (nullMX)",
    )


def test_a_malformed_blocklist_stops_the_start_with_ex_config(mailsys, tiny_dns):
    mailsys.write_main_cf("smtpd_client_restrictions = reject_rbl_client zen.test=127.0.0\n")
    process = mailsys.start("smtpd", tcp=("smtpd",))
    assert process.wait(10) == 78
    assert "smtpd_client_restrictions: reject_rbl_client: bad address pattern" in mailsys.log(
        "smtpd"
    )
    assert parse_blocklist("zen.test").zone == "zen.test"
