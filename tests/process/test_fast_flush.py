"""Fast flush end to end: qmgr, the smtp agent, the flush service and smtpd as processes,
mail deferred by a real SMTP server (tests/peers/smtp_sink) that answers 4xx until the
test lets it accept, then `postqueue -s`, `postqueue -i`, `sendmail -qR/-qI` and ETRN
deliver it long before its retry time (minimal_backoff_time is an hour here).

Messages enter incoming/ through core/spool as cleanup writes them; everything after
that is the real programs: qmgr defers them and tells the flush service, which logs
the queue IDs per site in flush/ and, asked, makes them due and wakes qmgr.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.core.trigger import WAKEUP, trigger
from tests.peers.smtp_sink import SmtpSink
from tests.process.conftest import REPO

HOST = "mail.example.test"
SENDER = f"joe@{HOST}"
TRY_LATER = "451 4.3.0 try again later"
RELAY = "remote.test"  # eligible: in relay_domains, so in fast_flush_domains
OTHER = "other.test"  # eligible too: a second site a flush of the first must not touch


@pytest.fixture
def sink():
    with SmtpSink(rcpt_default=TRY_LATER) as running:
        yield running


@pytest.fixture
def flushsys(mailsys, sink):
    """qmgr, smtp and flush running; mail for relay_domains goes to the sink."""
    mailsys.write_main_cf(
        f"relay_domains = {RELAY}, {OTHER}\n"
        f"relayhost = [127.0.0.1]:{sink.port}\n"
        "minimal_backoff_time = 1h\n"
        "maximal_backoff_time = 2h\n"
        "queue_run_delay = 1h\n"
    )
    mailsys.start("smtp", sockets=("smtp", "relay"))
    mailsys.start("flush", sockets=("flush",))
    mailsys.start("qmgr", sockets=("qmgr",))
    mailsys.wait_for((mailsys.queue_dir / "flush").is_dir, "the flush service")
    return mailsys


def put(mailsys, *recipients: str) -> str:
    envelope = Envelope(
        SENDER, tuple(Recipient(r) for r in recipients), arrival_sec=int(time.time())
    )
    content = f"From: {SENDER}\nSubject: flush\nMessage-Id: <f{time.time_ns()}@x>\n\nhello\n"
    with Spool(mailsys.queue_dir) as spool:
        queue_id = spool.create(QueueName.INCOMING, envelope, content.encode()).queue_id
    trigger(str(mailsys.socket_path("qmgr")), WAKEUP)
    return queue_id


def in_queue(mailsys, queue: str) -> set[str]:
    return set(os.listdir(mailsys.queue_dir / queue))


def flush_log(mailsys, site: str) -> Path:
    return mailsys.queue_dir / "flush" / site.replace(".", "_")


def deferred_and_logged(mailsys, queue_id: str, site: str) -> None:
    """Wait until QUEUE_ID sits in deferred/ and the flush service logged it for SITE."""
    mailsys.wait_for(lambda: queue_id in in_queue(mailsys, "deferred"), f"{queue_id} deferred")
    log = flush_log(mailsys, site)
    mailsys.wait_for(
        lambda: log.exists() and queue_id in log.read_text().split(), f"{queue_id} in {log}"
    )
    due = (mailsys.queue_dir / "deferred" / queue_id).stat().st_mtime
    assert due > time.time() + 1800  # not before its retry time, an hour away


def accept_from_now_on(sink) -> int:
    """The sink accepts recipients from now on; returns how many transactions it saw so far
    (the refused ones count: a pipelined DATA is answered 354 after a 4xx RCPT)."""
    sink.behaviour.rcpt_default = "250 2.1.5 Ok"
    return len(sink.messages)


def sent(mailsys) -> list[str]:
    """The smtp agent's `status=sent` lines."""
    return [line for line in mailsys.log("smtp").splitlines() if "status=sent" in line]


# -- postqueue -s / sendmail -qR ------------------------------------------------------------
def test_postqueue_s_delivers_the_sites_deferred_mail_and_only_that(flushsys, sink) -> None:
    mine = put(flushsys, f"ann@{RELAY}")
    theirs = put(flushsys, f"bob@{OTHER}")
    deferred_and_logged(flushsys, mine, RELAY)
    deferred_and_logged(flushsys, theirs, OTHER)
    before = accept_from_now_on(sink)

    result = flushsys.run("postqueue", "-s", RELAY)

    assert (result.returncode, result.stderr) == (0, b"")
    flushsys.wait_for(lambda: mine not in in_queue(flushsys, "deferred"), "the flushed message")
    flushsys.wait_for(lambda: sent(flushsys), "the delivery")
    assert [m.rcpt_to for m in sink.messages[before:]] == [[f"RCPT TO:<ann@{RELAY}>"]]
    time.sleep(1)
    assert in_queue(flushsys, "deferred") == {theirs}  # the other site waits its turn
    assert flush_log(flushsys, RELAY).read_text() == ""  # sent, so truncated
    assert theirs in flush_log(flushsys, OTHER).read_text()


