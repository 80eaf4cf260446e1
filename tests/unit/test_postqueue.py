"""postqueue's listing formats (-p, -j) against golden files, and its command line
(sdmail/postqueue.py).  Golden files: tests/data/postqueue/NAME.p (postqueue -p) and
NAME.j (postqueue -j) for the entries named NAME below, arrival times shown in UTC."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.flush_proto import valid_site
from sdmail.core.showq_proto import QueueEntry, RecipientEntry
from sdmail.postqueue import (
    display_address,
    json_lines,
    mailq_lines,
    printable,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "postqueue"
T = 1_764_021_160  # Mon Nov 24 21:52:40 2025 UTC
REFUSED = "connect to mx.example.com[192.0.2.7]:25: Connection refused"
LONG_REASON = (
    "host mx.example.net[198.51.100.25] said: 451 4.7.1 Greylisted, please try again in"
    " 300 seconds (in reply to RCPT TO command)"
)

ENTRIES = {
    "empty": [],
    "one_active": [
        QueueEntry(
            "active",
            "4jZMSX2Lr2zJDBP",
            T,
            4378,
            False,
            "a@bench.test",
            (RecipientEntry("x@discard.test"),),
        ),
    ],
    "mixed": [
        QueueEntry(
            "maildrop", "4jZMSX0fbHzJDBF", T - 5, 512, False, "alice", (RecipientEntry("bob"),)
        ),
        QueueEntry(
            "active",
            "4jZMSX2Lr2zJDBP",
            T,
            4378,
            False,
            "a@bench.test",
            (RecipientEntry("x@discard.test", "alias@bench.test"),),
        ),
        QueueEntry(
            "incoming",
            "4jZMSX3BCDzJDBQ",
            T + 1,
            1023,
            False,
            "",
            (RecipientEntry("postmaster@example.org"),),
        ),
        QueueEntry(
            "deferred",
            "4jZMSX2DXCzJDBd",
            T - 86_400 * 3,
            20_480,
            True,
            "a@bench.test",
            (
                RecipientEntry("user@example.com", None, REFUSED),
                RecipientEntry("other@example.com", None, REFUSED),
                RecipientEntry("grey@example.net", None, LONG_REASON),
                RecipientEntry("john doe@example.com"),
                RecipientEntry(
                    "very.long.local.part.of.an.address.that.goes.on@"
                    "a-very-long-subdomain.of.an.example.domain.example.com"
                ),
            ),
        ),
        QueueEntry(
            "hold",
            "4jZMSX4GHJzJDBR",
            T + 2,
            99,
            True,
            "caf\u00e9@b\u00fccher.example",
            (RecipientEntry("bell\x07ringer@example.com", None, "tab\there and \udcff byte"),),
        ),
    ],
}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_postqueue_p_matches_its_golden_file(name: str):
    assert "".join(mailq_lines(ENTRIES[name], "MAILER-DAEMON")) == golden(f"{name}.p")


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_postqueue_j_matches_its_golden_file(name: str):
    assert "".join(json_lines(ENTRIES[name], "MAILER-DAEMON")) == golden(f"{name}.j")


def test_the_empty_queue_is_one_line_and_no_json():
    assert "".join(mailq_lines([], "MAILER-DAEMON")) == "Mail queue is empty\n"
    assert list(json_lines([], "MAILER-DAEMON")) == []


def test_rows_have_postfix_columns():
    lines = "".join(mailq_lines(ENTRIES["one_active"], "MAILER-DAEMON")).splitlines()
    assert lines[0] == "-Queue ID-        --Size-- ---Arrival Time---- --Sender/Recipient------"
    assert lines[1] == "4jZMSX2Lr2zJDBP*      4378 Mon Nov 24 21:52:40 a@bench.test"
    assert lines[2] == " " * 47 + "x@discard.test"
    assert lines[3:] == ["", "-- 4 Kbytes in 1 Request."]


def test_reason_lines_end_at_column_78_and_long_ones_start_at_column_1():
    lines = "".join(mailq_lines(ENTRIES["mixed"], "MAILER-DAEMON")).splitlines()
    refused = next(line for line in lines if line.endswith(f"({REFUSED})"))
    assert len(refused) == 78 and refused.startswith(" ")
    long_one = next(line for line in lines if LONG_REASON in line)
    assert long_one == f"({LONG_REASON})"
    assert " " * 58 + "(reason unavailable)" in lines


def test_the_null_sender_shows_as_empty_address_recipient():
    (line,) = json_lines(ENTRIES["mixed"][2:3], "MAILER-DAEMON")
    assert json.loads(line)["sender"] == "MAILER-DAEMON"
    (line,) = json_lines(ENTRIES["mixed"][2:3], "postmaster")
    assert json.loads(line)["sender"] == "postmaster"


def test_json_keys_come_in_postfix_order():
    for line in json_lines(ENTRIES["mixed"], "MAILER-DAEMON"):
        entry = json.loads(line)
        assert list(entry) == [
            "queue_name",
            "queue_id",
            "arrival_time",
            "message_size",
            "forced_expire",
            "sender",
            "recipients",
        ]
        for recipient in entry["recipients"]:
            keys = [k for k in ("address", "orig_address", "delay_reason") if k in recipient]
            assert list(recipient) == keys


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("user@example.com", "user@example.com"),
        ("john doe@example.com", '"john doe"@example.com'),
        ('say"hi"@example.com', '"say\\"hi\\""@example.com'),
        ("bell\x07ringer@example.com", '"bell?ringer"@example.com'),
        ("\udcff8bit@example.com", '"?8bit"@example.com'),
        ("caf\u00e9@example.com", "caf\u00e9@example.com"),
        ("bob", "bob"),
    ],
)
def test_addresses_are_quoted_and_non_printables_are_question_marks(address: str, shown: str):
    assert display_address(address) == shown


def test_printable_keeps_unicode_and_replaces_controls():
    assert printable("caf\u00e9 ok") == "caf\u00e9 ok"
    assert printable("a\nb\x7fc\udcffd\te") == "a?b?c?d?e"


@pytest.mark.parametrize(
    ("site", "valid"),
    [
        ("example.com", True),
        ("mail_host", True),
        ("[192.0.2.1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("bad_site!", False),
        ("-leading.example", False),
        ("[300.1.1.1]", False),
        ("", False),
        ("1.2.3.4", False),
    ],
)
def test_sites_are_host_names_or_address_literals(site: str, valid: bool):
    assert valid_site(site) is valid


text = st.text(st.characters(codec="utf-8") | st.sampled_from("\x00\n\r\t\x7f\udcff"), max_size=30)
recipients = st.builds(RecipientEntry, text, st.none() | text, st.none() | text)
entries = st.builds(
    QueueEntry,
    st.sampled_from(["maildrop", "active", "incoming", "deferred", "hold"]),
    text,
    st.integers(0, 2**33),
    st.integers(0, 2**40),
    st.booleans(),
    text,
    st.tuples(recipients, recipients) | st.tuples(),
)


@given(st.lists(entries, max_size=4))
def test_any_entries_make_a_clean_listing(listed: list[QueueEntry]):
    listing = "".join(mailq_lines(listed, "MAILER-DAEMON"))
    assert listing.endswith("\n")
    assert all(line.isprintable() for line in listing.splitlines())
    listing.encode("utf-8")  # nothing unencodable reaches the terminal
    lines = list(json_lines(listed, "MAILER-DAEMON"))
    assert len(lines) == len(listed)
    for line, entry in zip(lines, listed, strict=True):
        assert line.count("\n") == 1
        assert json.loads(line)["message_size"] == entry.message_size
