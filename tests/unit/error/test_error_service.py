"""The error and retry agents: every recipient bounced (error) or deferred (retry) with the
next hop as the reason."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmail.agent import Agent, AgentSettings, handle_request
from sdmail.core import qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.dsn import Status
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.error.service import error_status, main, make_deliver


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path) as the_spool:
        the_spool.create_directories()
        yield the_spool


def queue_message(spool: Spool, transport: str, nexthop: str, *addresses: str) -> DeliveryRequest:
    envelope = Envelope(
        sender="ann@example.org",
        recipients=tuple(Recipient(a, orig_address=a) for a in addresses),
        arrival_sec=int(time.time()),
    )
    created = spool.create(QueueName.ACTIVE, envelope, b"Subject: x\n\nbody\n")
    with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
        stored = qfile.read_envelope(handle.fd).envelope
    return DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport=transport,
        nexthop=nexthop,
        sender=envelope.sender,
        recipients=tuple(RequestRecipient(r.address, r.offset or 0) for r in stored.recipients),
        arrival=float(envelope.arrival_sec),
    )


def deliver(spool: Spool, service: str, request: DeliveryRequest) -> DeliveryResult:
    settings = AgentSettings(str(spool.path), "sdmail", 2, 30, 10)
    agent = Agent(service, deliver_request=make_deliver(service))
    return handle_request(request, agent, settings, spool)


def done_marks(spool: Spool, queue_id: str) -> list[bool]:
    with spool.open(QueueName.ACTIVE, queue_id) as handle:
        return [r.done for r in qfile.read_envelope(handle.fd).envelope.recipients]


def test_error_bounces_every_recipient_with_the_code_and_text_of_the_next_hop(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = queue_message(
        spool, "error", "5.1.1 User unknown in virtual alias table", "a@x.test", "b@x.test"
    )
    result = deliver(spool, "error", request)
    assert [(r.status, r.dsn, r.text, r.relay) for r in result.recipients] == [
        ("bounced", "5.1.1", "User unknown in virtual alias table", "none"),
    ] * 2
    assert done_marks(spool, request.queue_id) == [True, True]
    pattern = re.compile(
        rf"{request.queue_id}: to=<b@x\.test>, relay=none, delay=[\d.]+, "
        r"delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=5\.1\.1, "
        r"status=bounced \(User unknown in virtual alias table\)"
    )
    assert any(pattern.fullmatch(r.getMessage()) for r in caplog.records)


def test_retry_defers_every_recipient_and_leaves_them_to_do(spool: Spool) -> None:
    request = queue_message(spool, "retry", "4.4.5 try again tomorrow", "a@x.test")
    result = deliver(spool, "retry", request)
    assert [(r.status, r.dsn, r.text) for r in result.recipients] == [
        ("deferred", "4.4.5", "try again tomorrow")
    ]
    assert done_marks(spool, request.queue_id) == [False]


@pytest.mark.parametrize(
    ("service", "nexthop", "expected"),
    [
        ("error", "mailbox moved", (Status("5.0.0", "mailbox moved"), None)),
        ("error", "", (Status("5.0.0", "mail delivery error"), None)),
        ("error", "4.7.1 later", (Status("5.0.0", "later"), "4.7.1")),
        ("retry", "busy", (Status("4.0.0", "busy"), None)),
        ("retry", "5.1.1 gone", (Status("4.0.0", "gone"), "5.1.1")),
        ("retry", "", (Status("4.0.0", "mail delivery deferred"), None)),
    ],
)
def test_codes_default_by_service_and_wrong_classes_are_ignored(
    service: str, nexthop: str, expected: tuple[Status, str | None]
) -> None:
    assert error_status(service, nexthop) == expected


def test_a_code_of_the_wrong_class_is_reported_in_the_log(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    request = queue_message(spool, "retry", "5.1.1 gone", "a@x.test")
    assert deliver(spool, "retry", request).recipients[0].status == "deferred"
    assert any('retry: ignoring dsn code "5.1.1"' in r.getMessage() for r in caplog.records)


def test_other_service_names_are_refused() -> None:
    with pytest.raises(ValueError, match="bad error service name"):
        error_status("discard", "x")


def test_main_refuses_an_unknown_service_name_as_a_usage_error() -> None:
    assert main(["-n", "bogus"]) == 64
    assert main(["-n", "../x"]) == 64


def test_without_its_socket_the_service_exits_with_ex_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert main(["-c", str(tmp_path), "-n", "retry"]) == 78