def test_sendmail_qr_is_postqueue_s(flushsys, sink) -> None:
    queue_id = put(flushsys, f"ann@{RELAY}")
    deferred_and_logged(flushsys, queue_id, RELAY)
    accept_from_now_on(sink)

    result = flushsys.run("sendmail", f"-qR{RELAY}")

    assert (result.returncode, result.stderr) == (0, b"")
    flushsys.wait_for(lambda: not flushsys.queue_files(), "the delivery")
    assert len(sent(flushsys)) == 1


def test_a_site_outside_fast_flush_domains_is_not_eligible(flushsys) -> None:
    result = flushsys.run("postqueue", "-s", "elsewhere.test")
    assert result.returncode == 69
    assert result.stderr == (
        b'postqueue: fatal: Flush service is not configured for destination "elsewhere.test"\n'
    )


@pytest.mark.parametrize(
    "site", ["bad_site!", "../deferred", "trailing-.test", "1.2.3.4", "[300.1.1.1]"]
)
def test_a_site_that_is_no_host_name_is_refused_before_anything_is_asked(flushsys, site) -> None:
    result = flushsys.run("postqueue", "-s", site)
    assert result.returncode == 64
    assert result.stderr == (
        f'postqueue: fatal: Cannot flush mail queue - invalid destination: "{site}"\n'.encode()
    )
    assert list((flushsys.queue_dir / "flush").iterdir()) == []


def test_with_the_flush_service_down_postqueue_s_says_the_mail_system_is_down(mailsys) -> None:
    mailsys.write_main_cf(f"relay_domains = {RELAY}\n")
    result = mailsys.run("postqueue", "-s", RELAY)
    assert result.returncode == 69
    assert result.stderr == b"postqueue: fatal: Cannot flush mail queue - mail system is down\n"


# -- postqueue -i / sendmail -qI ------------------------------------------------------------
def test_postqueue_i_delivers_one_deferred_message_now(flushsys, sink) -> None:
    first = put(flushsys, f"ann@{RELAY}")
    second = put(flushsys, f"bob@{RELAY}")
    deferred_and_logged(flushsys, first, RELAY)
    deferred_and_logged(flushsys, second, RELAY)
    before = accept_from_now_on(sink)

    result = flushsys.run("postqueue", "-i", first)

    assert (result.returncode, result.stderr) == (0, b"")
    flushsys.wait_for(lambda: sent(flushsys), "the delivery")
    assert [m.rcpt_to for m in sink.messages[before:]] == [[f"RCPT TO:<ann@{RELAY}>"]]
    time.sleep(1)
    assert in_queue(flushsys, "deferred") == {second}


def test_sendmail_qi_is_postqueue_i(flushsys, sink) -> None:
    queue_id = put(flushsys, f"ann@{RELAY}")
    deferred_and_logged(flushsys, queue_id, RELAY)
    accept_from_now_on(sink)

    result = flushsys.run("sendmail", f"-qI{queue_id}")

    assert (result.returncode, result.stderr) == (0, b"")
    flushsys.wait_for(lambda: not flushsys.queue_files(), "the delivery")


def test_a_queue_id_that_is_not_a_deferred_message(flushsys) -> None:
    """On hold, then gone: neither is a deferred message, and nothing is released."""
    with Spool(flushsys.queue_dir) as spool:
        envelope = Envelope(SENDER, (Recipient(f"ann@{RELAY}"),), arrival_sec=int(time.time()))
        queue_id = spool.create(QueueName.HOLD, envelope, b"Subject: x\n\nx\n").queue_id
        expected = (
            f'postqueue: fatal: Cannot flush queue ID - no deferred message: "{queue_id}"\n'
        ).encode()
        result = flushsys.run("postqueue", "-i", queue_id)
        assert (result.returncode, result.stderr) == (66, expected)
        assert in_queue(flushsys, "hold") == {queue_id}
        spool.remove(QueueName.HOLD, queue_id)
    result = flushsys.run("postqueue", "-i", queue_id)
    assert (result.returncode, result.stderr) == (66, expected)


