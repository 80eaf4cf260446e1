"""smtpd as systemd runs it: logs, the queue files it leaves, listeners and their -o,
reload, max_use / max_idle, and real clients (smtplib, swaks)."""

from __future__ import annotations

import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time

import pytest

POSTMASTER = "postmaster@mail.example.test"


def prepare(mailsys, extra: str = "") -> None:
    mailsys.write_main_cf(extra)
    aliases = mailsys.config_dir / "aliases"
    aliases.write_text("postmaster: root\n")
    built = mailsys.run("postalias", str(aliases))
    assert built.returncode == 0, built.stderr


def start(mailsys, extra: str = "", args=(), tcp=("smtpd",)):
    prepare(mailsys, extra)
    return mailsys.start("smtpd", tcp=tcp, args=tuple(args))


def greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.recv(1000)


def test_accepted_message_is_logged_and_queued_with_received_and_dsn(mailsys):
    start(mailsys)
    port = mailsys.tcp_ports["smtpd"]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as client:
        refused = client.sendmail(
            "sender@example.org",
            [POSTMASTER],
            b"Subject: logged\r\n\r\nbody\r\n",
            mail_options=["RET=HDRS", "ENVID=MiXeD+2Bcase"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;PostMaster+40Mail.Example.Test"],
        )
    assert refused == {}
    ((queue_id, envelope, content),) = mailsys.queued()
    assert envelope.envid == "MiXeD+case"
    assert envelope.recipients[0].orcpt == "rfc822;PostMaster@Mail.Example.Test"
    assert content.startswith(
        b"Received: from client.example (localhost [127.0.0.1])\n"
        b"\tby mail.example.test (sdmail) with ESMTP id " + queue_id.encode()
    )
    mailsys.wait_for(lambda: "disconnect from" in mailsys.log("smtpd"), "the disconnect line")
    log = mailsys.log("smtpd")
    assert re.search(r"sdmail/smtpd\[\d+\]: connect from localhost\[127\.0\.0\.1\]\n", log)
    assert (
        f"sdmail/smtpd[{mailsys.processes[0].pid}]: {queue_id}: client=localhost[127.0.0.1]\n"
        in log
    )
    assert (
        "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5" in log
    )


def test_rejected_recipient_is_logged_as_noqueue_reject(mailsys):
    start(mailsys)
    with smtplib.SMTP("127.0.0.1", mailsys.tcp_ports["smtpd"], local_hostname="h.example") as c:
        c.ehlo()
        c.mail("sender@example.org")
        code, _ = c.rcpt("no-such-user@mail.example.test")
    assert code == 550
    mailsys.wait_for(lambda: "NOQUEUE" in mailsys.log("smtpd"), "the reject line")
    assert (
        "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 "
        "<no-such-user@mail.example.test>: Recipient address rejected: User unknown in local "
        "recipient table; from=<sender@example.org> to=<no-such-user@mail.example.test> "
        "proto=ESMTP helo=<h.example>"
    ) in mailsys.log("smtpd")


def test_accepted_mail_wakes_qmgr(mailsys):
    prepare(mailsys)
    trigger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trigger.bind(str(mailsys.socket_path("qmgr")))
    trigger.listen(5)
    trigger.settimeout(10)
    mailsys.start("smtpd", tcp=("smtpd",))
    with smtplib.SMTP("127.0.0.1", mailsys.tcp_ports["smtpd"]) as client:
        client.sendmail("sender@example.org", [POSTMASTER], b"Subject: wake\r\n\r\nup\r\n")
    connection, _ = trigger.accept()
    with connection:
        assert connection.recv(10) == b"W"
    trigger.close()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_with_pipelining_gets_its_mail_queued(mailsys):
    start(mailsys)
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{mailsys.tcp_ports['smtpd']}",
            "--pipeline",
            "--from",
            "sender@example.org",
            "--to",
            POSTMASTER,
            "--helo",
            "client.example",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<** " not in result.stdout
    assert len(mailsys.queued()) == 1


# -- listeners -------------------------------------------------------------------------------
def test_each_listener_has_its_own_overrides(mailsys):
    start(
        mailsys,
        args=(
            "-o",
            "smtpd_banner=$myhostname ESMTP everyone",
            "-o",
            "submission/smtpd_banner=$myhostname ESMTP submission",
            "-o",
            "submission/mynetworks=192.0.2.0/24",
        ),
        tcp=("smtpd", "submission"),
    )
    assert greeting(mailsys.tcp_ports["smtpd"]) == b"220 mail.example.test ESMTP everyone\r\n"
    assert greeting(mailsys.tcp_ports["submission"]) == (
        b"220 mail.example.test ESMTP submission\r\n"
    )
    outcomes = {}
    for name in ("smtpd", "submission"):
        with smtplib.SMTP("127.0.0.1", mailsys.tcp_ports[name]) as client:
            client.ehlo("client.example")
            client.mail("sender@example.org")
            outcomes[name] = client.rcpt("friend@remote.example")[0]
    assert outcomes == {"smtpd": 250, "submission": 454}


def test_override_for_a_listener_that_does_not_exist_is_a_usage_error_with_l(mailsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start(
        mailsys, args=("-l", f"127.0.0.1:{port}", "-o", "nosuch/smtpd_banner=x"), tcp=()
    )
    assert process.wait(10) == 64
    assert "no listener is named 'nosuch'" in mailsys.log("smtpd")


def test_under_systemd_overrides_of_a_socket_not_passed_are_unused(mailsys):
    """The unit always carries submission's -o; sdmail-submission.socket is not enabled."""
    start(mailsys, args=("-o", "submission/smtpd_banner=x"))
    port = mailsys.tcp_ports["smtpd"]
    assert greeting(port) == b"220 mail.example.test ESMTP sdmail\r\n"
    assert "systemd passed no socket named submission; its settings are unused" in mailsys.log(
        "smtpd"
    )


def test_unknown_restriction_stops_the_start_with_ex_config(mailsys):
    process = start(mailsys, "smtpd_recipient_restrictions = permit_evrything\n")
    assert process.wait(10) == 78
    assert 'fatal: smtpd_recipient_restrictions: unknown restriction "permit_evrything"' in (
        mailsys.log("smtpd")
    )


def test_reload_gives_new_sessions_the_new_configuration(mailsys):
    process = start(mailsys)
    port = mailsys.tcp_ports["smtpd"]
    assert greeting(port) == b"220 mail.example.test ESMTP sdmail\r\n"
    prepare(mailsys, "smtpd_banner = $myhostname ESMTP reloaded\n")
    process.send_signal(signal.SIGHUP)
    mailsys.wait_for(lambda: "reload -- configuration" in mailsys.log("smtpd"), "the reload")
    assert greeting(port) == b"220 mail.example.test ESMTP reloaded\r\n"


# -- lifetime --------------------------------------------------------------------------------
def test_max_idle_ends_the_process(mailsys):
    process = start(mailsys, "max_idle = 1s\n")
    assert greeting(mailsys.tcp_ports["smtpd"]).startswith(b"220")
    assert process.wait(10) == 0


def test_max_use_exits_once_idle_and_never_stops_accepting_before(mailsys):
    process = start(mailsys, "max_use = 2\n")
    port = mailsys.tcp_ports["smtpd"]
    clients = [smtplib.SMTP("127.0.0.1", port) for _ in range(3)]
    for client in clients:
        assert client.noop()[0] == 250
    time.sleep(0.5)
    assert process.poll() is None
    for client in clients:
        client.quit()
    assert process.wait(10) == 0


def test_sigterm_ends_the_process_cleanly(mailsys):
    process = start(mailsys)
    assert greeting(mailsys.tcp_ports["smtpd"]).startswith(b"220")
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_without_listen_fds_it_listens_where_l_says(mailsys):
    prepare(mailsys)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(mailsys.root / "by-hand.log", "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdmail.smtpd",
                "-c",
                str(mailsys.config_dir),
                "-l",
                f"127.0.0.1:{port}",
            ],
            env=mailsys.env,
            stderr=log,
        )
    mailsys.processes.append(process)

    def greets() -> bool:
        try:
            return greeting(port).startswith(b"220 ")
        except OSError:
            return False

    mailsys.wait_for(greets, "a greeting on the -l address", timeout=15)


def test_a_unix_socket_listener_is_served_too(mailsys):
    prepare(mailsys)
    mailsys.start("smtpd", sockets=("smtpd",))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(mailsys.socket_path("smtpd")))
        assert sock.recv(1000) == b"220 mail.example.test ESMTP sdmail\r\n"
        sock.sendall(b"QUIT\r\n")
        assert sock.recv(1000) == b"221 2.0.0 Bye\r\n"
    mailsys.wait_for(lambda: "disconnect from unknown[unknown]" in mailsys.log("smtpd"), "log")
