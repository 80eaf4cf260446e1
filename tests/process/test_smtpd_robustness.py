"""smtpd under hostile and clumsy clients: smuggling, garbage, long lines, clients that
vanish or stall, pipelining, many recipients, many clients; each case under the pyenv
python (aiosmtpd from PyPI) and Debian's /usr/bin/python3 (python3-aiosmtpd 1.4.3+deb12u1)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.peers.interpreters import interpreters

INTERPRETERS = interpreters("aiosmtpd")


class Smtpd:
    def __init__(self, mailsys, interpreter: str, extra: str = "", args=(), tcp=("smtpd",)):
        self.mailsys = mailsys
        mailsys.write_main_cf(extra)
        aliases = mailsys.config_dir / "aliases"
        aliases.write_text("postmaster: root\n")
        built = mailsys.run("postalias", str(aliases))
        assert built.returncode == 0, built.stderr
        self.process = mailsys.start("smtpd", tcp=tcp, args=tuple(args), interpreter=interpreter)
        self.port = mailsys.tcp_ports[tcp[0]]

    def log(self) -> str:
        return self.mailsys.log("smtpd")

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        self.mailsys.wait_for(lambda: text in self.log(), f"{text!r} in the log", timeout)

    def queued(self) -> list:
        """(envelope, content) of every queued message."""
        return [(envelope, content) for _, envelope, content in self.mailsys.queued()]

    def client(self, timeout: float = 10) -> Client:
        return Client(self.port, timeout)


class Client:
    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def reply(self) -> str:
        lines = []
        while True:
            raw = self.reader.readline()
            if not raw:
                raise ConnectionError(f"closed after {lines}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.send(line + "\r\n")
        return self.reply()

    def start_mail(self, *recipients: str) -> None:
        assert self.command("EHLO client.example").startswith("250")
        assert self.command("MAIL FROM:<sender@example.org>") == "250 2.1.0 Ok"
        for recipient in recipients:
            assert self.command(f"RCPT TO:<{recipient}>") == "250 2.1.5 Ok"

    def closed(self) -> bool:
        try:
            return self.reader.read() == b""
        except OSError:
            return True

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture(params=INTERPRETERS)
def smtpd_factory(request, mailsys):
    def start(extra: str = "", args=(), tcp=("smtpd",)) -> Smtpd:
        return Smtpd(mailsys, request.param, extra, args, tcp)

    return start


@pytest.fixture
def smtpd(smtpd_factory):
    return smtpd_factory()


POSTMASTER = "postmaster@mail.example.test"


# -- CVE-2024-27305: one DATA is one message ------------------------------------------------
@pytest.mark.parametrize("early_end", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_smuggled_end_of_data_never_ends_the_message(smtpd, early_end):
    client = smtpd.client()
    client.start_mail(POSTMASTER)
    assert client.command("DATA").startswith("354")
    client.send(
        b"Subject: smuggling\r\n\r\nbefore"
        + early_end
        + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@remote.example>\r\nDATA\r\n"
        + b"smuggled\r\n.\r\n"
    )
    assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    assert client.command("QUIT") == "221 2.0.0 Bye"
    client.close()
    ((envelope, content),) = smtpd.queued()
    assert [r.address for r in envelope.recipients] == [POSTMASTER]
    assert envelope.sender == "sender@example.org"
    assert b"MAIL FROM:<evil@example.org>" in content and b"smuggled" in content


def test_dot_stuffing_is_undone_and_a_lone_dot_line_stays_content(smtpd):
    client = smtpd.client()
    client.start_mail(POSTMASTER)
    client.command("DATA")
    client.send(b"Subject: dots\r\n\r\n..leading dot\r\n...\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    ((_, content),) = smtpd.queued()
    assert content.endswith(b"\n\n.leading dot\n..\n")


# -- garbage, NUL, long lines ---------------------------------------------------------------
def test_garbage_and_nul_bytes_get_replies_and_the_session_goes_on(smtpd):
    client = smtpd.client()
    assert client.command("EHLO client.example").startswith("250")
    client.send(b"\x00\x01\x02 \xff\xfe garbage\r\n")
    assert client.reply().startswith("500 5.5.2")
    client.send(b"NOOP\x00\r\n")
    assert client.reply() == "500 5.5.2 Error: bad syntax"
    client.send(b"MAIL FROM:<\xff\xfe@example.org>\r\n")
    assert client.reply() == "501 5.1.7 Bad sender address syntax"
    assert client.command("NOOP") == "250 2.0.0 Ok"
    client.close()


def test_overlong_commands_are_answered_not_fatal(smtpd):
    client = smtpd.client()
    assert client.command("EHLO client.example").startswith("250")
    assert client.command("X" * 3000) == "500 5.5.2 Error: command not recognized"
    assert client.command("MAIL FROM:<" + "a" * 3000 + "@example.org>") == (
        "501 5.1.7 Bad sender address syntax"
    )
    assert client.command("NOOP " + "y" * 200_000) == "250 2.0.0 Ok"
    assert client.command("MAIL FROM:<sender@example.org>") == "250 2.1.0 Ok"
    client.close()


def test_a_one_megabyte_line_is_kept_whole(smtpd):
    long_line = b"z" * 1_000_000
    client = smtpd.client(timeout=30)
    client.start_mail(POSTMASTER)
    client.command("DATA")
    client.send(b"Subject: long\r\n\r\n" + long_line + b"\r\nend\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    ((_, content),) = smtpd.queued()
    assert b"\n" + long_line + b"\nend\n" in content


# -- clients that vanish or stall -------------------------------------------------------------
def test_client_vanishing_in_data_leaves_nothing_and_others_are_served(smtpd):
    vanishing = smtpd.client()
    vanishing.start_mail(POSTMASTER)
    vanishing.command("DATA")
    vanishing.send(b"Subject: cut\r\n\r\n" + b"half of a message\r\n" * 2000)
    other = smtpd.client()
    other.start_mail(POSTMASTER)
    vanishing.close()
    smtpd.wait_for_log("lost connection after DATA (")
    other.command("DATA")
    assert other.command("Subject: whole\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued")
    other.close()
    ((_, content),) = smtpd.queued()
    assert b"Subject: whole" in content
    assert "bytes) from localhost[127.0.0.1]" in smtpd.log()


def test_client_vanishing_in_bdat_leaves_nothing(smtpd):
    client = smtpd.client()
    client.start_mail(POSTMASTER)
    client.send(b"BDAT 100000 LAST\r\nSubject: cut\r\n\r\n" + b"x" * 5000)
    time.sleep(0.2)
    client.close()
    smtpd.wait_for_log("lost connection after BDAT (")
    assert smtpd.queued() == []


def test_quit_then_half_close_still_gets_its_reply(smtpd):
    client = smtpd.client()
    client.send(b"HELO client.example\r\n")
    assert client.reply() == "250 mail.example.test"
    client.send(b"QUIT\r\n")
    client.sock.shutdown(socket.SHUT_WR)
    assert client.reply() == "221 2.0.0 Bye"
    client.close()


def test_idle_client_is_timed_out_with_421(smtpd_factory):
    smtpd = smtpd_factory("smtpd_timeout = 1s\n")
    client = smtpd.client()
    assert client.command("EHLO client.example").startswith("250")
    assert client.reply() == "421 4.4.2 mail.example.test Error: timeout exceeded"
    assert client.closed()
    client.close()
    smtpd.wait_for_log("timeout after EHLO from localhost[127.0.0.1]")


def test_data_with_no_end_times_out_and_nothing_is_queued(smtpd_factory):
    smtpd = smtpd_factory("smtpd_timeout = 1s\n")
    client = smtpd.client()
    client.start_mail(POSTMASTER)
    client.command("DATA")
    client.send(b"Subject: never ends\r\n\r\nbody\r\n")
    assert client.reply() == "421 4.4.2 mail.example.test Error: timeout exceeded"
    client.close()
    smtpd.wait_for_log("timeout after DATA (")
    assert smtpd.queued() == []


def test_too_many_errors_end_the_session(smtpd_factory):
    smtpd = smtpd_factory("smtpd_hard_error_limit = 3\nsmtpd_soft_error_limit = 10\n")
    client = smtpd.client()
    for _ in range(3):
        assert client.command("BOGUS").startswith("500")
    assert client.command("NOOP") == "421 4.7.0 mail.example.test Error: too many errors"
    assert client.closed()
    client.close()
    smtpd.wait_for_log("too many errors after UNKNOWN from localhost[127.0.0.1]")


# -- pipelining -----------------------------------------------------------------------------
def test_pipelining_without_negotiation_is_a_synchronization_error(smtpd):
    client = smtpd.client()
    assert client.command("HELO client.example") == "250 mail.example.test"
    client.send(f"MAIL FROM:<sender@example.org>\r\nRCPT TO:<{POSTMASTER}>\r\nDATA\r\n")
    assert client.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
    assert client.closed()
    client.close()
    smtpd.wait_for_log("improper command pipelining after MAIL from localhost[127.0.0.1]:")
    assert smtpd.queued() == []


def test_pregreet_is_logged(smtpd_factory):
    smtpd = smtpd_factory()
    with socket.create_connection(("127.0.0.1", smtpd.port), timeout=10) as sock:
        sock.sendall(b"EHLO early.example\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    smtpd.wait_for_log("improper command pipelining after CONNECT from localhost[127.0.0.1]: EHLO")


# -- many recipients, many clients ------------------------------------------------------------
def test_a_thousand_recipients_then_the_limit(smtpd_factory):
    smtpd = smtpd_factory("local_recipient_maps =\n")
    client = smtpd.client(timeout=60)
    assert client.command("EHLO client.example").startswith("250")
    batch = "MAIL FROM:<sender@example.org>\r\n" + "".join(
        f"RCPT TO:<user{n}@mail.example.test>\r\n" for n in range(1001)
    )
    client.send(batch)
    assert client.reply() == "250 2.1.0 Ok"
    answers = [client.reply() for _ in range(1001)]
    assert answers[:1000] == ["250 2.1.5 Ok"] * 1000
    assert answers[1000] == "452 4.5.3 Error: too many recipients"
    client.command("DATA")
    assert client.command("Subject: many\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued")
    client.close()
    ((envelope, _),) = smtpd.queued()
    assert len(envelope.recipients) == 1000


def test_fifty_clients_at_once_all_get_their_mail_queued(smtpd):
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def send(number: int) -> None:
        try:
            client = smtpd.client(timeout=60)
            start.wait()
            client.start_mail(POSTMASTER)
            client.command("DATA")
            results.append(client.command(f"Subject: client {number}\r\n\r\n{number}\r\n."))
            client.command("QUIT")
            client.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(results) == 50 and all(r.startswith("250 2.0.0 Ok: queued as ") for r in results)
    assert len({r.rsplit(" ", 1)[1] for r in results}) == 50
    subjects = sorted(content.split(b"\n")[3] for _, content in smtpd.queued())
    assert len(subjects) == 50


def test_connection_count_limit_per_client(smtpd_factory):
    smtpd = smtpd_factory(
        "smtpd_client_connection_count_limit = 2\nsmtpd_client_event_limit_exceptions =\n"
    )
    first, second = smtpd.client(), smtpd.client()
    third = Client.__new__(Client)
    third.sock = socket.create_connection(("127.0.0.1", smtpd.port), timeout=10)
    third.reader = third.sock.makefile("rb")
    assert third.reply() == "421 4.7.0 mail.example.test Error: too many connections from 127.0.0.1"
    for client in (first, second, third):
        client.close()
    smtpd.wait_for_log("Connection concurrency limit exceeded: 3 from localhost[127.0.0.1]")


def test_commands_pipelined_after_starttls_are_never_executed(smtpd):
    """CVE-2024-34083's shape: what a client pipelines after STARTTLS must not run. STARTTLS
    ends a pipeline group, so the session ends before any of it is read as a command (the
    TLS step adds the case with TLS on, where aiosmtpd's handshake drops the buffer)."""
    client = smtpd.client()
    assert client.command("EHLO client.example").startswith("250")
    client.send(f"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<{POSTMASTER}>\r\n")
    assert client.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
    assert client.closed()
    client.close()
    smtpd.wait_for_log("improper command pipelining after STARTTLS from localhost[127.0.0.1]")


PIECES = [b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"\n.\n", b"\r.\n", b"\n.\r\n", b".\r\n"]


def dot_stuffed(content: bytes) -> bytes:
    """What a client sends for CONTENT: a `.` added to every CRLF-delimited line that has one."""
    lines = content.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40))
