"""pickup/maildrop.py: a maildrop file into a cleanup Submission, and files that are not one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdmail.cleanup.api import Origin
from sdmail.core import qfile
from sdmail.core.records import DsnRet, Envelope, Notify, Recipient
from sdmail.pickup.maildrop import (
    FUTURE_TOLERANCE,
    PAST_WARNING,
    MalformedMaildropFile,
    read_maildrop,
)

NOW = 1_764_000_000.0


def maildrop_file(path: Path, envelope: Envelope, content: bytes = b"Subject: x\n\nbody\n") -> int:
    path.write_bytes(qfile.encode(envelope, content))
    return os.open(path, os.O_RDONLY)


def read(path: Path, envelope: Envelope, content: bytes = b"Subject: x\n\nbody\n", owner=4242):
    fd = maildrop_file(path, envelope, content)
    try:
        return read_maildrop(fd, owner, now=NOW)
    finally:
        os.close(fd)


def test_every_envelope_field_postdrop_writes_reaches_the_submission(tmp_path: Path):
    recipients = (
        Recipient("bob", notify=Notify.SUCCESS | Notify.FAILURE, orcpt="rfc822;bob@example.org"),
        Recipient("carol@example.org"),
    )
    envelope = Envelope(
        "joe",
        recipients,
        arrival_sec=int(NOW) - 5,
        arrival_usec=250_000,
        sender_fullname="Joe User",
        ret=DsnRet.HDRS,
        envid="env-1",
        attributes=(("uid", "1000"), ("extract_recipients", "yes")),
    )
    message = read(tmp_path / "m", envelope, b"To: a@b\n\nhi\n")
    sub = message.submission
    assert message.content == b"To: a@b\n\nhi\n"
    assert (message.uid, message.sender, message.warnings) == (1000, "joe", ())
    assert sub.origin is Origin.LOCAL
    assert (sub.sender, sub.recipients, sub.uid, sub.full_name) == (
        "joe",
        recipients,
        1000,
        "Joe User",
    )
    assert sub.extract_recipients is True
    assert (sub.ret, sub.envid) == (DsnRet.HDRS, "env-1")
    assert sub.arrival == pytest.approx(NOW - 4.75)


def test_without_a_uid_attribute_the_file_owner_is_the_submitter(tmp_path: Path):
    message = read(tmp_path / "m", Envelope("joe", (Recipient("bob"),)), owner=4242)
    assert message.uid == 4242 and message.submission.uid == 4242
    assert message.submission.extract_recipients is False
    assert message.submission.arrival is None  # no T time: cleanup takes its own


@pytest.mark.parametrize("value", ["no", "0", "false", ""])
def test_extract_recipients_off_values(tmp_path: Path, value: str):
    envelope = Envelope("joe", (Recipient("b"),), attributes=(("extract_recipients", value),))
    assert read(tmp_path / "m", envelope).submission.extract_recipients is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("uid", "-1"),
        ("uid", "joe"),
        ("uid", "٣"),
        ("uid", str(2**32)),
        ("extract_recipients", "maybe"),
    ],
)
def test_attribute_of_the_wrong_shape_makes_the_file_malformed(tmp_path: Path, name, value):
    envelope = Envelope("joe", (Recipient("b"),), attributes=((name, value),))
    with pytest.raises(MalformedMaildropFile, match=f"bad {name} attribute"):
        read(tmp_path / "m", envelope)


def test_a_time_far_in_the_future_is_replaced_by_now_with_a_warning(tmp_path: Path):
    envelope = Envelope("joe", (Recipient("b"),), arrival_sec=int(NOW) + FUTURE_TOLERANCE + 60)
    message = read(tmp_path / "m", envelope)
    assert message.submission.arrival == NOW
    assert message.warnings == (f"message dated {FUTURE_TOLERANCE + 60} seconds into the future",)


def test_an_old_file_keeps_its_time_with_a_warning(tmp_path: Path):
    envelope = Envelope("joe", (Recipient("b"),), arrival_sec=int(NOW) - PAST_WARNING - 1)
    message = read(tmp_path / "m", envelope)
    assert message.submission.arrival == int(NOW) - PAST_WARNING - 1
    assert "in maildrop for" in message.warnings[0]


def test_a_file_cut_short_is_malformed_and_names_the_offset(tmp_path: Path):
    whole = qfile.encode(Envelope("joe", (Recipient("b"),)), b"Subject: x\n\nbody\n")
    path = tmp_path / "m"
    path.write_bytes(whole[:-3])
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(MalformedMaildropFile, match="corrupt queue file: offset"):
            read_maildrop(fd, 0, now=NOW)
    finally:
        os.close(fd)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_bytes_are_a_message_or_malformed_never_another_error(tmp_path: Path, data: bytes):
    path = tmp_path / "garbage"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        read_maildrop(fd, 0, now=NOW)
    except MalformedMaildropFile:
        pass
    finally:
        os.close(fd)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_every_truncation_of_a_real_file_is_malformed(tmp_path: Path, cut: int):
    envelope = Envelope("joe", (Recipient("b"),), attributes=(("uid", "7"),))
    whole = qfile.encode(envelope, b"Subject: x\n\n" + b"line\n" * 50)
    path = tmp_path / "cut"
    path.write_bytes(whole[: cut % len(whole)])
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(MalformedMaildropFile):
            read_maildrop(fd, 0, now=NOW)
    finally:
        os.close(fd)