@pytest.mark.parametrize("queue_id", ["../deferred/x", "..", "not-a-queue-id", "a/b"])
def test_a_queue_id_that_is_no_queue_id_is_refused(flushsys, queue_id) -> None:
    result = flushsys.run("postqueue", "-i", queue_id)
    assert result.returncode == 64
    assert result.stderr == (
        f'postqueue: fatal: Cannot flush queue ID - invalid name: "{queue_id}"\n'.encode()
    )


def test_the_service_itself_refuses_a_path_as_queue_id(flushsys) -> None:
    """A client that skips postqueue's check gets `bad` from the service, and nothing moves."""
    from sdmail.core import flush_proto

    reply = flush_proto.send_file(str(flushsys.socket_dir), "../active/x", timeout=10)
    assert reply.status is flush_proto.FlushStatus.BAD
    reply = flush_proto.send_site(str(flushsys.socket_dir), "../../etc", timeout=10)
    assert reply.status is flush_proto.FlushStatus.BAD


# -- who may flush ----------------------------------------------------------------------------
def test_a_user_authorized_flush_users_leaves_out_is_refused(flushsys, make_user) -> None:
    with open(flushsys.config_dir / "main.cf", "a") as main_cf:
        main_cf.write("authorized_flush_users = root\n")
    user = make_user()
    expected = (
        f"postqueue: fatal: User {user.pw_name}({user.pw_uid}) is not allowed to flush "
        "the mail queue\n"
    ).encode()
    for args in (("-s", RELAY), ("-i", "3Pt2mN2VXxznjll")):
        result = flushsys.run("postqueue", *args, user=user.pw_name)
        assert (result.returncode, result.stderr) == (77, expected)


def run_as(flushsys, user: str, script: str) -> subprocess.CompletedProcess[bytes]:
    """SCRIPT in the user's python, with the tree on its path: a user's own client."""
    command = ["runuser", "-u", user, "--", "env", f"PYTHONPATH={REPO}"]
    return subprocess.run(
        [*command, flushsys.user_python, "-c", script], capture_output=True, timeout=60
    )


def test_the_service_checks_the_caller_too(mailsys, make_user) -> None:
    """A user's own client, talking to the socket directly, meets the same refusal."""
    mailsys.write_main_cf(f"relay_domains = {RELAY}\nauthorized_flush_users = root\n")
    mailsys.start("flush", sockets=("flush",))
    user = make_user()
    script = (
        "from sdmail.core import flush_proto\n"
        f"r = flush_proto.send_site({str(mailsys.socket_dir)!r}, {RELAY!r}, timeout=10)\n"
        "print(r.status.value, r.text)\n"
    )
    out = run_as(mailsys, user.pw_name, script)
    assert out.stdout.decode().strip() == (
        f"refused User {user.pw_name}({user.pw_uid}) is not allowed to flush the mail queue"
    )


def test_a_user_cannot_add_to_the_logs(flushsys, make_user) -> None:
    user = make_user()
    script = (
        "from sdmail.core import flush_proto\n"
        f"print(flush_proto.add({str(flushsys.socket_dir)!r}, {RELAY!r}, '3Pt2mN2VXxznjll'))\n"
    )
    out = run_as(flushsys, user.pw_name, script)
    assert out.stdout == b"True\n"  # handed over; the service then refuses it
    flushsys.wait_for(lambda: "add request refused" in flushsys.log("flush"), "the refusal")
    assert not flush_log(flushsys, RELAY).exists()


# -- ETRN -----------------------------------------------------------------------------------
def smtpd(flushsys, extra: str = "") -> int:
    if extra:
        with open(flushsys.config_dir / "main.cf", "a") as main_cf:
            main_cf.write(extra)
    (flushsys.config_dir / "aliases").write_text("postmaster: root\n")
    assert flushsys.run("postalias", str(flushsys.config_dir / "aliases")).returncode == 0
    flushsys.start("smtpd", tcp=("smtpd",))
    return flushsys.tcp_ports["smtpd"]


def test_etrn_delivers_the_sites_deferred_mail(flushsys, sink) -> None:
    port = smtpd(flushsys)
    queue_id = put(flushsys, f"ann@{RELAY}")
    deferred_and_logged(flushsys, queue_id, RELAY)
    accept_from_now_on(sink)

    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.example")
        assert client.has_extn("etrn")
        assert client.docmd("ETRN", RELAY) == (250, b"Queuing started")

    flushsys.wait_for(lambda: not flushsys.queue_files(), "the delivery")
    assert len(sent(flushsys)) == 1
    assert "etrn=1" in flushsys.log("smtpd")