def test_any_content_makes_exactly_one_message_and_keeps_its_dots(smtpd, pieces):
    content = b"".join(pieces)
    before = len(smtpd.queued())
    client = smtpd.client()
    client.start_mail(POSTMASTER)
    assert client.command("DATA").startswith("354")
    client.send(dot_stuffed(content) + b"\r\n.\r\n")
    assert client.reply().startswith("250 2.0.0 Ok: queued as ")
    assert client.command("NOOP") == "250 2.0.0 Ok"
    client.close()
    stored = smtpd.queued()
    assert len(stored) == before + 1
    newest = max(stored, key=lambda item: item[0].arrival_sec * 10**6 + item[0].arrival_usec)
    body = newest[1].split(b"\n\n", 1)[1] if b"\n\n" in newest[1] else b""
    assert (body.count(b"a"), body.count(b".")) == (content.count(b"a"), content.count(b"."))


def test_improper_pipelining_allowed_by_the_admin_meets_reject_unauth_pipelining(smtpd_factory):
    smtpd = smtpd_factory(
        "smtpd_forbid_unauth_pipelining = no\nsmtpd_data_restrictions = reject_unauth_pipelining\n"
    )
    client = smtpd.client()
    assert client.command("HELO client.example") == "250 mail.example.test"
    client.send(f"MAIL FROM:<sender@example.org>\r\nRCPT TO:<{POSTMASTER}>\r\nDATA\r\n")
    assert [client.reply() for _ in range(3)] == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining",
    ]
    assert client.command("QUIT") == "221 2.0.0 Bye"
    client.close()
    assert smtpd.log().count("improper command pipelining after MAIL from") == 1
    assert smtpd.queued() == []
