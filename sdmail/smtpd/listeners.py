"""smtpd's listeners: which settings each listening socket serves under.

One smtpd process serves every socket systemd passes it (`sdmail-smtpd.socket` with
`FileDescriptorName=smtpd`, `sdmail-submission.socket` with `FileDescriptorName=submission`,
...). Postfix gives each master.cf service its own `-o name=value`; here the unit's command
line does, in two forms:

    -o name=value              for every listener (as a plain daemon's -o)
    -o LISTENER/name=value     only for the listener whose FileDescriptorName= is LISTENER

so `ExecStart=... -o submission/smtpd_tls_security_level=encrypt -o
submission/smtpd_sasl_auth_enable=yes` makes port 587 demand TLS and offer AUTH while port
25 keeps main.cf's settings. Each listener gets its own immutable Config (main.cf, then the
global -o, then its own -o), and from it its own `Service`: session settings, restrictions
(`checks.Checks`) and a cleanup library instance; all share one queue (`Spool`), so
concurrent sessions of every listener share its group-commit fsyncs. A reload (SIGHUP)
rebuilds every Service from the new main.cf with the same -o; sessions already running keep
the Service they started with. `syslog_name` cannot differ per listener: the process logs
under one identifier (`$syslog_name/smtpd`).

Failure modes: `split_overrides` raises UsageError for a LISTENER/ override that is not
`name=value` or names no listener; `build_service` raises ConfigError (file, line,
parameter) for a configuration that does not load or bind, and the restriction errors of
`checks.Checks`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sdmail.cleanup.api import Cleanup
from sdmail.core.config import Config, load_config
from sdmail.core.skeleton import UsageError
from sdmail.core.spool import Spool
from sdmail.smtpd.checks import Checks, MailDomains
from sdmail.smtpd.dnsbl import Dns
from sdmail.smtpd.sasl import Sasl, build_sasl
from sdmail.smtpd.session import SessionSettings
from sdmail.smtpd.tls import ServerTls, server_tls

_LISTENER_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


@dataclass(frozen=True)
class Overrides:
    """The -o of the command line: for every listener, and per listener name."""

    common: tuple[str, ...] = ()
    per_listener: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def for_listener(self, name: str) -> tuple[str, ...]:
        return self.common + self.per_listener.get(name, ())


def split_overrides(texts: Sequence[str]) -> Overrides:
    """Sort `name=value` and `LISTENER/name=value` overrides; UsageError for a bad one."""
    common: list[str] = []
    per_listener: dict[str, list[str]] = {}
    for text in texts:
        name, equals, _ = text.partition("=")
        listener, slash, parameter = name.partition("/")
        if not slash:
            common.append(text)
            continue
        if not equals or not _LISTENER_NAME.match(listener) or not parameter.strip():
            raise UsageError(f"bad -o {text!r}: expected LISTENER/name=value")
        per_listener.setdefault(listener, []).append(text[len(listener) + 1 :])
    return Overrides(tuple(common), {k: tuple(v) for k, v in per_listener.items()})


def listener_config(config_dir: str | None, overrides: Overrides, name: str) -> Config:
    """The configuration of listener NAME; raises ConfigError."""
    return load_config(config_dir, overrides.for_listener(name))


@dataclass(frozen=True)
class Service:
    """What sessions on one listener run under; built once per listener and reload."""

    listener: str
    config: Config
    settings: SessionSettings
    checks: Checks
    cleanup: Cleanup
    tls: ServerTls
    sasl: Sasl | None = None


def build_service(
    listener: str,
    cfg: Config,
    spools: dict[str, Spool],
    domains: MailDomains | None = None,
    dns: Dns | None = None,
) -> Service:
    """The Service of LISTENER under CFG; SPOOLS (by queue_directory) is shared and filled;
    DNS is the process's resolver (a new one when None)."""
    settings = SessionSettings.from_config(cfg)
    queue_directory = cfg.get("queue_directory")
    if queue_directory not in spools:
        spools[queue_directory] = Spool(queue_directory)
    checks = Checks(cfg, domains=domains, dns=dns)
    cleanup = Cleanup(cfg, spools[queue_directory])
    tls = server_tls(cfg)
    return Service(listener, cfg, settings, checks, cleanup, tls, build_sasl(cfg, tls.required))