def test_etrn_takes_rfc_1985s_at_sign(flushsys, sink) -> None:
    port = smtpd(flushsys)
    queue_id = put(flushsys, f"ann@{RELAY}")
    deferred_and_logged(flushsys, queue_id, RELAY)
    accept_from_now_on(sink)
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.example")
        assert client.docmd("ETRN", f"@{RELAY}") == (250, b"Queuing started")
    flushsys.wait_for(lambda: not flushsys.queue_files(), "the delivery")


def test_etrn_replies_to_bad_input_as_postfix(flushsys) -> None:
    port = smtpd(flushsys)
    with smtplib.SMTP("127.0.0.1", port) as client:
        assert client.docmd("ETRN", RELAY) == (503, b"Error: send HELO/EHLO first")
        client.ehlo("client.example")
        assert client.docmd("ETRN") == (500, b"Syntax: ETRN domain")
        assert client.docmd("ETRN", "a.test b.test") == (500, b"Syntax: ETRN domain")
        assert client.docmd("ETRN", "bad_site!") == (501, b"Error: invalid parameter syntax")
        assert client.docmd("ETRN", "../../etc") == (501, b"Error: invalid parameter syntax")
        assert client.docmd("ETRN", "elsewhere.test") == (
            459,
            b"<elsewhere.test>: service unavailable",
        )
        client.docmd("MAIL", "FROM:<x@example.org>")
        assert client.docmd("ETRN", RELAY) == (503, b"Error: MAIL transaction in progress")
        client.rset()
        assert client.docmd("ETRN", RELAY) == (250, b"Queuing started")
    assert "reject: ETRN elsewhere.test... from" in flushsys.log("smtpd")


def test_etrn_restrictions_apply(flushsys) -> None:
    port = smtpd(flushsys, "smtpd_etrn_restrictions = reject\n")
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.example")
        code, text = client.docmd("ETRN", RELAY)
    assert (code, text) == (554, f"5.7.1 <{RELAY}>: Etrn command rejected: Access denied".encode())
    assert "NOQUEUE: reject: ETRN from " in flushsys.log("smtpd")


def test_etrn_with_the_flush_service_down_is_458(mailsys) -> None:
    mailsys.write_main_cf(f"relay_domains = {RELAY}\n")
    (mailsys.config_dir / "aliases").write_text("postmaster: root\n")
    assert mailsys.run("postalias", str(mailsys.config_dir / "aliases")).returncode == 0
    mailsys.start("smtpd", tcp=("smtpd",))
    with smtplib.SMTP("127.0.0.1", mailsys.tcp_ports["smtpd"]) as client:
        client.ehlo("client.example")
        assert client.docmd("ETRN", RELAY) == (458, b"Unable to queue messages")
    assert "unable to talk to fast flush service" in mailsys.log("smtpd")


# -- housekeeping -----------------------------------------------------------------------------
def test_a_stale_log_is_sent_and_an_old_empty_one_removed_at_start(mailsys, sink) -> None:
    mailsys.write_main_cf(
        f"relay_domains = {RELAY}\nrelayhost = [127.0.0.1]:{sink.port}\n"
        "minimal_backoff_time = 1h\nqueue_run_delay = 1h\n"
    )
    mailsys.start("smtp", sockets=("smtp", "relay"))
    mailsys.start("qmgr", sockets=("qmgr",))
    queue_id = put(mailsys, f"ann@{RELAY}")
    mailsys.wait_for(lambda: queue_id in in_queue(mailsys, "deferred"), "the deferral")
    flush_dir = mailsys.queue_dir / "flush"
    flush_dir.mkdir(mode=0o700, exist_ok=True)
    stale = flush_log(mailsys, RELAY)
    stale.write_text(f"{queue_id}\n")
    long_ago = time.time() - 13 * 3600
    os.utime(stale, (long_ago, long_ago))
    empty = flush_dir / "gone_test"
    empty.write_text("")
    os.utime(empty, (time.time() - 8 * 86400,) * 2)
    bad = flush_dir / "Not.A.Log"
    bad.write_text("x\n")
    accept_from_now_on(sink)

    mailsys.start("flush", sockets=("flush",))

    mailsys.wait_for(lambda: not mailsys.queue_files(), "the delivery")
    assert sorted(p.name for p in flush_dir.iterdir()) == [stale.name]
    assert stale.read_text() == ""
    assert "bad fast flush log name: Not.A.Log" in mailsys.log("flush")


def test_flush_exits_78_without_its_socket(mailsys) -> None:
    process = mailsys.start("flush")
    assert process.wait(30) == 78
    assert "no listening socket named flush" in mailsys.log("flush")


def test_flush_exits_when_idle(mailsys) -> None:
    mailsys.write_main_cf("max_idle = 1s\n")
    process = mailsys.start("flush", sockets=("flush",))
    assert process.wait(30) == 0
