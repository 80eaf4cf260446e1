"""Tests for sdmail.core.dsn: status codes, TempFail/PermFail, the status record."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.dsn import (
    DeliveryFailure,
    DsnError,
    PermFail,
    Status,
    TempFail,
    decode_status,
    encode_status,
    is_valid_dsn,
)


@pytest.mark.parametrize("code", ["2.0.0", "4.4.1", "5.1.1", "5.7.1", "4.0.999", "2.999.0"])
def test_rfc3463_codes_are_accepted(code):
    assert Status(code, "text").dsn == code


@pytest.mark.parametrize(
    "code",
    [
        "",
        "1.0.0",
        "3.0.0",
        "6.0.0",
        "5.1",
        "5.1.1.1",
        "5..1",
        "5.1.",
        "5.1000.0",
        "5.0.1000",
        "5.01.1",
        "5.1.00",
        " 5.1.1",
        "5.1.1 ",
        "5,1,1",
        "5.a.1",
        "550",
        "5.1.1\n",
        "٥.1.1",
    ],
)
def test_malformed_codes_are_refused_with_the_code_named(code):
    with pytest.raises(DsnError, match="bad enhanced status code"):
        Status(code, "text")
    assert not is_valid_dsn(code)


def test_class_decides_temporary_permanent_or_success():
    deferred = Status("4.4.1", "connect to mx.example.com[192.0.2.7]:25: Connection refused")
    bounced = Status("5.1.1", "user unknown")
    sent = Status("2.0.0", "delivered to maildir")
    assert (deferred.is_temporary, deferred.is_permanent, deferred.is_success) == (
        True,
        False,
        False,
    )
    assert (bounced.is_temporary, bounced.is_permanent, bounced.is_success) == (False, True, False)
    assert (sent.is_temporary, sent.is_permanent, sent.is_success) == (False, False, True)


def test_status_prints_as_code_and_text():
    assert str(Status("5.1.1", "user unknown")) == "5.1.1 user unknown"


def test_tempfail_carries_its_status_and_is_a_delivery_failure():
    status = Status("4.4.1", "connect to mx.example.com[192.0.2.7]:25: Connection refused")
    with pytest.raises(DeliveryFailure) as caught:
        raise TempFail(status)
    assert caught.value.status is status
    assert isinstance(caught.value, TempFail)
    assert str(caught.value) == f"4.4.1 {status.text}"


def test_permfail_carries_its_status():
    status = Status("5.1.1", 'unknown user: "joe"')
    with pytest.raises(PermFail) as caught:
        raise PermFail(status)
    assert caught.value.status == status


def test_tempfail_refuses_a_permanent_status_and_permfail_a_temporary_one():
    with pytest.raises(DsnError, match=re.escape("TempFail needs a 4.X.X status, not 5.1.1")):
        TempFail(Status("5.1.1", "user unknown"))
    with pytest.raises(DsnError, match=re.escape("PermFail needs a 5.X.X status, not 4.4.1")):
        PermFail(Status("4.4.1", "later"))
    with pytest.raises(DsnError):
        TempFail(Status("2.0.0", "sent"))


def test_record_is_one_versioned_line():
    record = encode_status(Status("4.4.1", "connect to mx[192.0.2.7]:25: Connection refused"))
    assert record == "status 1 4.4.1 connect to mx[192.0.2.7]:25: Connection refused"


def test_record_escapes_line_breaks_so_a_remote_text_cannot_forge_a_record():
    hostile = "550 no\nstatus 1 2.0.0 delivered\r\\x41"
    record = encode_status(Status("5.0.0", hostile))
    assert "\n" not in record and "\r" not in record
    assert record == "status 1 5.0.0 550 no\\x0astatus 1 2.0.0 delivered\\x0d\\\\x41"
    assert decode_status(record) == Status("5.0.0", hostile)


def test_record_keeps_utf8_text_readable():
    record = encode_status(Status("5.1.1", "Benutzer unbekannt: jürgen@bücher.example"))
    assert record.endswith("Benutzer unbekannt: jürgen@bücher.example")


def test_record_with_undecodable_bytes_can_be_sent_as_utf8():
    text = b"reply \xff\xfe".decode("utf-8", "surrogateescape")
    record = encode_status(Status("4.0.0", text))
    record.encode("utf-8")
    assert decode_status(record).text == text


def test_decode_accepts_a_trailing_line_end_and_an_empty_text():
    assert decode_status("status 1 2.0.0 sent\n") == Status("2.0.0", "sent")
    assert decode_status("status 1 2.0.0") == Status("2.0.0", "")
    assert decode_status(encode_status(Status("2.0.0", " lead"))).text == " lead"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("", "not a status record"),
        ("2.0.0 sent", "not a status record"),
        ("status 1", "not a status record"),
        ("STATUS 1 2.0.0 sent", "not a status record"),
        ("status 2 2.0.0 sent", "status record version '2' is not supported"),
        ("status x 2.0.0 sent", "version 'x' is not supported"),
        ("status 1 2.0 sent", "bad enhanced status code '2.0'"),
        ("status 1 2.0.0 a\\qb", "bad escape"),
        ("status 1 2.0.0 trailing\\", "bad escape"),
        ("status 1 2.0.0 short\\x4", "bad escape"),
        ("status 1 2.0.0 two\nlines", "raw control character"),
        ("status 1 2.0.0 nul\x00", "raw control character"),
    ],
)
def test_decode_refuses_bad_records_saying_why(record, message):
    with pytest.raises(DsnError, match=re.escape(message)):
        decode_status(record)


_codes = st.builds(
    lambda c, s, d: f"{c}.{s}.{d}",
    st.sampled_from("245"),
    st.integers(0, 999),
    st.integers(0, 999),
)


@given(_codes, st.text())
def test_any_status_survives_the_record_round_trip(code, text):
    record = encode_status(Status(code, text))
    assert "\n" not in record
    record.encode("utf-8")
    assert decode_status(record) == Status(code, text)


@given(st.text())
def test_decode_of_arbitrary_text_gives_a_status_or_dsn_error(record):
    try:
        status = decode_status(record)
    except DsnError:
        return
    assert is_valid_dsn(status.dsn)
