"""smtp/delivery.py in-process: real SMTP sinks on loopback addresses, a real DNS server.

The sinks of one test share a port on different 127.0.0.x addresses, and smtp_tcp_port
names that port, so MX records can point at them as they would at port 25.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sdmail.core.config import load_config
from sdmail.core.dns import RESOLV_CONF_VARIABLE
from sdmail.core.records import DsnRet, Envelope, Notify
from sdmail.smtp.content import encoding_of, needs_smtputf8
from sdmail.smtp.delivery import Client, Delivery, Outcome
from sdmail.smtp.protocol import Job, JobRecipient
from sdmail.smtp.service import make_client
from tests.peers.certs import chain_file, make_ca, make_server_cert, spki_der
from tests.peers.dns_server import DnsServer
from tests.peers.smtp_sink import SmtpSink

CONTENT = b"Subject: test\nFrom: ann@example.org\n\nhello\n"


def free_port_on(addresses: list[str]) -> int:
    """A TCP port free on every one of ADDRESSES (tried a few times)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind((addresses[0], 0))
        port = probe.getsockname()[1]
        probe.close()
        ok = True
        for address in addresses:
            with socket.socket() as other:
                try:
                    other.bind((address, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise OSError("no common free port")


def loopback_block() -> list[str]:
    """Eight 127.x.y.z addresses of one test (random, so parallel runs do not meet)."""
    base = secrets.randbelow(250) + 2
    block = secrets.randbelow(30) * 8 + 10
    return [f"127.{base}.{block // 256}.{block % 256 + i}" for i in range(8)]


@dataclass
class World:
    """Sinks, a DNS server, a config directory: what one test delivers into."""

    tmp_path: object
    monkeypatch: pytest.MonkeyPatch
    addresses: list[str]
    port: int
    sinks: list[SmtpSink]
    dns: DnsServer | None = None

    def sink(self, index: int, **behaviour: object) -> SmtpSink:
        sink = SmtpSink(host=self.addresses[index], port=self.port, **behaviour)
        self.sinks.append(sink)
        return sink

    def zone(self, records: dict, **kinds: object) -> DnsServer:
        self.dns = DnsServer(records, **kinds)
        conf = self.dns.resolv_conf(self.tmp_path / "resolv.conf")
        self.monkeypatch.setenv(RESOLV_CONF_VARIABLE, str(conf))
        return self.dns

    def client(self, extra: str = "", mode: str = "smtp") -> Client:
        if self.dns is None:
            self.monkeypatch.setenv(RESOLV_CONF_VARIABLE, str(self.tmp_path / "none.conf"))
            (self.tmp_path / "none.conf").write_text("nameserver 127.0.0.1\noptions port:9\n")
        (self.tmp_path / "main.cf").write_text(
            "myhostname = client.example.test\n"
            f"smtp_tcp_port = {self.port}\nlmtp_tcp_port = {self.port}\n"
            "smtp_connect_timeout = 2s\nsmtp_helo_timeout = 5s\n" + extra
        )
        return make_client(load_config(self.tmp_path), mode)


@pytest.fixture
def world(tmp_path, monkeypatch) -> Iterator[World]:
    addresses = loopback_block()
    state = World(tmp_path, monkeypatch, addresses, free_port_on(addresses), [])
    try:
        yield state
    finally:
        for sink in state.sinks:
            sink.close()
        if state.dns is not None:
            state.dns.close()


def job(
    nexthop: str,
    *recipients: str,
    content: bytes = CONTENT,
    envelope: Envelope | None = None,
    notify: int = 0,
    orcpt: str | None = None,
    orig: str | None = None,
) -> Job:
    envelope = envelope or Envelope("ann@example.org")
    header_block = content.split(b"\n\n", 1)[0] + b"\n\n"
    return Job(
        queue_id="4TESTQUEUEID",
        nexthop=nexthop,
        sender=envelope.sender,
        envelope=envelope,
        recipients=tuple(JobRecipient(r, orig, notify, orcpt) for r in recipients),
        content=content,
        header_block=header_block,
        encoding=encoding_of(envelope, content),
        requires_smtputf8=needs_smtputf8(envelope, recipients, header_block),
    )


def deliver(client: Client, the_job: Job, preactive: float = 0.0) -> Outcome:
    async def run() -> Outcome:
        try:
            return await Delivery(client, the_job, "smtp", preactive).run()
        finally:
            await client.cache.close_all(1)

    return asyncio.run(run())


def words(outcome: Outcome) -> list[tuple[str, str]]:
    return [(v.status.dsn, v.status.text) for v in outcome.verdicts]


# -- MX records -----------------------------------------------------------------------------------
def test_mail_goes_to_the_most_preferred_mx(world) -> None:
    a, b = world.addresses[0], world.addresses[1]
    best = world.sink(0)
    backup = world.sink(1)
    world.zone(
        {
            ("example.test", "MX"): ["20 backup.example.test.", "10 best.example.test."],
            ("best.example.test", "A"): [a],
            ("backup.example.test", "A"): [b],
        }
    )
    outcome = deliver(world.client(), job("example.test", "bob@example.test"))
    assert words(outcome) == [("2.0.0", "250 2.0.0 Ok: queued as SINK1")]
    assert outcome.verdicts[0].relay == f"best.example.test[{a}]:{world.port}"
    assert len(best.messages) == 1 and not backup.messages


def test_a_refused_connection_falls_back_to_the_next_mx(world, caplog) -> None:
    dead, live = world.addresses[0], world.addresses[1]
    backup = world.sink(1)
    world.zone(
        {
            ("example.test", "MX"): ["10 dead.example.test.", "20 live.example.test."],
            ("dead.example.test", "A"): [dead],
            ("live.example.test", "A"): [live],
        }
    )
    with caplog.at_level(logging.INFO, logger="sdmail"):
        outcome = deliver(world.client(), job("example.test", "bob@example.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(backup.messages) == 1
    assert f"connect to dead.example.test[{dead}]:{world.port}: Connection refused" in [
        r.getMessage() for r in caplog.records
    ]
    assert not outcome.site_failure


def test_equal_preferences_are_shuffled(world) -> None:
    sinks = [world.sink(i) for i in range(3)]
    names = [f"mx{i}.example.test." for i in range(3)]
    records = {("example.test", "MX"): [f"10 {n}" for n in names]}
    records.update({(n, "A"): [world.addresses[i]] for i, n in enumerate(names)})
    world.zone(records)
    client = world.client("smtp_connection_cache_on_demand = no\n")
    for _ in range(24):
        deliver(client, job("example.test", "bob@example.test"))
    assert all(sink.messages for sink in sinks)  # each got some of 24: shuffled, not fixed


def test_without_mx_records_the_domain_address_is_used(world) -> None:
    sink = world.sink(0)
    world.zone({("plain.example.test", "A"): [world.addresses[0]]})
    outcome = deliver(world.client(), job("plain.example.test", "bob@plain.example.test"))
    assert outcome.verdicts[0].relay == f"plain.example.test[{world.addresses[0]}]:{world.port}"
    assert len(sink.messages) == 1


def test_a_null_mx_bounces_at_once(world) -> None:
    world.zone({("null.example.test", "MX"): ["0 ."]})
    outcome = deliver(world.client(), job("null.example.test", "bob@null.example.test"))
    assert words(outcome) == [("5.1.0", "Domain null.example.test does not accept mail (nullMX)")]
    assert outcome.verdicts[0].relay == "none"


def test_a_domain_that_does_not_exist_bounces_as_postfix_says(world) -> None:
    world.zone({("other.example.test", "A"): ["192.0.2.1"]})
    outcome = deliver(world.client(), job("nowhere.example.test", "bob@nowhere.example.test"))
    assert words(outcome) == [
        (
            "5.4.4",
            "Host or domain name not found. Name service error for "
            "name=nowhere.example.test type=A: Host not found",
        )
    ]


def test_a_dns_failure_defers(world) -> None:
    world.zone({}, servfail=["broken.example.test"])
    outcome = deliver(world.client(), job("broken.example.test", "bob@broken.example.test"))
    assert words(outcome) == [
        (
            "4.4.3",
            "Host or domain name not found. Name service error for "
            "name=broken.example.test type=MX: Host not found, try again",
        )
    ]


def test_the_address_limit_stops_after_that_many_servers(world) -> None:
    names = [f"mx{i}.example.test." for i in range(4)]
    records = {("example.test", "MX"): [f"{10 * i} {n}" for i, n in enumerate(names)]}
    records.update({(n, "A"): [world.addresses[i]] for i, n in enumerate(names)})
    world.zone(records)
    last = world.sink(3)
    outcome = deliver(
        world.client("smtp_mx_address_limit = 2\n"), job("example.test", "bob@example.test")
    )
    assert outcome.verdicts[0].status.text == (
        f"connect to mx1.example.test[{world.addresses[1]}]:{world.port}: Connection refused"
    )
    assert outcome.verdicts[0].relay == "none"
    assert outcome.site_failure
    assert not last.messages


def test_the_session_limit_counts_sessions_that_got_past_the_greeting(world) -> None:
    for i in range(3):
        world.sink(i, rcpt_default="451 4.3.0 try later")
    names = [f"mx{i}.example.test." for i in range(3)]
    records = {("example.test", "MX"): [f"{10 * i} {n}" for i, n in enumerate(names)]}
    records.update({(n, "A"): [world.addresses[i]] for i, n in enumerate(names)})
    world.zone(records)
    outcome = deliver(world.client(), job("example.test", "bob@example.test"))
    assert [s.connections for s in world.sinks] == [1, 1, 0]  # smtp_mx_session_limit = 2
    assert outcome.verdicts[0].status.dsn == "4.3.0"
    assert "(in reply to RCPT TO command)" in outcome.verdicts[0].status.text
    assert not outcome.site_failure  # the site answered: per-recipient 4xx are no site failure


# -- greeting and hello ---------------------------------------------------------------------------
def test_a_4xx_greeting_tries_the_next_server(world) -> None:
    world.sink(0, greeting="421 4.3.2 busy, come back later")
    good = world.sink(1)
    nexthop = f"[{world.addresses[0]}], [{world.addresses[1]}]"
    outcome = deliver(world.client(), job(nexthop, "bob@example.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(good.messages) == 1


def test_a_5xx_greeting_on_the_last_server_defers_as_a_site_failure(world) -> None:
    world.sink(0, greeting="554 5.7.1 go away")
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "bob@example.test"))
    a = world.addresses[0]
    assert words(outcome) == [("4.7.1", f"host {a}[{a}] refused to talk to me: 554 5.7.1 go away")]
    assert outcome.verdicts[0].relay == f"{a}[{a}]:{world.port}"
    assert outcome.site_failure


def test_ehlo_refused_falls_back_to_helo_without_extensions(world) -> None:
    sink = world.sink(0, ehlo_reply="502 5.5.2 what is EHLO")
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "bob@example.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert sink.commands[:2] == ["EHLO client.example.test", "HELO client.example.test"]
    assert sink.commands[2] == "MAIL FROM:<ann@example.org>"  # no SIZE, no BODY


def test_a_server_that_closes_at_once_defers_with_lost_connection(world) -> None:
    world.sink(0, greeting="close")
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "bob@example.test"))
    a = world.addresses[0]
    assert words(outcome) == [
        ("4.4.2", f"lost connection with {a}[{a}] while receiving the initial server greeting")
    ]
    assert outcome.site_failure


def test_a_server_that_stalls_times_out(world) -> None:
    world.sink(0, greeting="stall")
    outcome = deliver(
        world.client("smtp_helo_timeout = 1s\n"), job(f"[{world.addresses[0]}]", "bob@x.test")
    )
    a = world.addresses[0]
    assert words(outcome) == [
        (
            "4.4.2",
            f"conversation with {a}[{a}] timed out while receiving the initial server greeting",
        )
    ]


def test_a_stall_after_the_message_is_the_data_done_timeout(world) -> None:
    world.sink(0, stall_after="BODY")
    outcome = deliver(
        world.client("smtp_data_done_timeout = 1s\n"), job(f"[{world.addresses[0]}]", "b@x.test")
    )
    assert outcome.verdicts[0].status.text.endswith(
        "timed out while sending end of data -- message may be sent more than once"
    )
    assert outcome.verdicts[0].status.dsn == "4.4.2"


# -- per-recipient replies ------------------------------------------------------------------------
def test_each_recipient_gets_its_own_reply(world) -> None:
    world.sink(
        0,
        rcpt={
            "gone@example.test": "550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown",
            "full@example.test": "452 4.2.2 <full@example.test>: mailbox full",
        },
    )
    outcome = deliver(
        world.client(),
        job(f"[{world.addresses[0]}]", "ok@example.test", "gone@example.test", "full@example.test"),
    )
    a = world.addresses[0]
    assert words(outcome) == [
        ("2.0.0", "250 2.0.0 Ok: queued as SINK1"),
        (
            "5.1.1",
            f"host {a}[{a}] said: 550 5.1.1 <gone@example.test>: Recipient address rejected: "
            "User unknown (in reply to RCPT TO command)",
        ),
        (
            "4.2.2",
            f"host {a}[{a}] said: 452 4.2.2 <full@example.test>: mailbox full "
            "(in reply to RCPT TO command)",
        ),
    ]


def test_a_4xx_on_a_backup_server_is_retried_on_the_next_server(world) -> None:
    world.sink(0, rcpt={"bob@example.test": "450 4.2.0 greylisted"})
    second = world.sink(1)
    nexthop = f"[{world.addresses[0]}] [{world.addresses[1]}]"
    outcome = deliver(world.client(), job(nexthop, "bob@example.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(second.messages) == 1


def test_a_5xx_bounces_even_when_other_servers_remain(world) -> None:
    world.sink(0, rcpt={"bob@example.test": "550 5.1.1 no such user"})
    second = world.sink(1)
    nexthop = f"[{world.addresses[0]}] [{world.addresses[1]}]"
    outcome = deliver(world.client(), job(nexthop, "bob@example.test"))
    assert outcome.verdicts[0].status.dsn == "5.1.1"
    assert not second.messages


def test_soft_bounce_defers_what_would_bounce(world) -> None:
    world.sink(0, rcpt={"bob@example.test": "550 5.1.1 no such user"})
    outcome = deliver(
        world.client("soft_bounce = yes\n"), job(f"[{world.addresses[0]}]", "bob@example.test")
    )
    assert outcome.verdicts[0].status.dsn == "4.1.1"


def test_a_refused_sender_bounces_every_recipient(world) -> None:
    world.sink(0, mail="553 5.7.1 <ann@example.org>: Sender address rejected")
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test", "b@x.test"))
    a = world.addresses[0]
    text = (
        f"host {a}[{a}] said: 553 5.7.1 <ann@example.org>: Sender address rejected "
        "(in reply to MAIL FROM command)"
    )
    assert words(outcome) == [("5.7.1", text), ("5.7.1", text)]


def test_a_refusal_after_the_message_names_end_of_data(world) -> None:
    world.sink(0, dot="554 5.7.1 content rejected")
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    assert outcome.verdicts[0].status.text.endswith(
        "554 5.7.1 content rejected (in reply to end of DATA command)"
    )


def test_without_pipelining_commands_go_one_by_one(world) -> None:
    sink = world.sink(0, ehlo=("8BITMIME",))
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test", "b@x.test"))
    assert [v.status.dsn for v in outcome.verdicts] == ["2.0.0", "2.0.0"]
    assert sink.commands[1:5] == [
        "MAIL FROM:<ann@example.org>",
        "RCPT TO:<a@x.test>",
        "RCPT TO:<b@x.test>",
        "DATA",
    ]


# -- message properties ---------------------------------------------------------------------------
def test_a_message_larger_than_the_server_size_bounces(world) -> None:
    world.sink(0, ehlo=("SIZE 100", "PIPELINING"))
    big = CONTENT + b"x" * 500 + b"\n"
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test", content=big))
    a = world.addresses[0]
    size = len(big) + big.count(b"\n")
    assert words(outcome) == [
        ("5.3.4", f"message size {size} exceeds size limit 100 of server {a}[{a}]")
    ]


def test_dsn_parameters_are_passed_on(world) -> None:
    sink = world.sink(0)
    envelope = Envelope("ann@example.org", ret=DsnRet.HDRS, envid="id+1=2")
    outcome = deliver(
        world.client(),
        job(
            f"[{world.addresses[0]}]",
            "bob@example.test",
            envelope=envelope,
            notify=(Notify.SUCCESS | Notify.FAILURE).value,
            orcpt="rfc822;bob+list@example.test",
        ),
    )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    mail = next(c for c in sink.commands if c.startswith("MAIL"))
    rcpt = next(c for c in sink.commands if c.startswith("RCPT"))
    assert mail == f"MAIL FROM:<ann@example.org> SIZE={len(CONTENT) + 4} ENVID=id+2B1+3D2 RET=HDRS"
    assert (
        rcpt
        == "RCPT TO:<bob@example.test> ORCPT=rfc822;bob+2Blist@example.test NOTIFY=SUCCESS,FAILURE"
    )


def test_dsn_parameters_are_left_out_when_the_server_has_no_dsn(world) -> None:
    sink = world.sink(0, ehlo=("PIPELINING",))
    envelope = Envelope("ann@example.org", ret=DsnRet.FULL, envid="x")
    deliver(world.client(), job(f"[{world.addresses[0]}]", "b@x.test", envelope=envelope, notify=2))
    assert "MAIL FROM:<ann@example.org>" in sink.commands
    assert "RCPT TO:<b@x.test>" in sink.commands


def test_8bit_mail_goes_with_body_8bitmime_or_is_converted(world) -> None:
    eight = (
        b"Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n\n" + "gr\u00fc\u00dfe\n".encode()
    )
    modern = world.sink(0)
    old = world.sink(1, ehlo=("PIPELINING", "SIZE 100000"))
    deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test", content=eight))
    deliver(world.client(), job(f"[{world.addresses[1]}]", "a@x.test", content=eight))
    assert "BODY=8BITMIME" in next(c for c in modern.commands if c.startswith("MAIL"))
    assert "gr\u00fc\u00dfe".encode() in modern.messages[0].data
    assert not next(c for c in old.commands if c.startswith("MAIL")).count("SIZE=")
    assert old.messages[0].data.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable" in old.messages[0].data
    assert b"gr=C3=BC=C3=9Fe" in old.messages[0].data


def test_smtputf8_mail_bounces_when_no_server_offers_it(world) -> None:
    world.sink(0, ehlo=("PIPELINING", "8BITMIME"))
    envelope = Envelope("j\u00f6rg@example.org", smtputf8=True)
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "b@x.test", envelope=envelope))
    a = world.addresses[0]
    assert words(outcome) == [
        (
            "5.6.7",
            "message requires SMTPUTF8, but no server was found that supports SMTPUTF8. "
            f"The last attempted server was {a}[{a}]",
        )
    ]


def test_smtputf8_mail_goes_with_smtputf8(world) -> None:
    sink = world.sink(0)
    envelope = Envelope("j\u00f6rg@example.org", smtputf8=True)
    deliver(world.client(), job(f"[{world.addresses[0]}]", "b@x.test", envelope=envelope))
    assert "MAIL FROM:<j\u00f6rg@example.org> SIZE=47 SMTPUTF8" in sink.commands


def test_long_lines_arrive_folded(world) -> None:
    sink = world.sink(0)
    long_line = b"y" * 2500
    deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test", content=CONTENT + long_line))
    lines = sink.messages[0].data.split(b"\r\n")
    assert max(len(line) for line in lines) == 998
    assert b"".join(line.lstrip(b" ") for line in lines[-4:]) == long_line


# -- connection reuse -----------------------------------------------------------------------------
def always_cached(world) -> str:
    """main.cf lines that cache connections to the first sink's address whatever the load."""
    return f"smtp_connection_cache_destinations = {world.addresses[0]}\n"


def test_one_connection_carries_several_messages(world) -> None:
    sink = world.sink(0)
    client = world.client(always_cached(world))

    async def three() -> list[Outcome]:
        outcomes = []
        for _ in range(3):
            the_job = job(f"[{world.addresses[0]}]", "a@x.test")
            outcomes.append(await Delivery(client, the_job, "smtp", 0).run())
        await client.cache.close_all(1)
        return outcomes

    outcomes = asyncio.run(three())
    assert [o.verdicts[0].status.dsn for o in outcomes] == ["2.0.0"] * 3
    assert sink.connections == 1
    assert len(sink.messages) == 3
    assert sink.commands.count("RSET") == 2  # the probe before each reuse


def test_a_lost_connection_before_the_final_reply_defers_and_is_not_reused(world) -> None:
    sink = world.sink(0, close_after="BODY")
    client = world.client(always_cached(world))

    async def two() -> list[Outcome]:
        outcomes = []
        for _ in range(2):
            the_job = job(f"[{world.addresses[0]}]", "a@x.test")
            outcomes.append(await Delivery(client, the_job, "smtp", 0).run())
        await client.cache.close_all(1)
        return outcomes

    first, second = asyncio.run(two())
    assert first.verdicts[0].status.dsn == "4.4.2"  # closed before the reply to the dot
    assert second.verdicts[0].status.dsn == "4.4.2"
    assert sink.connections == 2
    assert len(sink.messages) == 2


def test_a_cached_connection_the_server_closed_is_replaced(world) -> None:
    sink = world.sink(0, close_after="DOT")
    client = world.client(always_cached(world))

    async def two() -> list[Outcome]:
        outcomes = []
        for _ in range(2):
            the_job = job(f"[{world.addresses[0]}]", "a@x.test")
            outcomes.append(await Delivery(client, the_job, "smtp", 0).run())
            await asyncio.sleep(0.2)  # the server hangs up meanwhile
        await client.cache.close_all(1)
        return outcomes

    outcomes = asyncio.run(two())
    assert [o.verdicts[0].status.dsn for o in outcomes] == ["2.0.0", "2.0.0"]
    assert sink.connections == 2


def in_a_row(client: Client, jobs: list[Job], pause: float = 0.0) -> list[Outcome]:
    """JOBS delivered one after the other (PAUSE seconds apart), as qmgr sends them."""

    async def run() -> list[Outcome]:
        outcomes = []
        for index, the_job in enumerate(jobs):
            if index and pause:
                await asyncio.sleep(pause)
            outcomes.append(await Delivery(client, the_job, "smtp", 0).run())
        await client.cache.close_all(1)
        return outcomes

    return asyncio.run(run())


def test_on_demand_caching_starts_with_back_to_back_deliveries(world) -> None:
    # Postfix's qmgr turns caching on for a destination when a delivery follows the last
    # one within a second: the first two messages each open a connection, the second
    # keeps its own, the third goes over it.
    sink = world.sink(0)
    outcomes = in_a_row(world.client(), [job(f"[{world.addresses[0]}]", "a@x.test")] * 4)
    assert [o.verdicts[0].status.dsn for o in outcomes] == ["2.0.0"] * 4
    assert sink.connections == 2
    assert [o.verdicts[0].conn_use for o in outcomes] == [1, 1, 2, 3]


def test_when_the_rush_ends_cached_connections_are_used_up_but_none_is_kept(world) -> None:
    # A delivery neither back-to-back nor beside another turns storing off, not loading:
    # it takes the connection still cached (Postfix makes no new connection while cached
    # ones wait) and closes it; caching starts over with the next back-to-back delivery.
    sink = world.sink(0)
    client = world.client()
    the_job = job(f"[{world.addresses[0]}]", "a@x.test")

    async def run() -> list[int]:
        uses = []
        for pause in (0, 0, 0, 1.5, 0):
            await asyncio.sleep(pause)
            outcome = await Delivery(client, the_job, "smtp", 0).run()
            uses.append(outcome.verdicts[0].conn_use)
        await client.cache.close_all(1)
        return uses

    assert asyncio.run(run()) == [1, 1, 2, 3, 1]
    assert sink.connections == 3


def test_deliveries_far_apart_are_not_cached(world) -> None:
    sink = world.sink(0)
    client = world.client()
    outcomes = in_a_row(client, [job(f"[{world.addresses[0]}]", "a@x.test")] * 3, pause=1.2)
    assert [o.verdicts[0].conn_use for o in outcomes] == [1, 1, 1]
    assert sink.connections == 3


def test_concurrent_deliveries_alone_do_not_start_caching(world) -> None:
    sink = world.sink(0)
    client = world.client()

    async def together() -> int:
        the_job = job(f"[{world.addresses[0]}]", "a@x.test")
        await asyncio.gather(*(Delivery(client, the_job, "smtp", 0).run() for _ in range(3)))
        kept = len(client.cache)
        await client.cache.close_all(1)
        return kept

    assert asyncio.run(together()) == 0
    assert sink.connections == 3


def test_without_on_demand_caching_only_listed_destinations_are_cached(world) -> None:
    listed, other = world.sink(0), world.sink(1)
    client = world.client("smtp_connection_cache_on_demand = no\n" + always_cached(world))
    in_a_row(client, [job(f"[{world.addresses[0]}]", "a@x.test")] * 3)
    in_a_row(client, [job(f"[{world.addresses[1]}]", "a@x.test")] * 3)
    assert listed.connections == 1
    assert other.connections == 3


def test_a_connection_is_not_reused_past_the_reuse_time_limit(world) -> None:
    # Postfix checks the limit when a session would go back to the cache: the second
    # message still goes over the first connection, then that connection is closed.
    sink = world.sink(0)
    client = world.client("smtp_connection_reuse_time_limit = 1s\n" + always_cached(world))
    outcomes = in_a_row(client, [job(f"[{world.addresses[0]}]", "a@x.test")] * 3, pause=1.1)
    assert [o.verdicts[0].conn_use for o in outcomes] == [1, 2, 1]
    assert sink.connections == 2
    assert sink.commands.count("QUIT") >= 1


def test_delays_split_at_the_start_of_the_transaction(world) -> None:
    world.sink(0, greeting="220 slow.example.test ESMTP")
    before = time.time()
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    verdict = outcome.verdicts[0]
    assert before < verdict.conn_setup_done < verdict.done <= time.time()


def test_a_failure_before_any_transaction_counts_as_set_up_time(world) -> None:
    # Postfix's smtp_bulk_fail: `delays=a/b/30/0` for a connection that timed out.
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    verdict = outcome.verdicts[0]
    assert verdict.status.dsn == "4.4.1"
    assert verdict.conn_setup_done == verdict.done > 0


# -- next hops without DNS ------------------------------------------------------------------------
def test_relayhost_style_next_hop_with_port(world) -> None:
    sink = SmtpSink(host=world.addresses[2], port=0)
    world.sinks.append(sink)
    outcome = deliver(world.client(), job(f"[{world.addresses[2]}]:{sink.port}", "a@x.test"))
    a = world.addresses[2]
    assert outcome.verdicts[0].relay == f"{a}[{a}]:{sink.port}"


def test_a_bad_next_hop_defers_as_a_configuration_problem(world) -> None:
    outcome = deliver(world.client(), job("[unclosed", "a@x.test"))
    assert words(outcome) == [("4.3.5", "server configuration error")]


def test_a_fallback_relay_takes_what_the_destination_refused(world) -> None:
    fallback = world.sink(1)
    client = world.client(f"smtp_fallback_relay = [{world.addresses[1]}]\n")
    outcome = deliver(client, job(f"[{world.addresses[0]}]", "a@x.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(fallback.messages) == 1


def test_ipv6_servers(world) -> None:
    try:
        sink = SmtpSink(host="::1", port=0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    world.sinks.append(sink)
    outcome = deliver(world.client(), job(f"[ipv6:::1]:{sink.port}", "a@x.test"))
    assert outcome.verdicts[0].relay == f"::1[::1]:{sink.port}"
    assert len(sink.messages) == 1


def test_inet_protocols_ipv4_skips_ipv6_addresses(world) -> None:
    sink = world.sink(0)
    world.zone(
        {
            ("dual.example.test", "A"): [world.addresses[0]],
            ("dual.example.test", "AAAA"): ["::1"],
        }
    )
    outcome = deliver(
        world.client("inet_protocols = ipv4\n"), job("[dual.example.test]", "a@x.test")
    )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(sink.messages) == 1
    assert ("dual.example.test", "AAAA") not in world.dns.queries


# -- TLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory / "ca")
    signed = make_server_cert(directory / "signed", ["mx.example.test"], ca)
    self_signed = make_server_cert(directory / "self", ["mx.example.test"])
    return ca, signed, self_signed


def server_context(
    cert, *, require_client_cert: bool = False, tls12: bool = False
) -> ssl.SSLContext:
    """A sink's TLS: REQUIRE_CLIENT_CERT makes the client fail (it has none), during the
    handshake with TLS12, after it (the session breaks at once) with TLS 1.3."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cert.cert)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def test_may_uses_starttls_when_offered(world, pki, caplog) -> None:
    sink = world.sink(0, tls=server_context(pki[2]))
    with caplog.at_level(logging.INFO, logger="sdmail"):
        outcome = deliver(
            world.client("smtp_tls_security_level = may\nsmtp_tls_loglevel = 1\n"),
            job(f"[{world.addresses[0]}]", "a@x.test"),
        )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert sink.messages[0].tls
    assert sink.commands.count("EHLO client.example.test") == 2
    a = world.addresses[0]
    assert any(
        r.getMessage().startswith(
            f"Untrusted TLS connection established to {a}[{a}]:{world.port}: TLSv1"
        )
        for r in caplog.records
    )


def test_may_goes_plain_when_not_offered(world) -> None:
    sink = world.sink(0)
    outcome = deliver(
        world.client("smtp_tls_security_level = may\n"), job(f"[{world.addresses[0]}]", "a@x.test")
    )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert not sink.messages[0].tls


def test_encrypt_defers_when_starttls_is_not_offered(world) -> None:
    sink = world.sink(0)
    outcome = deliver(
        world.client("smtp_tls_security_level = encrypt\n"),
        job(f"[{world.addresses[0]}]", "a@x.test"),
    )
    a = world.addresses[0]
    assert words(outcome) == [("4.7.4", f"TLS is required, but was not offered by host {a}[{a}]")]
    assert outcome.site_failure
    assert not sink.messages


def test_verify_accepts_a_trusted_certificate_naming_the_mx_host(world, pki) -> None:
    ca, signed, _ = pki
    sink = world.sink(0, tls=server_context(signed))
    world.zone(
        {
            ("example.test", "MX"): ["10 mx.example.test."],
            ("mx.example.test", "A"): [world.addresses[0]],
        }
    )
    client = world.client(f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca.cert}\n")
    outcome = deliver(client, job("example.test", "a@example.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert sink.messages[0].tls


def test_verify_refuses_a_certificate_for_another_name(world, pki) -> None:
    ca, signed, _ = pki
    world.sink(0, tls=server_context(signed))
    world.zone(
        {
            ("example.test", "MX"): ["10 other.example.test."],
            ("other.example.test", "A"): [world.addresses[0]],
        }
    )
    client = world.client(f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca.cert}\n")
    outcome = deliver(client, job("example.test", "a@example.test"))
    assert words(outcome) == [("4.7.5", "Server certificate not verified")]


def test_verify_refuses_an_untrusted_certificate(world, pki) -> None:
    ca, _, self_signed = pki
    world.sink(0, tls=server_context(self_signed))
    world.zone(
        {
            ("example.test", "MX"): ["10 mx.example.test."],
            ("mx.example.test", "A"): [world.addresses[0]],
        }
    )
    client = world.client(f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca.cert}\n")
    outcome = deliver(client, job("example.test", "a@example.test"))
    assert words(outcome) == [("4.7.5", "Server certificate not verified")]


def test_secure_matches_the_destination_domain(world, pki) -> None:
    ca, signed, _ = pki
    sink = world.sink(0, tls=server_context(signed))
    world.zone(
        {
            ("example.test", "MX"): ["10 anything.example.test."],
            ("anything.example.test", "A"): [world.addresses[0]],
        }
    )
    client = world.client(f"smtp_tls_security_level = secure\nsmtp_tls_CAfile = {ca.cert}\n")
    outcome = deliver(client, job("example.test", "a@example.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"  # mx.example.test is below example.test
    assert sink.messages[0].tls


def tlsa_zone(
    world,
    cert_files,
    *,
    secure: bool,
    digest: bytes | None = None,
    usage: int = 3,
    mx: str = "mx.example.test",
) -> None:
    spki = spki_der(cert_files.cert)
    data = (digest or hashlib.sha256(spki).digest()).hex()
    world.zone(
        {
            ("example.test", "MX"): [f"10 {mx}."],
            (mx, "A"): [world.addresses[0]],
            (f"_{world.port}._tcp.{mx}", "TLSA"): [f"{usage} 1 1 {data}"],
        },
        secure=[f"_{world.port}._tcp.{mx}"] if secure else [],
    )


@pytest.mark.parametrize("usage", [3, 2], ids=["dane-ee", "dane-ta"])
def test_dane_checks_the_certificate_against_validated_tlsa(
    world, pki, caplog, tmp_path, usage
) -> None:
    ca, signed, self_signed = pki
    if usage == 3:  # the server's own certificate is named
        sink = world.sink(0, tls=server_context(self_signed))
        tlsa_zone(world, self_signed, secure=True)
    else:  # a trust anchor in the chain the server sends, and the chain up to it
        sink = world.sink(0, tls=server_context(chain_file(tmp_path / "chain.pem", signed, ca)))
        tlsa_zone(world, ca, secure=True, usage=2)
    with caplog.at_level(logging.INFO, logger="sdmail"):
        outcome = deliver(
            world.client("smtp_tls_security_level = dane\nsmtp_tls_loglevel = 1\n"),
            job("example.test", "a@example.test"),
        )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert sink.messages[0].tls
    assert any(r.getMessage().startswith("Verified TLS connection") for r in caplog.records)


def test_dane_refuses_a_certificate_the_tlsa_records_do_not_name(world, pki) -> None:
    world.sink(0, tls=server_context(pki[2]))
    tlsa_zone(world, pki[2], secure=True, digest=b"\x01" * 32)
    outcome = deliver(
        world.client("smtp_tls_security_level = dane\n"), job("example.test", "a@example.test")
    )
    assert words(outcome) == [("4.7.5", "Server certificate not verified")]


@pytest.mark.parametrize(
    "sent_anchor,mx",
    [
        (False, "mx.example.test"),  # the server sends its own certificate only
        (True, "mx2.example.test"),  # the anchor certified another host than the MX
    ],
    ids=["chain-without-anchor", "another-host"],
)
def test_dane_ta_refuses_what_does_not_verify(world, pki, tmp_path, sent_anchor, mx) -> None:
    ca, signed, _ = pki
    sent = chain_file(tmp_path / "chain.pem", signed, ca) if sent_anchor else signed
    world.sink(0, tls=server_context(sent))
    tlsa_zone(world, ca, secure=True, usage=2, mx=mx)
    outcome = deliver(
        world.client("smtp_tls_security_level = dane\n"), job("example.test", "a@example.test")
    )
    assert words(outcome) == [("4.7.5", "Server certificate not verified")]
    assert outcome.site_failure


def test_pkix_ta_records_alone_mean_encrypt_without_checks(world, pki, tmp_path) -> None:
    # Postfix: with only unusable TLSA records, TLS is still required but not checked.
    ca, _, self_signed = pki
    sink = world.sink(0, tls=server_context(self_signed))
    tlsa_zone(world, ca, secure=True, usage=0)
    outcome = deliver(
        world.client("smtp_tls_security_level = dane\n"), job("example.test", "a@example.test")
    )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert sink.messages[0].tls
    plain = world.sink(1)
    world.dns.close()
    world.zone(
        {
            ("example.test", "MX"): ["10 mx.example.test."],
            ("mx.example.test", "A"): [world.addresses[1]],
            (f"_{world.port}._tcp.mx.example.test", "TLSA"): ["0 1 1 " + "ab" * 32],
        },
        secure=[f"_{world.port}._tcp.mx.example.test"],
    )
    outcome = deliver(
        world.client("smtp_tls_security_level = dane\n"), job("example.test", "a@example.test")
    )
    assert outcome.verdicts[0].status.dsn == "4.7.4"  # TLS required, not offered
    assert not plain.messages


def test_dane_without_validated_tlsa_is_opportunistic(world, pki) -> None:
    sink = world.sink(0)  # no STARTTLS at all
    tlsa_zone(world, pki[2], secure=False, digest=b"\x01" * 32)
    outcome = deliver(
        world.client("smtp_tls_security_level = dane\n"), job("example.test", "a@example.test")
    )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert not sink.messages[0].tls


def test_a_failed_opportunistic_handshake_defers_a_new_message(world, pki) -> None:
    world.sink(0, tls=server_context(pki[2], require_client_cert=True, tls12=True))
    outcome = deliver(
        world.client("smtp_tls_security_level = may\n"), job(f"[{world.addresses[0]}]", "a@x.test")
    )
    assert words(outcome) == [("4.7.5", "Cannot start TLS: handshake failure")]
    assert not outcome.site_failure


@pytest.mark.parametrize("tls12", [True, False], ids=["handshake", "session"])
def test_an_older_message_is_retried_in_plain_text_after_tls_fails(world, pki, tls12) -> None:
    sink = world.sink(0, tls=server_context(pki[2], require_client_cert=True, tls12=tls12))
    outcome = deliver(
        world.client("smtp_tls_security_level = may\n"),
        job(f"[{world.addresses[0]}]", "a@x.test"),
        preactive=400.0,  # in the queue longer than minimal_backoff_time
    )
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert sink.connections == 2
    assert not sink.messages[0].tls


def test_a_tls_session_that_breaks_defers_a_new_message(world, pki) -> None:
    world.sink(0, tls=server_context(pki[2], require_client_cert=True))
    outcome = deliver(
        world.client("smtp_tls_security_level = may\n"), job(f"[{world.addresses[0]}]", "a@x.test")
    )
    assert outcome.verdicts[0].status.dsn == "4.4.2"


# -- LMTP -----------------------------------------------------------------------------------------
def lmtp_deliver(client: Client, the_job: Job) -> Outcome:
    async def run() -> Outcome:
        try:
            return await Delivery(client, the_job, "lmtp", 0).run()
        finally:
            await client.cache.close_all(1)

    return asyncio.run(run())


def test_lmtp_reads_one_reply_per_accepted_recipient(world) -> None:
    sink = world.sink(
        0,
        lmtp=True,
        rcpt={"nobody@x.test": "550 5.1.1 <nobody@x.test> User doesn't exist"},
        dot=["250 2.0.0 <a@x.test> Saved", "452 4.2.2 <b@x.test> Quota exceeded"],
    )
    outcome = lmtp_deliver(
        world.client(mode="lmtp"),
        job(f"inet:[{world.addresses[0]}]", "a@x.test", "nobody@x.test", "b@x.test"),
    )
    a = world.addresses[0]
    assert words(outcome) == [
        ("2.0.0", "250 2.0.0 <a@x.test> Saved"),
        (
            "5.1.1",
            f"host {a}[{a}] said: 550 5.1.1 <nobody@x.test> User doesn't exist "
            "(in reply to RCPT TO command)",
        ),
        (
            "4.2.2",
            f"host {a}[{a}] said: 452 4.2.2 <b@x.test> Quota exceeded "
            "(in reply to end of DATA command)",
        ),
    ]
    assert sink.commands[0] == "LHLO client.example.test"


def test_lmtp_never_looks_up_mx_records(world) -> None:
    sink = world.sink(0, lmtp=True)
    world.zone(
        {("lmtp.example.test", "A"): [world.addresses[0]], ("lmtp.example.test", "MX"): ["10 x."]}
    )
    outcome = lmtp_deliver(world.client(mode="lmtp"), job("lmtp.example.test", "a@x.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(sink.messages) == 1
    assert ("lmtp.example.test", "MX") not in world.dns.queries


def test_a_relayhost_that_does_not_resolve_is_deferred_as_a_configuration_problem(world) -> None:
    world.zone({("other.example.test", "A"): ["192.0.2.1"]})
    client = world.client("relayhost = [relay.nowhere.test]\n")
    outcome = deliver(client, job("[relay.nowhere.test]", "a@x.test"))
    assert words(outcome) == [
        (
            "4.3.5",
            "Host or domain name not found. Name service error for "
            "name=relay.nowhere.test type=A: Host not found",
        )
    ]


# -- hostile servers ------------------------------------------------------------------------------
def test_an_endless_greeting_line_is_cut_and_delivery_goes_on(world) -> None:
    sink = world.sink(0, greeting="220 " + "x" * 100_000)
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    assert outcome.verdicts[0].status.dsn == "2.0.0"
    assert len(sink.messages) == 1


def test_a_reply_that_is_not_smtp_bounces_with_5_5_0(world) -> None:
    world.sink(0, rcpt={"a@x.test": "hello world\n999 what"})
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    a = world.addresses[0]
    assert words(outcome) == [
        ("5.5.0", f"host {a}[{a}] said: hello world 999 what (in reply to RCPT TO command)")
    ]


def test_a_2xx_where_354_belongs_is_a_protocol_error(world) -> None:
    world.sink(0, data="250 2.0.0 sure")
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    a = world.addresses[0]
    assert words(outcome) == [
        (
            "5.5.0",
            f"Protocol error: host {a}[{a}] said: 250 2.0.0 sure (in reply to DATA command)",
        )
    ]


def test_a_huge_multi_line_reply_is_read_with_its_text_capped(world) -> None:
    lines = "\n".join(["550-5.1.1 go away"] * 20000)
    world.sink(0, rcpt={"a@x.test": lines + "\n550 5.1.1 really"})
    outcome = deliver(world.client(), job(f"[{world.addresses[0]}]", "a@x.test"))
    status = outcome.verdicts[0].status
    assert status.dsn == "5.1.1"
    assert status.text.startswith(f"host {world.addresses[0]}[{world.addresses[0]}] said: 550-")
    assert len(status.text) < 5000
