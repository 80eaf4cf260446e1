"""The discard agent: every recipient sent with relay=none and the next hop as the reason."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmail.agent import AgentSettings, handle_request
from sdmail.core import qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.dsn import Status
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.discard.service import discard_status, main, make_agent


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path) as the_spool:
        the_spool.create_directories()
        yield the_spool


def queue_message(spool: Spool, nexthop: str, *addresses: str) -> DeliveryRequest:
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
        transport="discard",
        nexthop=nexthop,
        sender=envelope.sender,
        recipients=tuple(RequestRecipient(r.address, r.offset or 0) for r in stored.recipients),
        arrival=float(envelope.arrival_sec),
    )


def deliver(spool: Spool, request: DeliveryRequest) -> DeliveryResult:
    settings = AgentSettings(str(spool.path), "sdmail", 2, 30, 10)
    return handle_request(request, make_agent(None), settings, spool)  # type: ignore[arg-type]


def done_marks(spool: Spool, queue_id: str) -> list[bool]:
    with spool.open(QueueName.ACTIVE, queue_id) as handle:
        return [r.done for r in qfile.read_envelope(handle.fd).envelope.recipients]


def test_every_recipient_is_sent_marked_done_and_logged_with_relay_none(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = queue_message(spool, "silently dropped", "a@spam.example", "b@spam.example")
    result = deliver(spool, request)
    assert [(r.status, r.dsn, r.text, r.relay) for r in result.recipients] == [
        ("sent", "2.0.0", "silently dropped", "none"),
        ("sent", "2.0.0", "silently dropped", "none"),
    ]
    assert done_marks(spool, request.queue_id) == [True, True]
    lines = [r.getMessage() for r in caplog.records]
    pattern = re.compile(
        rf"{request.queue_id}: to=<a@spam\.example>, relay=none, delay=[\d.]+, "
        r"delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=2\.0\.0, status=sent \(silently dropped\)"
    )
    assert any(pattern.fullmatch(line) for line in lines), lines


def test_an_empty_next_hop_says_discarded() -> None:
    assert discard_status("") == (Status("2.0.0", "discarded"), None)


def test_a_success_code_in_the_next_hop_is_used() -> None:
    assert discard_status("2.7.0 policy drop") == (Status("2.7.0", "policy drop"), None)


def test_a_failure_code_in_the_next_hop_is_ignored_and_reported(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    assert discard_status("5.1.1 gone") == (Status("2.0.0", "gone"), "5.1.1")
    request = queue_message(spool, "5.1.1 gone", "a@spam.example")
    assert deliver(spool, request).recipients[0].status == "sent"
    assert any('ignoring dsn code "5.1.1"' in r.getMessage() for r in caplog.records)


def test_without_its_socket_the_service_exits_with_ex_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert main(["-c", str(tmp_path)]) == 78
