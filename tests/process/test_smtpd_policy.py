"""check_policy_service: the real smtpd asks a real policy server process
(tests/peers/policy_server.py) over UNIX and TCP sockets, and the server's failures."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.peers.policy_server import PolicyServer

LOCAL = "mail.example.test"


@pytest.fixture
def servers(tmp_path):
    started: list[PolicyServer] = []

    def start(*args, **kwargs) -> PolicyServer:
        folder = tmp_path / f"policy-{len(started)}"
        folder.mkdir()
        server = PolicyServer(folder, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def start_smtpd(mailsys, restrictions: str, extra: str = "") -> int:
    mailsys.write_main_cf(
        f"local_recipient_maps =\nsmtpd_recipient_restrictions = {restrictions}, "
        f"permit_mynetworks, reject_unauth_destination\n{extra}"
    )
    mailsys.start("smtpd", tcp=("smtpd",))
    return mailsys.tcp_ports["smtpd"]


def client(port: int) -> smtplib.SMTP:
    session = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30)
    session.ehlo()
    return session


def test_the_policy_server_gets_postfixs_attributes_and_its_answers_decide(mailsys, servers):
    (mailsys.queue_dir / "private").mkdir()
    policy = servers(
        {f"bad@{LOCAL}": "REJECT go away", f"later@{LOCAL}": "451 4.7.1 Try again later"},
        unix=mailsys.queue_dir / "private" / "policy",
    )
    port = start_smtpd(mailsys, "check_policy_service unix:private/policy")
    with client(port) as session:
        assert session.mail("joe@sender.example", ["SIZE=1234"])[0] == 250
        assert session.rcpt(f"alice@{LOCAL}") == (250, b"2.1.5 Ok")
        assert session.rcpt(f"bad@{LOCAL}") == (
            554,
            f"5.7.1 <bad@{LOCAL}>: Recipient address rejected: go away".encode(),
        )
        assert session.rcpt(f"later@{LOCAL}") == (
            451,
            f"4.7.1 <later@{LOCAL}>: Recipient address rejected: Try again later".encode(),
        )
        assert session.rcpt(f"bob@{LOCAL}") == (250, b"2.1.5 Ok")
        session.data(b"Subject: hi\r\n\r\nhello\r\n")
    with client(port) as session:
        assert session.mail("ann@sender.example")[0] == 250
        assert session.rcpt(f"carol@{LOCAL}")[0] == 250

    requests = policy.requests()
    assert [r["recipient"] for r in requests] == [
        f"alice@{LOCAL}", f"bad@{LOCAL}", f"later@{LOCAL}", f"bob@{LOCAL}", f"carol@{LOCAL}",
    ]  # fmt: skip
    first = requests[0]
    assert first["request"] == "smtpd_access_policy"
    assert first["protocol_state"] == "RCPT"
    assert first["protocol_name"] == "ESMTP"
    assert first["helo_name"] == "client.example"
    assert first["sender"] == "joe@sender.example"
    assert first["client_address"] == "127.0.0.1"
    assert first["client_name"] in ("localhost", "unknown")
    assert first["size"] == "1234"
    assert first["server_address"] == "127.0.0.1"
    assert first["server_port"] == str(port)
    assert int(first["client_port"]) > 0
    for attribute in ("queue_id", "instance", "sasl_username", "encryption_protocol", "stress"):
        assert attribute in first
    # recipient_count: recipients accepted so far in this transaction
    assert [r["recipient_count"] for r in requests[:4]] == ["0", "1", "1", "1"]
    # one instance per transaction; a new one for the next
    assert len({r["instance"] for r in requests[:4]}) == 1
    assert requests[4]["instance"] != first["instance"]
    # one connection, reused by the requests of both sessions
    assert {r["_connection"] for r in requests} == {1}
    assert len(mailsys.queue_files("incoming")) == 1


def test_defer_if_permit_and_ok_over_tcp(mailsys, servers):
    policy = servers(
        {f"grey@{LOCAL}": "DEFER_IF_PERMIT Greylisted, come back later", f"vip@{LOCAL}": "OK"}
    )
    port = start_smtpd(mailsys, f"check_policy_service {policy.where}, reject")
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"grey@{LOCAL}") == (
            554,  # DEFER_IF_PERMIT only defers what would be permitted; `reject` follows
            f"5.7.1 <grey@{LOCAL}>: Recipient address rejected: Access denied".encode(),
        )
        assert session.rcpt(f"vip@{LOCAL}") == (250, b"2.1.5 Ok")
    mailsys.stop_all()
    port = start_smtpd(mailsys, f"check_policy_service {policy.where}")
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"grey@{LOCAL}") == (
            450,
            f"4.7.1 <grey@{LOCAL}>: Recipient address rejected: Greylisted, come back "
            "later".encode(),
        )


def test_end_of_message_requests_carry_the_size_received(mailsys, servers):
    policy = servers({"END-OF-MESSAGE": "REJECT too much"})
    port = start_smtpd(
        mailsys,
        "permit_mynetworks",
        f"smtpd_end_of_data_restrictions = check_policy_service {policy.where}\n",
    )
    body = b"Subject: hi\r\n\r\n" + b"x" * 500 + b"\r\n"
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"alice@{LOCAL}")[0] == 250
        code, text = session.data(body)
    assert (code, text) == (554, b"5.7.1 <END-OF-MESSAGE>: End-of-data rejected: too much")
    (request,) = policy.requests()
    assert request["protocol_state"] == "END-OF-MESSAGE"
    assert request["sender"] == "joe@sender.example"
    assert request["recipient_count"] == "1"
    assert int(request["size"]) >= len(body)
    assert mailsys.queue_files("incoming") == []


def test_a_server_that_is_down_gives_the_default_action(mailsys, servers):
    policy = servers()
    policy.stop()
    port = start_smtpd(mailsys, f"check_policy_service {policy.where}")
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"alice@{LOCAL}") == (
            451,
            f"4.3.5 <alice@{LOCAL}>: Recipient address rejected: Server configuration "
            "problem".encode(),
        )
    assert f"problem talking to server {policy.where}" in mailsys.log("smtpd")


def test_the_default_action_is_configurable(mailsys, servers):
    policy = servers()
    policy.stop()
    port = start_smtpd(
        mailsys,
        f"check_policy_service {policy.where}",
        "smtpd_policy_service_default_action = DUNNO\n",
    )
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"alice@{LOCAL}") == (250, b"2.1.5 Ok")


def test_a_garbage_answer_is_tried_again_then_the_default_action(mailsys, servers):
    policy = servers(behaviour="garbage")
    port = start_smtpd(mailsys, f"check_policy_service {policy.where}")
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"alice@{LOCAL}")[0] == 451
    assert len(policy.requests()) == 2  # smtpd_policy_service_try_limit = 2
    assert "no action in the answer" in mailsys.log("smtpd")


def test_a_server_that_hangs_up_is_tried_again_then_the_default_action(mailsys, servers):
    policy = servers(behaviour="close")
    port = start_smtpd(
        mailsys,
        f"check_policy_service {policy.where}",
        "smtpd_policy_service_try_limit = 3\n",
    )
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        assert session.rcpt(f"alice@{LOCAL}")[0] == 451
    assert len(policy.requests()) == 3
    assert {r["_connection"] for r in policy.requests()} == {1, 2, 3}


def test_a_slow_server_times_out_with_the_services_own_settings(mailsys, servers):
    policy = servers({f"alice@{LOCAL}": "OK"}, behaviour="slow", delay=5)
    service = f"{{ {policy.where}, timeout=1s, try_limit=1, default_action=450 4.7.0 Slow policy }}"
    port = start_smtpd(mailsys, f"check_policy_service {service}")
    with client(port) as session:
        assert session.mail("joe@sender.example")[0] == 250
        started = time.monotonic()
        assert session.rcpt(f"alice@{LOCAL}") == (
            450,
            f"4.7.0 <alice@{LOCAL}>: Recipient address rejected: Slow policy".encode(),
        )
        assert time.monotonic() - started < 4
    assert "timeout while reading the answer" in mailsys.log("smtpd")


def test_a_bad_policy_service_stops_the_start_with_ex_config(mailsys):
    mailsys.write_main_cf("smtpd_recipient_restrictions = check_policy_service nowhere:9\n")
    process = mailsys.start("smtpd", tcp=("smtpd",))
    assert process.wait(10) == 78
    assert "check_policy_service: bad policy server 'nowhere:9'" in mailsys.log("smtpd")
