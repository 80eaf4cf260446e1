"""The lmtp delivery agent as a process, into Debian's Dovecot LMTP (tests/peers/dovecot.py).

The test plays qmgr; the mail is read back from the Maildirs Dovecot wrote.
"""

from __future__ import annotations

import pytest

from tests.peers import dovecot
from tests.peers.qmgr_side import ask, delivery_line, done_marks, log_lines, queue_message

HOST = "mail.example.test"  # the harness's myhostname

missing = dovecot.available()
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


@pytest.fixture
def imap_store(mailsys):
    with dovecot.Dovecot(mailsys.root / "dovecot") as running:
        yield running


def start_lmtp(mailsys, extra: str = ""):
    mailsys.write_main_cf(extra)
    return mailsys.start("lmtp", sockets=("lmtp",), mode=0o666)


def test_lmtp_over_a_unix_socket_gives_one_verdict_per_recipient(mailsys, imap_store) -> None:
    start_lmtp(mailsys)
    request = queue_message(
        mailsys,
        ["alice@example.test", "full@example.test", "ghost@example.test", "bob@example.test"],
        transport="lmtp",
        nexthop=f"unix:{imap_store.socket_path}",
    )
    result = ask(mailsys, request)
    relay = f"{HOST}[{imap_store.socket_path}]"
    said = f"host {relay} said:"
    verdicts = [(r.status, r.dsn, r.relay) for r in result.recipients]
    assert verdicts == [
        ("sent", "2.0.0", relay),
        ("bounced", "5.2.2", relay),
        ("bounced", "5.1.1", relay),
        ("sent", "2.0.0", relay),
    ]
    assert result.recipients[0].text.startswith("250 2.0.0 <alice@example.test> ")
    assert result.recipients[0].text.endswith(" Saved")
    assert result.recipients[1].text == (
        f"{said} 552 5.2.2 <full@example.test> Quota exceeded (mailbox for user is full) "
        "(in reply to end of DATA command)"
    )
    assert result.recipients[2].text == (
        f"{said} 550 5.1.1 <ghost@example.test> User doesn't exist: ghost@example.test "
        "(in reply to RCPT TO command)"
    )
    assert done_marks(mailsys, request.queue_id) == [True, True, True, True]
    [alice] = imap_store.messages("alice")
    [bob] = imap_store.messages("bob")
    for stored in (alice, bob):
        assert b"Return-Path: <ann@example.org>" in stored
        assert b"Subject: hello" in stored
        assert b"From the start\nbody line\n" in stored
    assert b" with LMTP" in alice  # Dovecot's Received: line
    assert imap_store.messages("full") == []
    lines = log_lines(mailsys, "lmtp", request.queue_id)
    assert any(
        delivery_line(
            request.queue_id, "full@example.test", relay=relay, dsn="5.2.2", status="bounced",
            text=result.recipients[1].text,
        ).fullmatch(line)
        for line in lines
    )  # fmt: skip


def test_lmtp_over_tcp(mailsys, imap_store) -> None:
    start_lmtp(mailsys)
    request = queue_message(
        mailsys,
        ["alice@example.test"],
        transport="lmtp",
        nexthop=f"inet:127.0.0.1:{imap_store.port}",
    )
    result = ask(mailsys, request)
    assert result.recipients[0].status == "sent"
    assert result.recipients[0].relay == f"127.0.0.1[127.0.0.1]:{imap_store.port}"
    assert len(imap_store.messages("alice")) == 1


def test_one_lmtp_connection_carries_several_messages(mailsys, imap_store) -> None:
    # Cached whatever the load: the socket path is in lmtp_connection_cache_destinations
    # (through a table: as in Postfix, a /path item in a list names a file of patterns).
    listed = f"inline:{{ {{ {imap_store.socket_path} = yes }} }}"
    start_lmtp(mailsys, f"lmtp_connection_cache_destinations = {listed}\n")
    for _ in range(3):
        request = queue_message(
            mailsys,
            ["bob@example.test"],
            transport="lmtp",
            nexthop=f"unix:{imap_store.socket_path}",
        )
        assert ask(mailsys, request).recipients[0].status == "sent"
    assert len(imap_store.messages("bob")) == 3
    assert imap_store.log().count("Connect from local") == 1
    assert ", conn_use=3, delay=" in log_lines(mailsys, "lmtp", request.queue_id)[0]


def test_a_missing_lmtp_socket_defers_as_a_site_failure(mailsys) -> None:
    start_lmtp(mailsys)
    path = mailsys.root / "no-such-lmtp"
    request = queue_message(
        mailsys, ["alice@example.test"], transport="lmtp", nexthop=f"unix:{path}"
    )
    result = ask(mailsys, request)
    why = f"connect to {HOST}[{path}]: No such file or directory"
    assert [(r.status, r.dsn, r.text) for r in result.recipients] == [("deferred", "4.4.1", why)]
    assert result.site_failure
