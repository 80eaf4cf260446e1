"""smtp/settings.py: one ClientSettings from the smtp_* or lmtp_* parameters."""

from __future__ import annotations

import pytest

from sdmail.core.config import ConfigError, load_config
from sdmail.smtp.settings import client_settings


def config(tmp_path, text: str = ""):
    (tmp_path / "main.cf").write_text("myhostname = mx.example.test\n" + text)
    return load_config(tmp_path)


def test_smtp_mode_reads_smtp_parameters_with_postfix_defaults(tmp_path) -> None:
    s = client_settings(config(tmp_path), "smtp")
    assert (s.tcp_port, s.helo_name, s.connect_timeout, s.rset_timeout) == (
        25,
        "mx.example.test",
        30.0,
        20.0,
    )
    assert (s.mx_address_limit, s.mx_session_limit, s.line_length_limit) == (5, 2, 998)
    assert s.skip_quit_response and s.dns_enabled and not s.lmtp


def test_lmtp_mode_reads_the_lmtp_twins(tmp_path) -> None:
    s = client_settings(config(tmp_path, "lmtp_lhlo_name = lmtp.example.test\n"), "lmtp")
    assert (s.tcp_port, s.helo_name, s.connect_timeout) == (24, "lmtp.example.test", 0.0)
    assert s.lmtp and not s.skip_quit_response


def test_a_service_name_port(tmp_path) -> None:
    assert client_settings(config(tmp_path, "smtp_tcp_port = submission\n"), "smtp").tcp_port == 587


def test_dns_can_be_turned_off(tmp_path) -> None:
    assert not client_settings(config(tmp_path, "smtp_host_lookup = native\n"), "smtp").dns_enabled
    off = config(tmp_path, "smtp_dns_support_level = disabled\n")
    assert not client_settings(off, "smtp").dns_enabled


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("smtp_tls_security_level = sometimes", "smtp_tls_security_level"),
        ("smtp_address_preference = ipv5", "smtp_address_preference"),
        ("smtp_host_lookup = dns, nis", "smtp_host_lookup"),
        ("smtp_tcp_port = no-such-service", "smtp_tcp_port"),
    ],
)
def test_values_the_client_cannot_use_name_file_line_and_parameter(tmp_path, line, name) -> None:
    with pytest.raises(ConfigError) as caught:
        client_settings(config(tmp_path, line + "\n"), "smtp")
    assert caught.value.name == name
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{tmp_path / 'main.cf'}, line 2: {name}: ")
