"""The smtp delivery agent as a process: the test plays qmgr (tests/peers/qmgr_side.py).

`python3 -m sdmail.smtp` gets its `smtp` and `relay` sockets the systemd way, reads
requests, delivers to real SMTP servers on loopback (a scriptable sink, Postfix's own
smtp-sink), finds MX hosts through a real DNS server, and the test looks at what an admin
and qmgr see: the DeliveryResult, done marks in the queue file, the log lines.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sdmail.core.ipc import encode_frame
from sdmail.core.records import DsnRet, Notify, Recipient
from tests.peers.certs import cert_der, chain_file, make_ca, make_server_cert
from tests.peers.dns_server import DnsServer
from tests.peers.postfix_tools import PostfixSmtpSink, postfix_root
from tests.peers.qmgr_side import (
    ask,
    delivery_line,
    done_marks,
    log_lines,
    queue_message,
    wait_for_line,
)
from tests.peers.smtp_sink import SmtpSink

DEBIAN_PYTHON = "/usr/bin/python3"


def start_smtp(mailsys, extra: str = "", interpreter: str | None = None):
    mailsys.write_main_cf(extra)
    return mailsys.start("smtp", sockets=("smtp", "relay"), mode=0o666, interpreter=interpreter)


@pytest.fixture
def sink():
    with SmtpSink(
        rcpt={
            "gone@example.test": "550 5.1.1 <gone@example.test>: Recipient address rejected: "
            "User unknown in local recipient table",
            "busy@example.test": "451 4.3.0 <busy@example.test>: try again later",
        }
    ) as running:
        yield running


def test_a_message_is_relayed_recipient_by_recipient(mailsys, sink) -> None:
    start_smtp(mailsys)
    request = queue_message(
        mailsys,
        ["bob@example.test", "gone@example.test", "busy@example.test"],
        nexthop=f"[127.0.0.1]:{sink.port}",
    )
    result = ask(mailsys, request)
    relay = f"127.0.0.1[127.0.0.1]:{sink.port}"
    said = "host 127.0.0.1[127.0.0.1] said:"
    assert [(r.status, r.dsn, r.text, r.relay) for r in result.recipients] == [
        ("sent", "2.0.0", "250 2.0.0 Ok: queued as SINK1", relay),
        (
            "bounced",
            "5.1.1",
            f"{said} 550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown "
            "in local recipient table (in reply to RCPT TO command)",
            relay,
        ),
        (
            "deferred",
            "4.3.0",
            f"{said} 451 4.3.0 <busy@example.test>: try again later (in reply to RCPT TO command)",
            relay,
        ),
    ]
    assert not result.site_failure
    assert done_marks(mailsys, request.queue_id) == [True, True, False]
    qid = request.queue_id
    wait_for_line(
        mailsys,
        "smtp",
        delivery_line(
            qid, "bob@example.test", relay=relay, dsn="2.0.0", status="sent",
            text="250 2.0.0 Ok: queued as SINK1",
        ),
    )  # fmt: skip
    lines = log_lines(mailsys, "smtp", qid)
    assert any(
        delivery_line(
            qid, "gone@example.test", relay=relay, dsn="5.1.1", status="bounced",
            text=result.recipients[1].text,
        ).fullmatch(line)
        for line in lines
    )  # fmt: skip
    assert sink.messages[0].rcpt_to == [
        "RCPT TO:<bob@example.test>",
        "RCPT TO:<gone@example.test>",
        "RCPT TO:<busy@example.test>",
    ]
    assert b"From the start\r\nbody line\r\n" in sink.messages[0].data


def test_mx_records_from_the_system_resolver_are_used(mailsys, monkeypatch, tmp_path) -> None:
    with (
        SmtpSink(host="127.0.0.2") as best,
        DnsServer(
            {
                ("example.test", "MX"): ["10 mx1.example.test.", "20 mx2.example.test."],
                ("mx1.example.test", "A"): ["127.0.0.2"],
                ("mx2.example.test", "A"): ["127.0.0.3"],
            }
        ) as dns,
    ):
        conf = dns.resolv_conf(mailsys.root / "resolv.conf")
        monkeypatch.setenv("SDMAIL_RESOLV_CONF", str(conf))
        start_smtp(mailsys, f"smtp_tcp_port = {best.port}\n")
        request = queue_message(mailsys, ["bob@example.test"], nexthop="example.test")
        result = ask(mailsys, request)
    assert result.recipients[0].status == "sent"
    assert result.recipients[0].relay == f"mx1.example.test[127.0.0.2]:{best.port}"
    assert len(best.messages) == 1
    assert ("example.test", "MX") in dns.queries


def test_dane_ta_on_debians_python(mailsys, monkeypatch, tmp_path) -> None:
    # DANE-TA needs the server's chain: Python 3.11 has it only on a private object, so
    # the agent is run on the interpreter the package runs it on.
    ca = make_ca(tmp_path / "ca")
    server = make_server_cert(tmp_path / "server", ["mx.example.test"], ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file(tmp_path / "chain.pem", server, ca).cert, server.key)
    anchor = hashlib.sha256(cert_der(ca.cert)).hexdigest()
    with SmtpSink(host="127.0.0.2", tls=context) as mx:
        tlsa = f"_{mx.port}._tcp.mx.example.test"
        zone = {
            ("example.test", "MX"): ["10 mx.example.test."],
            ("mx.example.test", "A"): ["127.0.0.2"],
            (tlsa, "TLSA"): [f"2 0 1 {anchor}"],
        }
        with DnsServer(zone, secure=[tlsa]) as dns:
            monkeypatch.setenv("SDMAIL_RESOLV_CONF", str(dns.resolv_conf(tmp_path / "resolv")))
            start_smtp(
                mailsys,
                f"smtp_tcp_port = {mx.port}\nsmtp_tls_security_level = dane\n"
                "smtp_tls_loglevel = 1\n",
                interpreter=DEBIAN_PYTHON,
            )
            request = queue_message(mailsys, ["bob@example.test"], nexthop="example.test")
            result = ask(mailsys, request)
    assert result.recipients[0].status == "sent", result.recipients[0].text
    assert mx.messages[0].tls
    wait_for_line(
        mailsys,
        "smtp",
        re.compile(
            rf"{request.queue_id}: Verified TLS connection established to "
            rf"mx\.example\.test\[127\.0\.0\.2\]:{mx.port}: .*"
        ),
    )


def test_an_unreachable_site_is_deferred_as_a_site_failure(mailsys) -> None:
    start_smtp(mailsys, "smtp_connect_timeout = 2s\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    request = queue_message(mailsys, ["a@x.test", "b@x.test"], nexthop=f"[127.0.0.1]:{port}")
    result = ask(mailsys, request)
    why = f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
    assert result.site_failure
    assert [(r.status, r.dsn, r.text, r.relay) for r in result.recipients] == [
        ("deferred", "4.4.1", why, "none"),
        ("deferred", "4.4.1", why, "none"),
    ]
    assert done_marks(mailsys, request.queue_id) == [False, False]
    lines = log_lines(mailsys, "smtp")
    assert why in lines  # the info line, without a queue ID, as Postfix logs it
    assert any(
        delivery_line(
            request.queue_id, "a@x.test", relay="none", dsn="4.4.1", status="deferred", text=why
        ).fullmatch(line)
        for line in lines
    )


DELAYS = re.compile(r"delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+),")


def test_one_connection_serves_several_requests(mailsys, sink) -> None:
    start_smtp(mailsys, "smtp_connection_cache_destinations = 127.0.0.1\n")
    sink.behaviour.greeting_delay = 0.3
    lines = []
    for _ in range(3):
        request = queue_message(mailsys, ["bob@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
        assert ask(mailsys, request).recipients[0].status == "sent"
        (line,) = log_lines(mailsys, "smtp", request.queue_id)
        lines.append(line)
    assert len(sink.messages) == 3
    assert sink.connections == 1
    # conn_use=N from the second use of a connection on, between relay= and delay=, and
    # the slow greeting counted as connection set-up (delays' c) where there was one.
    assert [re.search(r"relay=[^,]+, (conn_use=\d+, )?delay=", x).group(1) for x in lines] == [
        None,
        "conn_use=2, ",
        "conn_use=3, ",
    ]
    set_up = [float(DELAYS.search(x).group(3)) for x in lines]
    assert set_up[0] >= 0.3
    assert set_up[1] < 0.3 and set_up[2] < 0.3


def test_on_demand_caching_begins_with_back_to_back_requests(mailsys, sink) -> None:
    start_smtp(mailsys)
    uses = []
    for _ in range(4):
        request = queue_message(mailsys, ["bob@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
        assert ask(mailsys, request).recipients[0].status == "sent"
        (line,) = log_lines(mailsys, "smtp", request.queue_id)
        uses.append(re.search(r"conn_use=(\d+)", line))
    assert [m.group(1) if m else None for m in uses] == [None, None, "2", "3"]
    assert sink.connections == 2


def test_requests_on_the_relay_socket_are_served_too(mailsys, sink) -> None:
    start_smtp(mailsys)
    request = queue_message(
        mailsys, ["bob@example.test"], transport="relay", nexthop=f"[127.0.0.1]:{sink.port}"
    )
    assert ask(mailsys, request, "relay").recipients[0].status == "sent"


def test_dsn_parameters_reach_postfix_smtp_sink(mailsys) -> None:
    root = postfix_root()
    if root is None:
        pytest.skip("Debian's postfix package cannot be unpacked here")
    with PostfixSmtpSink(root, mailsys.root / "dump") as postfix_sink:
        start_smtp(mailsys)
        recipient = Recipient(
            "bob@example.test",
            orig_address="bob@example.test",
            notify=Notify.SUCCESS | Notify.DELAY,
            orcpt="rfc822;bob@example.test",
        )
        request = queue_message(
            mailsys,
            [recipient],
            nexthop=f"[127.0.0.1]:{postfix_sink.port}",
            envelope_changes={"ret": DsnRet.HDRS, "envid": "QQ314159"},
            content=b"Subject: dsn\n\n" + b"z" * 1500 + b"\n",
        )
        result = ask(mailsys, request)
        assert result.recipients[0].status == "sent"
        assert result.recipients[0].text.startswith("250 2.0.0 Ok")
        mailsys.wait_for(postfix_sink.dumps, "smtp-sink's dump")
        [dump] = postfix_sink.dumps()
    assert b"X-Mail-Args: <ann@example.org> ENVID=QQ314159 RET=HDRS\n" in dump
    assert (
        b"X-Rcpt-Args: <bob@example.test> ORCPT=rfc822;bob@example.test NOTIFY=SUCCESS,DELAY"
        in dump
    )
    body = dump.split(b"\n\n", 1)[1]
    assert b"z" * 998 + b"\n " + b"z" * 502 + b"\n" in body  # folded at 998 on the way


def test_sigterm_ends_the_agent_and_closes_kept_connections(mailsys, sink) -> None:
    process = start_smtp(mailsys)
    request = queue_message(mailsys, ["bob@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
    ask(mailsys, request)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    mailsys.wait_for(lambda: "QUIT" in sink.commands, "QUIT on the kept connection", 5)


def test_a_caller_other_than_root_or_mail_owner_is_refused(mailsys, sink) -> None:
    start_smtp(mailsys)
    request = queue_message(mailsys, ["bob@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode())\n"
        "try:\n    print(repr(s.recv(100)))\nexcept ConnectionResetError:\n    print('reset')\n"
    )
    frame = encode_frame(request.to_header()).decode()
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", DEBIAN_PYTHON, "-c", script,
         str(mailsys.socket_path("smtp")), frame],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.strip() in ("b''", "reset"), done.stderr  # closed, no answer
    assert not sink.messages
    wait_for_line(
        mailsys, "smtp", re.compile(r"warning: refusing a request from pid \d+ uid 65534: .*")
    )


def test_a_bad_client_setting_stops_the_start_with_78(mailsys) -> None:
    process = start_smtp(mailsys, "smtp_tls_security_level = sometimes\n")
    assert process.wait(20) == 78
    main_cf = mailsys.config_dir / "main.cf"
    line = len(main_cf.read_text().splitlines())
    assert (
        f"fatal: {main_cf}, line {line}: smtp_tls_security_level: unknown value 'sometimes'"
        in mailsys.log("smtp")
    )


def test_without_its_sockets_the_agent_exits_78(mailsys) -> None:
    mailsys.write_main_cf()
    done = subprocess.run(
        [sys.executable, "-m", "sdmail.smtp", "-c", str(mailsys.config_dir)],
        env={k: v for k, v in mailsys.env.items() if not k.startswith("LISTEN_")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78
    assert "no listening socket named smtp or relay" in done.stderr


@pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason="no Debian python3")
def test_the_agent_runs_on_debians_python(mailsys, sink) -> None:
    start_smtp(mailsys, interpreter=DEBIAN_PYTHON)
    request = queue_message(mailsys, ["bob@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
    assert ask(mailsys, request).recipients[0].status == "sent"


def test_the_agent_exits_when_idle(mailsys, sink) -> None:
    process = start_smtp(mailsys, "max_idle = 1s\n")
    request = queue_message(mailsys, ["bob@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")
    assert ask(mailsys, request).recipients[0].status == "sent"
    started = time.monotonic()
    assert process.wait(15) == 0
    assert time.monotonic() - started < 10
    assert "QUIT" in sink.commands


def test_after_max_use_waiting_requests_go_to_the_next_process(mailsys, sink) -> None:
    """The listening socket outlives the agent, as systemd keeps it: the agent answers
    max_use requests, exits 0, and a request that comes meanwhile waits for the next
    process instead of being refused or reset."""
    mailsys.write_main_cf("max_use = 2\n")
    path = mailsys.socket_path("smtp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)

    def agent() -> subprocess.Popen[bytes]:
        def place() -> None:
            os.dup2(listener.fileno(), 3)

        env = {**mailsys.env, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "smtp"}
        command = [sys.executable, "-m", "sdmail.smtp", "-c", str(mailsys.config_dir)]
        with open(mailsys.root / "smtp.log", "ab") as log:
            return subprocess.Popen(
                ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *command],
                env=env,
                close_fds=False,
                preexec_fn=place,  # noqa: PLW1509 (no threads yet)
                stderr=log,
            )

    def request(name: str):
        return queue_message(mailsys, [f"{name}@example.test"], nexthop=f"[127.0.0.1]:{sink.port}")

    first = agent()
    assert ask(mailsys, request("one")).recipients[0].status == "sent"
    assert ask(mailsys, request("two")).recipients[0].status == "sent"
    assert first.wait(30) == 0
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(ask, mailsys, request("three"))
        time.sleep(0.5)
        assert not waiting.done()  # no agent runs: the request waits on the socket
        second = agent()
        assert waiting.result(timeout=30).recipients[0].status == "sent"
    second.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0
    listener.close()


def test_a_reload_takes_new_settings_and_a_bad_one_keeps_the_old(mailsys) -> None:
    with SmtpSink() as first_sink, SmtpSink() as second_sink:
        process = start_smtp(mailsys, "smtp_helo_name = before.example.test\n")
        request = queue_message(mailsys, ["a@x.test"], nexthop=f"[127.0.0.1]:{first_sink.port}")
        assert ask(mailsys, request).recipients[0].status == "sent"
        mailsys.write_main_cf("smtp_helo_name = after.example.test\n")
        process.send_signal(signal.SIGHUP)
        wait_for_line(mailsys, "smtp", re.compile(r"reload -- configuration .*"))
        request = queue_message(mailsys, ["a@x.test"], nexthop=f"[127.0.0.1]:{second_sink.port}")
        assert ask(mailsys, request).recipients[0].status == "sent"
        mailsys.write_main_cf("smtp_tls_security_level = sometimes\n")
        process.send_signal(signal.SIGHUP)
        wait_for_line(mailsys, "smtp", re.compile(r"warning: .*keeping the previous configuration"))
        request = queue_message(mailsys, ["a@x.test"], nexthop=f"[127.0.0.1]:{second_sink.port}")
        assert ask(mailsys, request).recipients[0].status == "sent"
        assert process.poll() is None
    assert first_sink.commands[0] == "EHLO before.example.test"
    assert second_sink.commands[0] == "EHLO after.example.test"
