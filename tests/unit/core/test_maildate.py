"""The date text of Date: and Received: (core/maildate.py)."""

import os
import re
import time

import pytest

from sdmail.core.maildate import mail_date


@pytest.fixture
def zone(monkeypatch):
    def use(tz: str) -> None:
        monkeypatch.setenv("TZ", tz)
        time.tzset()

    yield use
    monkeypatch.delenv("TZ", raising=False)
    time.tzset()


def test_utc(zone):
    zone("UTC")
    assert mail_date(0) == "Thu, 01 Jan 1970 00:00:00 +0000 (UTC)"


def test_negative_offset_with_zone_name(zone):
    zone("America/New_York")
    assert mail_date(850127906) == "Mon, 09 Dec 1996 05:38:26 -0500 (EST)"


def test_half_hour_offset(zone):
    zone("Asia/Kolkata")
    assert mail_date(0) == "Thu, 01 Jan 1970 05:30:00 +0530 (IST)"


def test_now_has_rfc5322_shape():
    assert re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}( \(.+\))?",
        mail_date(),
    ), os.environ.get("TZ")
