"""The main.cf parameters the smtp and lmtp clients read, as one mode-neutral `ClientSettings`.

Postfix's lmtp is its smtp program with `lmtp_` parameter names; so here: every field of
`ClientSettings` is read from the `smtp_` parameter in SMTP mode and its `lmtp_` twin in
LMTP mode (`_TWINS`), the rest from parameters both modes share (`SharedParams`). Values
and defaults come from core/params.py only.

Failure modes: `client_settings` raises ConfigError, naming file, line and parameter, for a
value the client cannot use (an unknown TLS level, address preference, host lookup or DNS
support level, a TCP port that is neither a number nor a service name).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Final, Literal

from sdmail.core.config import Config, ConfigError, bind
from sdmail.core.params import PARAMS, Kind

Mode = Literal["smtp", "lmtp"]

TLS_LEVELS: Final = ("none", "may", "encrypt", "dane", "dane-only", "verify", "secure")
_ADDRESS_PREFERENCES: Final = ("any", "ipv4", "ipv6")
_HOST_LOOKUPS: Final = ("dns", "native")
_DNS_SUPPORT_LEVELS: Final = ("", "disabled", "enabled", "dnssec")


@dataclass(frozen=True)
class SharedParams:
    """Parameters both modes read under one name."""

    myhostname: str
    queue_directory: str
    mail_owner: str
    ipc_timeout: int
    default_process_limit: int
    delay_logging_resolution_limit: int
    inet_protocols: tuple[str, ...]
    inet_interfaces: tuple[str, ...]
    proxy_interfaces: tuple[str, ...]
    relayhost: str
    minimal_backoff_time: int
    soft_bounce: bool
    disable_dns_lookups: bool
    ignore_mx_lookup_error: bool
    disable_mime_output_conversion: bool
    smtp_always_send_ehlo: bool
    smtp_never_send_ehlo: bool


@dataclass(frozen=True)
class TlsSettings:
    level: str
    ca_file: str
    ca_path: str
    cert_file: str
    key_file: str
    loglevel: int
    verify_cert_match: tuple[str, ...]
    secure_cert_match: tuple[str, ...]
    connection_reuse: bool
    handshake_timeout: float


@dataclass(frozen=True)
class ClientSettings:
    """What one delivery reads, whichever mode; times are seconds (0: no limit)."""

    mode: Mode
    shared: SharedParams
    helo_name: str
    tcp_port: int
    connect_timeout: float
    helo_timeout: float
    mail_timeout: float
    rcpt_timeout: float
    data_init_timeout: float
    data_xfer_timeout: float
    data_done_timeout: float
    quit_timeout: float
    rset_timeout: float
    mx_address_limit: int
    mx_session_limit: int
    line_length_limit: int
    skip_5xx_greeting: bool
    randomize_addresses: bool
    address_preference: str
    balance_inet_protocols: bool
    fallback_relay: tuple[str, ...]
    host_lookup: tuple[str, ...]
    dns_support_level: str
    defer_if_no_mx_address_found: bool
    cache_on_demand: bool
    cache_destinations: tuple[str, ...]
    cache_time_limit: float
    reuse_time_limit: float
    reuse_count_limit: int
    skip_quit_response: bool
    discard_ehlo_keywords: frozenset[str]
    tls: TlsSettings

    @property
    def lmtp(self) -> bool:
        return self.mode == "lmtp"

    @property
    def dns_enabled(self) -> bool:
        """Whether servers are found through DNS (MX and address records)."""
        if self.dns_support_level == "disabled" or "dns" not in self.host_lookup:
            return False
        return not (self.dns_support_level == "" and self.shared.disable_dns_lookups)


# field: (smtp parameter, lmtp parameter)
_TWINS: Final[dict[str, tuple[str, str]]] = {
    "helo_name": ("smtp_helo_name", "lmtp_lhlo_name"),
    "connect_timeout": ("smtp_connect_timeout", "lmtp_connect_timeout"),
    "helo_timeout": ("smtp_helo_timeout", "lmtp_lhlo_timeout"),
    "mail_timeout": ("smtp_mail_timeout", "lmtp_mail_timeout"),
    "rcpt_timeout": ("smtp_rcpt_timeout", "lmtp_rcpt_timeout"),
    "data_init_timeout": ("smtp_data_init_timeout", "lmtp_data_init_timeout"),
    "data_xfer_timeout": ("smtp_data_xfer_timeout", "lmtp_data_xfer_timeout"),
    "data_done_timeout": ("smtp_data_done_timeout", "lmtp_data_done_timeout"),
    "quit_timeout": ("smtp_quit_timeout", "lmtp_quit_timeout"),
    "rset_timeout": ("smtp_rset_timeout", "lmtp_rset_timeout"),
    "mx_address_limit": ("smtp_mx_address_limit", "lmtp_mx_address_limit"),
    "mx_session_limit": ("smtp_mx_session_limit", "lmtp_mx_session_limit"),
    "line_length_limit": ("smtp_line_length_limit", "lmtp_line_length_limit"),
    "skip_5xx_greeting": ("smtp_skip_5xx_greeting", "lmtp_skip_5xx_greeting"),
    "randomize_addresses": ("smtp_randomize_addresses", "lmtp_randomize_addresses"),
    "address_preference": ("smtp_address_preference", "lmtp_address_preference"),
    "balance_inet_protocols": ("smtp_balance_inet_protocols", "lmtp_balance_inet_protocols"),
    "fallback_relay": ("smtp_fallback_relay", "lmtp_fallback_relay"),
    "host_lookup": ("smtp_host_lookup", "lmtp_host_lookup"),
    "dns_support_level": ("smtp_dns_support_level", "lmtp_dns_support_level"),
    "defer_if_no_mx_address_found": (
        "smtp_defer_if_no_mx_address_found",
        "lmtp_defer_if_no_mx_address_found",
    ),
    "cache_on_demand": ("smtp_connection_cache_on_demand", "lmtp_connection_cache_on_demand"),
    "cache_destinations": (
        "smtp_connection_cache_destinations",
        "lmtp_connection_cache_destinations",
    ),
    "cache_time_limit": ("smtp_connection_cache_time_limit", "lmtp_connection_cache_time_limit"),
    "reuse_time_limit": ("smtp_connection_reuse_time_limit", "lmtp_connection_reuse_time_limit"),
    "reuse_count_limit": (
        "smtp_connection_reuse_count_limit",
        "lmtp_connection_reuse_count_limit",
    ),
    "skip_quit_response": ("smtp_skip_quit_response", "lmtp_skip_quit_response"),
}
_TLS_TWINS: Final[dict[str, tuple[str, str]]] = {
    "level": ("smtp_tls_security_level", "lmtp_tls_security_level"),
    "ca_file": ("smtp_tls_CAfile", "lmtp_tls_CAfile"),
    "ca_path": ("smtp_tls_CApath", "lmtp_tls_CApath"),
    "cert_file": ("smtp_tls_cert_file", "lmtp_tls_cert_file"),
    "key_file": ("smtp_tls_key_file", "lmtp_tls_key_file"),
    "loglevel": ("smtp_tls_loglevel", "lmtp_tls_loglevel"),
    "verify_cert_match": ("smtp_tls_verify_cert_match", "lmtp_tls_verify_cert_match"),
    "secure_cert_match": ("smtp_tls_secure_cert_match", "lmtp_tls_secure_cert_match"),
    "connection_reuse": ("smtp_tls_connection_reuse", "lmtp_tls_connection_reuse"),
    "handshake_timeout": ("smtp_starttls_timeout", "lmtp_starttls_timeout"),
}
_PORTS: Final = ("smtp_tcp_port", "lmtp_tcp_port")
_DISCARD_KEYWORDS: Final = ("smtp_discard_ehlo_keywords", "lmtp_discard_lhlo_keywords")


def client_settings(cfg: Config, mode: Mode) -> ClientSettings:
    """The settings of MODE from CFG; ConfigError for a value the client cannot use."""
    which = 0 if mode == "smtp" else 1
    values: dict[str, Any] = {f: _typed(cfg, names[which]) for f, names in _TWINS.items()}
    tls_values: dict[str, Any] = {f: _typed(cfg, names[which]) for f, names in _TLS_TWINS.items()}
    tls = TlsSettings(**tls_values)
    settings = ClientSettings(
        mode=mode,
        shared=bind(SharedParams, cfg),
        tcp_port=_port(cfg, _PORTS[which]),
        discard_ehlo_keywords=frozenset(k.upper() for k in cfg.get_list(_DISCARD_KEYWORDS[which])),
        tls=tls,
        **values,
    )
    _check_choices(cfg, settings, which)
    return settings


def _typed(cfg: Config, name: str) -> object:
    kind = PARAMS[name].kind
    if kind is Kind.TIME:
        return float(cfg.get_time(name))
    if kind is Kind.INT:
        return cfg.get_int(name)
    if kind is Kind.BOOL:
        return cfg.get_bool(name)
    if kind is Kind.LIST:
        return tuple(cfg.get_list(name))
    return cfg.get(name)


def _port(cfg: Config, name: str) -> int:
    text = cfg.get(name).strip()
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise _error(cfg, name, f"unknown TCP port or service {text!r}") from None


def _check_choices(cfg: Config, settings: ClientSettings, which: int) -> None:
    checks = (
        (_TLS_TWINS["level"][which], settings.tls.level or "none", TLS_LEVELS),
        (
            _TWINS["address_preference"][which],
            settings.address_preference,
            _ADDRESS_PREFERENCES,
        ),
        (_TWINS["dns_support_level"][which], settings.dns_support_level, _DNS_SUPPORT_LEVELS),
    )
    for name, value, allowed in checks:
        if value not in allowed:
            raise _error(cfg, name, f"unknown value {value!r}; expected one of {allowed}")
    lookups = _TWINS["host_lookup"][which]
    for lookup in settings.host_lookup:
        if lookup not in _HOST_LOOKUPS:
            raise _error(cfg, lookups, f"unknown value {lookup!r}; expected dns and/or native")


def _error(cfg: Config, name: str, message: str) -> ConfigError:
    setting = cfg.explicit().get(name) or cfg.overrides().get(name)
    path = setting.path if setting is not None else cfg.config_dir / "main.cf"
    line = setting.line if setting is not None else None
    return ConfigError(message, path, line, name)
