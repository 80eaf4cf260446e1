"""One virtual recipient, in Postfix's order, through the agent skeleton: loop check,
mailbox lookup, owner lookup, the write as the owner, done marks and log lines."""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sdmail.agent import Agent, AgentSettings, handle_request
from sdmail.core import qfile
from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult, RequestRecipient
from sdmail.core.records import Envelope, QueueName, Recipient
from sdmail.core.spool import Spool
from sdmail.virtual.service import VirtualDelivery
from sdmail.virtual.settings import VirtualSettings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing to the owner needs root")

NOBODY = pwd.getpwnam("nobody")
CONTENT = b"Subject: hello\nFrom: ann@example.org\n\nbody\n"


@pytest.fixture
def base() -> Iterator[Path]:
    # Not tmp_path: its parents are 0700 and the child runs as nobody.
    top = Path(tempfile.mkdtemp(prefix="sdmail-vbase-", dir="/var/tmp"))
    top.chmod(0o755)
    os.chown(top, NOBODY.pw_uid, NOBODY.pw_gid)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    (tmp_path / "queue").mkdir()
    with Spool(tmp_path / "queue") as the_spool:
        the_spool.create_directories()
        yield the_spool


def settings_for(base: Path, **changes: object) -> VirtualSettings:
    settings = VirtualSettings(
        virtual_mailbox_maps=("inline:{ joe@x.test=x.test/joe/, box@x.test=box }",),
        virtual_mailbox_base=str(base),
        virtual_uid_maps=(f"static:{NOBODY.pw_uid}",),
        virtual_gid_maps=(f"static:{NOBODY.pw_gid}",),
        virtual_minimum_uid=100,
        virtual_mailbox_limit=51200000,
        virtual_mailbox_lock=("fcntl", "dotlock"),
        deliver_lock_attempts=2,
        deliver_lock_delay=1,
        stale_lock_time=500,
        recipient_delimiter="+",
        owner_request_special=True,
        double_bounce_sender="double-bounce",
        enable_original_recipient=True,
    )
    return replace(settings, **changes)


def deliver(
    spool: Spool, settings: VirtualSettings, address: str, content: bytes = CONTENT
) -> tuple[DeliveryRequest, DeliveryResult]:
    envelope = Envelope(
        sender="ann@example.org",
        recipients=(Recipient(address, orig_address="List@x.test"),),
        arrival_sec=int(time.time()),
    )
    created = spool.create(QueueName.ACTIVE, envelope, content)
    with spool.open(QueueName.ACTIVE, created.queue_id) as handle:
        stored = qfile.read_envelope(handle.fd).envelope
    request = DeliveryRequest(
        queue_name="active",
        queue_id=created.queue_id,
        transport="virtual",
        nexthop="x.test",
        sender=envelope.sender,
        recipients=tuple(
            RequestRecipient(r.address, r.offset or 0, r.orig_address) for r in stored.recipients
        ),
        arrival=float(envelope.arrival_sec),
    )
    delivery = VirtualDelivery(settings)
    agent = Agent("virtual", deliver_recipient=delivery.deliver, close=delivery.close)
    try:
        result = handle_request(
            request, agent, AgentSettings(str(spool.path), "sdmail", 2, 30, 10), spool
        )
    finally:
        delivery.close()
    return request, result


def outcome(result: DeliveryResult) -> tuple[str, str, str]:
    (only,) = result.recipients
    return only.status, only.dsn, only.text


def done(spool: Spool, queue_id: str) -> bool:
    with spool.open(QueueName.ACTIVE, queue_id) as handle:
        return qfile.read_envelope(handle.fd).envelope.recipients[0].done


