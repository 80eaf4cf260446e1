"""Each transport's limits from main.cf (sdmail/qmgr/transports.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmail.core.config import ConfigError, load_config
from sdmail.qmgr.transports import TransportPolicies


def policies(tmp_path: Path, main_cf: str = "") -> TransportPolicies:
    (tmp_path / "main.cf").write_text(main_cf)
    return TransportPolicies(load_config(tmp_path))


def test_defaults_and_local_limits(tmp_path: Path) -> None:
    p = policies(tmp_path)
    smtp, local = p.policy("smtp"), p.policy("local")
    assert (smtp.recipient_limit, smtp.concurrency_limit, smtp.initial_concurrency) == (50, 20, 5)
    assert (local.recipient_limit, local.concurrency_limit) == (1, 2)
    assert smtp.process_limit == 100
    assert (smtp.retry_time, smtp.destination_rest) == (60, 300)
    assert smtp.failed_cohort_limit == 1
    assert smtp.positive_feedback(3) == 1
    assert smtp.rate_delay == 0


def test_a_transport_of_its_own_in_main_cf(tmp_path: Path) -> None:
    p = policies(
        tmp_path,
        "relay_destination_concurrency_limit = 3\n"
        "relay_destination_recipient_limit = 7\n"
        "relay_destination_concurrency_positive_feedback = 1/concurrency\n"
        "default_destination_concurrency_limit = 9\n",
    )
    relay, smtp = p.policy("relay"), p.policy("smtp")
    assert (relay.concurrency_limit, relay.recipient_limit) == (3, 7)
    assert relay.positive_feedback(4) == 0.25
    assert smtp.concurrency_limit == 9


def test_a_bad_value_names_the_parameter_file_and_line(tmp_path: Path) -> None:
    p = policies(tmp_path, "myhostname = x.example\nrelay_destination_concurrency_limit = many\n")
    with pytest.raises(ConfigError, match=r"main.cf, line 2: relay_destination_concurrency_limit"):
        p.policy("relay")


def test_a_bad_feedback_names_the_parameter(tmp_path: Path) -> None:
    p = policies(tmp_path, "default_destination_concurrency_negative_feedback = lots\n")
    with pytest.raises(ConfigError, match="default_destination_concurrency_negative_feedback"):
        p.policy("smtp")


def test_a_zero_limit_is_refused(tmp_path: Path) -> None:
    p = policies(tmp_path, "pipe_destination_recipient_limit = 0\n")
    with pytest.raises(ConfigError, match="pipe_destination_recipient_limit"):
        p.policy("pipe")


def test_a_rate_delay_makes_the_destination_concurrency_one(tmp_path: Path) -> None:
    p = policies(
        tmp_path,
        "default_destination_rate_delay = 2s\n"
        "relay_destination_rate_delay = 0\n"
        "slow_destination_rate_delay = 1m\n",
    )
    smtp, relay, slow = p.policy("smtp"), p.policy("relay"), p.policy("slow")
    assert (smtp.rate_delay, smtp.concurrency_limit) == (2, 1)
    assert (relay.rate_delay, relay.concurrency_limit) == (0, 20)
    assert (slow.rate_delay, slow.concurrency_limit) == (60, 1)


def test_a_bad_rate_delay_names_the_parameter(tmp_path: Path) -> None:
    p = policies(tmp_path, "smtp_destination_rate_delay = soon\n")
    with pytest.raises(ConfigError, match="smtp_destination_rate_delay"):
        p.policy("smtp")
