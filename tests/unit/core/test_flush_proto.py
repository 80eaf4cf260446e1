"""core/flush_proto: site syntax, ETRN's argument, eligibility, replies, a service that is down."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmail.core import flush_proto
from sdmail.core.flush_proto import FlushDomains, FlushReply, FlushStatus, etrn_site


@pytest.mark.parametrize(
    ("argument", "site"),
    [("example.com", "example.com"), ("@example.com", "example.com"), ("#queue", "queue")],
)
def test_etrn_site_drops_rfc_1985s_marks(argument: str, site: str) -> None:
    assert etrn_site(argument) == site


def test_fast_flush_domains_match_subdomains_as_parent_domain_matches_subdomains_says() -> None:
    parent_style = FlushDomains(["example.com"], ["fast_flush_domains"])
    assert parent_style.eligible("EXAMPLE.com")
    assert parent_style.eligible("mx.example.com")
    assert not parent_style.eligible("example.org")
    assert not FlushDomains(["example.com"], []).eligible("mx.example.com")
    assert not FlushDomains([], ["fast_flush_domains"]).eligible("example.com")


def test_replies_round_trip_and_nonsense_is_a_failure() -> None:
    reply = FlushReply(FlushStatus.DENY, "why")
    assert FlushReply.from_header(reply.header()) == reply
    assert FlushReply.from_header({"status": "maybe"}).status is FlushStatus.FAIL


def test_a_service_that_is_not_there(tmp_path: Path) -> None:
    assert flush_proto.add(str(tmp_path), "example.com", "4jZRh24lJmz2HSZT") is False
    reply = flush_proto.send_site(str(tmp_path), "example.com", timeout=5)
    assert reply.status is FlushStatus.FAIL