def test_maildir_delivery_as_the_mapped_owner_with_postfix_headers(
    base: Path, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request, result = deliver(spool, settings_for(base), "Joe@X.test")
    assert outcome(result) == ("sent", "2.0.0", "delivered to maildir")
    assert done(spool, request.queue_id)
    (written,) = (base / "x.test" / "joe" / "new").iterdir()
    assert (written.stat().st_uid, written.stat().st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert (base / "x.test").stat().st_uid == NOBODY.pw_uid
    assert written.read_bytes() == (
        b"Return-Path: <ann@example.org>\nX-Original-To: List@x.test\n"
        b"Delivered-To: joe@x.test\n" + CONTENT
    )
    line = re.compile(
        rf"{request.queue_id}: to=<Joe@X\.test>, orig_to=<List@x\.test>, relay=virtual, "
        r"delay=[\d.]+, delays=[\d.]+/[\d.]+/0/[\d.]+, dsn=2\.0\.0, status=sent "
        r"\(delivered to maildir\)"
    )
    assert any(line.fullmatch(r.getMessage()) for r in caplog.records)


def test_mbox_delivery_appends_as_the_owner(base: Path, spool: Spool) -> None:
    _, result = deliver(spool, settings_for(base), "box@x.test")
    assert outcome(result) == ("sent", "2.0.0", "delivered to mailbox")
    mbox = base / "box"
    assert mbox.stat().st_uid == NOBODY.pw_uid and mbox.stat().st_mode & 0o777 == 0o600
    assert mbox.read_bytes().startswith(b"From ann@example.org  ")


def test_an_unknown_recipient_bounces_with_postfix_text(base: Path, spool: Spool) -> None:
    request, result = deliver(spool, settings_for(base), "Nobody@X.test")
    assert outcome(result) == ("bounced", "5.1.1", 'unknown user: "nobody@x.test"')
    assert done(spool, request.queue_id)


def test_a_delivered_to_header_for_the_recipient_is_a_loop(base: Path, spool: Spool) -> None:
    content = b"Delivered-To: joe@x.test\nSubject: again\n\nbody\n"
    _, result = deliver(spool, settings_for(base), "joe@x.test", content)
    assert outcome(result) == ("bounced", "5.4.6", "mail forwarding loop for joe@x.test")
    assert not (base / "x.test").exists()


def test_a_mailbox_the_owner_cannot_write_is_deferred(base: Path, spool: Spool) -> None:
    os.chown(base, 0, 0)
    request, result = deliver(spool, settings_for(base), "joe@x.test")
    status, dsn, text = outcome(result)
    assert (status, dsn) == ("deferred", "4.2.0")
    assert f"{base}/x.test" in text and "Permission denied" in text
    assert not done(spool, request.queue_id)


def test_an_owner_below_virtual_minimum_uid_is_a_configuration_error(
    base: Path, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(base, virtual_minimum_uid=NOBODY.pw_uid + 1)
    _, result = deliver(spool, settings, "joe@x.test")
    assert outcome(result) == ("deferred", "4.3.5", "mail system configuration error")
    assert any(
        f"recipient joe@x.test: bad uid '{NOBODY.pw_uid}' in virtual_uid_maps" in r.getMessage()
        for r in caplog.records
    )
    assert not (base / "x.test").exists()


def test_a_path_out_of_the_base_is_a_configuration_error(
    base: Path, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(base, virtual_mailbox_maps=("inline:{ joe@x.test=../../etc/x }",))
    _, result = deliver(spool, settings, "joe@x.test")
    assert outcome(result) == ("deferred", "4.3.5", "mail system configuration error")
    assert any("leads out of virtual_mailbox_base" in r.getMessage() for r in caplog.records)


def test_a_table_that_cannot_be_read_defers(base: Path, spool: Spool, tmp_path: Path) -> None:
    settings = settings_for(base, virtual_mailbox_maps=(f"hash:{tmp_path}/missing",))
    _, result = deliver(spool, settings, "joe@x.test")
    assert outcome(result) == ("deferred", "4.3.0", "virtual mailbox table lookup problem")


def test_an_unknown_lock_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mailbox lock style"):
        VirtualDelivery(settings_for(Path("/x"), virtual_mailbox_lock=("dotlock", "nfs")))
