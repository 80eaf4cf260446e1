"""smtpd/listeners.py and the command line: which -o reaches which listener."""

from __future__ import annotations

import pytest

from sdmail.core.config import ConfigError
from sdmail.core.skeleton import UsageError
from sdmail.smtpd.__main__ import build_services, parse_listen
from sdmail.smtpd.listeners import listener_config, split_overrides


def test_overrides_are_split_by_listener():
    overrides = split_overrides(
        [
            "smtpd_banner=everyone",
            "submission/smtpd_tls_security_level=encrypt",
            "submission/smtpd_sasl_auth_enable=yes",
            "relay/smtpd_banner=relay",
        ]
    )
    assert overrides.for_listener("smtpd") == ("smtpd_banner=everyone",)
    assert overrides.for_listener("submission") == (
        "smtpd_banner=everyone",
        "smtpd_tls_security_level=encrypt",
        "smtpd_sasl_auth_enable=yes",
    )
    assert overrides.for_listener("relay") == ("smtpd_banner=everyone", "smtpd_banner=relay")


@pytest.mark.parametrize("bad", ["submission/", "submission/=x", "sub mission/a=b", "a/b"])
def test_bad_listener_overrides_are_usage_errors(bad):
    with pytest.raises(UsageError, match="LISTENER/name=value"):
        split_overrides([bad])


def test_listener_configuration_puts_its_own_overrides_last(world):
    (world.config_dir / "main.cf").write_text(world.main_cf("smtpd_banner = from main.cf\n"))
    overrides = split_overrides(["smtpd_banner=global", "submission/smtpd_banner=own"])
    assert listener_config(str(world.config_dir), overrides, "smtpd").get("smtpd_banner") == (
        "global"
    )
    assert listener_config(str(world.config_dir), overrides, "submission").get("smtpd_banner") == (
        "own"
    )


def test_services_are_built_per_listener_and_share_one_spool(world):
    (world.config_dir / "main.cf").write_text(world.main_cf())
    overrides = split_overrides(["submission/smtpd_recipient_limit=5"])
    spools: dict = {}
    services = build_services(str(world.config_dir), overrides, ["smtpd", "submission"], spools)
    assert services["smtpd"].settings.smtpd_recipient_limit == 1000
    assert services["submission"].settings.smtpd_recipient_limit == 5
    assert services["smtpd"].cleanup.spool is services["submission"].cleanup.spool
    assert len(spools) == 1


def test_override_for_a_missing_listener_is_refused(world):
    (world.config_dir / "main.cf").write_text(world.main_cf())
    with pytest.raises(UsageError, match="no listener is named 'submision'"):
        build_services(str(world.config_dir), split_overrides(["submision/a=b"]), ["smtpd"], {})


def test_bad_listener_value_names_the_parameter(world):
    (world.config_dir / "main.cf").write_text(world.main_cf())
    overrides = split_overrides(["submission/smtpd_recipient_limit=many"])
    with pytest.raises(ConfigError, match="smtpd_recipient_limit"):
        build_services(str(world.config_dir), overrides, ["submission"], {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2525", ("smtpd", "127.0.0.1", 2525)),
        ("submission=0.0.0.0:587", ("submission", "0.0.0.0", 587)),
        ("[::1]:25", ("smtpd", "::1", 25)),
    ],
)
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("bad", ["localhost", ":25", "host:0", "host:99999", "=h:25", "h:x"])
def test_bad_listen_addresses_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_listen(bad)
