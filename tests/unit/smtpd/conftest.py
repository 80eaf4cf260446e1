"""Fixtures for smtpd's unit tests: a real configuration directory, tables and queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sdmail.core.config import load_config
from sdmail.core.spool import Spool
from sdmail.smtpd.checks import DomainState
from sdmail.smtpd.listeners import Service, build_service
from sdmail.smtpd.session import Client, Session


class FakeDomains:
    """The DNS door: domains named here have that state; every other one exists."""

    def __init__(self, states: dict[str, DomainState] | None = None) -> None:
        self.states = states or {}
        self.asked: list[str] = []

    def state(self, domain: str) -> DomainState:
        self.asked.append(domain)
        return self.states.get(domain.lower(), DomainState.EXISTS)


class World:
    """A configuration directory with main.cf, aliases and a queue, under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "spool"
        self.config_dir.mkdir()
        self.queue_dir.mkdir()
        with Spool(self.queue_dir) as spool:
            spool.create_directories()
        self.aliases = self.config_dir / "aliases"
        self.aliases.write_text("postmaster root\nalias-user root\njösé root\n")
        self.domains = FakeDomains()
        self.spools: dict[str, Spool] = {}

    def main_cf(self, extra: str = "") -> str:
        return (
            "myhostname = mail.example.test\n"
            "mydestination = $myhostname, localhost\n"
            f"queue_directory = {self.queue_dir}\n"
            f"socket_directory = {self.root}/run\n"
            f"alias_maps = texthash:{self.aliases}\n"
            "inet_interfaces = loopback-only\n" + extra
        )

    def service(self, extra: str = "", overrides: tuple[str, ...] = ()) -> Service:
        (self.config_dir / "main.cf").write_text(self.main_cf(extra))
        cfg = load_config(self.config_dir, overrides)
        return build_service("smtpd", cfg, self.spools, domains=self.domains)

    def table(self, name: str, text: str) -> str:
        path = self.config_dir / name
        path.write_text(text)
        return f"texthash:{path}"

    def session(
        self, extra: str = "", *, address: str = "192.0.2.10", name: str = "client.example"
    ) -> Session:
        return Session(self.service(extra), Client(name, address, 40000))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def talk() -> Callable[[Session, str], str]:
    """talk(session, "MAIL FROM:<a@b>") -> "250 2.1.0 Ok" (the first line, with its code)."""

    def run(session: Session, line: str) -> str:
        outcome = session.command(line.encode("utf-8", "surrogateescape"))
        assert not hasattr(outcome, "size"), outcome
        return outcome.logged()  # type: ignore[union-attr]

    return run
