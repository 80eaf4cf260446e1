"""smtpd/policy.py without a server: service names and settings, the request's encoding,
reading answers. The protocol against a real server process is in
tests/process/test_smtpd_policy.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.config import ConfigError
from sdmail.smtpd.policy import (
    PolicyError,
    PolicySettings,
    encode_request,
    parse_reply,
    parse_service,
)

SETTINGS = PolicySettings(
    smtpd_policy_service_timeout=100,
    smtpd_policy_service_max_idle=300,
    smtpd_policy_service_max_ttl=1000,
    smtpd_policy_service_try_limit=2,
    smtpd_policy_service_retry_delay=1,
    smtpd_policy_service_request_limit=0,
    smtpd_policy_service_default_action="451 4.3.5 Server configuration problem",
    smtpd_policy_service_policy_context="",
    queue_directory="/var/spool/sdmail",
    mail_version="1.0",
)


def test_service_names():
    unix, _ = parse_service("unix:private/policy", SETTINGS)
    assert unix.path == "/var/spool/sdmail/private/policy"
    absolute, _ = parse_service("unix:/run/policyd.sock", SETTINGS)
    assert absolute.path == "/run/policyd.sock"
    inet, limits = parse_service("inet:127.0.0.1:10023", SETTINGS)
    assert (inet.host, inet.port, limits.timeout, limits.try_limit) == ("127.0.0.1", 10023, 100, 2)
    six, _ = parse_service("inet:[::1]:10023", SETTINGS)
    assert (six.host, six.port) == ("::1", 10023)


def test_a_service_with_settings_of_its_own():
    endpoint, limits = parse_service(
        "{ inet:localhost:9998, timeout=10s, max_idle=1m, request_limit=5,"
        " default_action=450 4.7.1 Policy down, policy_context=submission }",
        SETTINGS,
    )
    assert (endpoint.host, endpoint.port) == ("localhost", 9998)
    assert (limits.timeout, limits.max_idle, limits.request_limit) == (10, 60, 5)
    assert limits.default_action == "450 4.7.1 Policy down"
    assert limits.policy_context == "submission"
    assert limits.max_ttl == 1000  # main.cf's where the service says nothing


@pytest.mark.parametrize(
    "text",
    [
        "policy.example:10023",
        "inet:localhost",
        "inet:localhost:http",
        "unix:",
        "{ inet:localhost:9998, timeout=soon }",
        "{ inet:localhost:9998, colour=blue }",
        "{ inet:localhost:9998",
        "{ }",
    ],
)
def test_bad_services_are_refused(text):
    with pytest.raises(PolicyError):
        parse_service(text, SETTINGS)


def test_a_bad_service_in_a_restriction_names_the_parameter(world):
    with pytest.raises(ConfigError, match="smtpd_sender_restrictions: check_policy_service"):
        world.service("smtpd_sender_restrictions = check_policy_service inet:nowhere\n")


def test_a_request_is_lines_and_an_empty_line_and_a_value_cannot_end_it():
    data = encode_request([("request", "smtpd_access_policy"), ("helo_name", "a\r\nb")])
    assert data == b"request=smtpd_access_policy\nhelo_name=a  b\n\n"


def test_answers():
    assert parse_reply(b"action=DUNNO\n\n") == {"action": "DUNNO"}
    assert parse_reply(b"action=REJECT no=way\r\n\r\n")["action"] == "REJECT no=way"
    assert parse_reply(b"junk\nreason=x\naction=OK\n\n") == {"reason": "x", "action": "OK"}
    assert parse_reply(b"\naction=OK\n\n") == {}


@given(st.binary(max_size=300))
def test_any_bytes_make_some_attributes_and_never_raise(data):
    attributes = parse_reply(data)
    assert all("\n" not in value for value in attributes.values())
