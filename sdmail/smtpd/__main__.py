"""`python3 -m sdmail.smtpd`: run the SMTP server (see sdmail/smtpd/__init__.py)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import socket
import sys
from collections.abc import Sequence

from sdmail.core import systemd
from sdmail.core.config import Config
from sdmail.core.skeleton import (
    AsyncDaemonContext,
    ExitCode,
    Fatal,
    UsageError,
    option_parser,
    run_daemon_async,
)
from sdmail.core.spool import Spool
from sdmail.smtpd.dnsbl import Dns
from sdmail.smtpd.listeners import (
    Overrides,
    Service,
    build_service,
    listener_config,
    split_overrides,
)
from sdmail.smtpd.server import SmtpdServer, quiet_engine_logging, shut_down, start_listeners

log = logging.getLogger("sdmail.smtpd")

PROGRAM = "smtpd"
DEFAULT_LISTENER = "smtpd"
_LIFETIME_POLL = 0.5  # seconds between looks at max_idle / max_use


def _parser() -> argparse.ArgumentParser:
    parser = option_parser(PROGRAM, "The sdmail SMTP server.", common=False)
    parser.add_argument("-c", dest="config_dir", metavar="DIR", help="configuration directory")
    parser.add_argument(
        "-o",
        metavar="[LISTENER/]name=value",
        action=_OverrideAction,
        help="override a main.cf parameter, for every listener or one (repeatable)",
    )
    parser.add_argument("-v", dest="verbose", action="count", default=0, help="more logging")
    parser.add_argument("-D", dest="debug", action="store_true", help="debug mode")
    parser.add_argument(
        "-l",
        dest="listen",
        metavar="[NAME=]HOST:PORT",
        action="append",
        default=[],
        help="without LISTEN_FDS: listen on HOST:PORT as listener NAME (default smtpd)",
    )
    return parser


class _OverrideAction(argparse.Action):
    """-o name=value goes where every program's -o goes (`overrides`, read by the skeleton
    for the process's own configuration); -o LISTENER/name=value to `listener_overrides`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        text = str(values)
        name = text.partition("=")[0]
        dest = "listener_overrides" if "/" in name else "overrides"
        setattr(namespace, dest, [*(getattr(namespace, dest, None) or []), text])


def parse_listen(text: str) -> tuple[str, str, int]:
    """`[NAME=]HOST:PORT` (IPv6 as `[::1]:25`) -> (name, host, port); UsageError if bad."""
    name, equals, where = text.partition("=")
    if not equals:
        name, where = DEFAULT_LISTENER, text
    host, colon, port = where.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536 or not name:
        raise UsageError(f"bad -l {text!r}: expected [NAME=]HOST:PORT")
    return name, host, int(port)


def listening_sockets(listen: Sequence[str]) -> tuple[list[tuple[str, socket.socket]], bool]:
    """The sockets systemd passed (by FileDescriptorName), else those -l names; and whether
    they came from systemd."""
    passed = systemd.listen_fds()
    if passed:
        return [(item.name, socket.socket(fileno=item.fd)) for item in passed], True
    sockets = []
    for text in listen:
        name, host, port = parse_listen(text)
        try:
            sock = socket.create_server((host, port), reuse_port=False, backlog=128)
        except OSError as exc:
            raise Fatal(
                f"cannot listen on {host}:{port}: {exc.strerror}", ExitCode.UNAVAILABLE
            ) from None
        sockets.append((name, sock))
    if not sockets:
        raise UsageError("no listening socket: LISTEN_FDS is not set and no -l was given")
    return sockets, False


def build_services(
    config_dir: str | None,
    overrides: Overrides,
    names: Sequence[str],
    spools: dict[str, Spool],
    *,
    from_systemd: bool = False,
    dns: Dns | None = None,
) -> dict[str, Service]:
    """Each listener's Service; raises the configuration errors.

    -o for a listener that is not there is a usage error with -l (the names are on the same
    command line), but not under systemd: the unit carries submission's settings whether
    or not its socket unit is enabled."""
    for name in overrides.per_listener:
        if name in names:
            continue
        if not from_systemd:
            raise UsageError(f"-o {name}/...: no listener is named {name!r}")
        log.info(
            "-o %s/...: systemd passed no socket named %s; its settings are unused", name, name
        )
    return {
        name: build_service(name, listener_config(config_dir, overrides, name), spools, dns=dns)
        for name in dict.fromkeys(names)
    }


async def serve(ctx: AsyncDaemonContext[None]) -> int:
    options = ctx.options
    quiet_engine_logging(ctx.invocation.verbose)
    overrides = split_overrides(
        [*ctx.invocation.overrides, *(getattr(options, "listener_overrides", None) or [])]
    )
    sockets, from_systemd = listening_sockets(options.listen)
    names = [name for name, _ in sockets]
    spools: dict[str, Spool] = {}
    dns = Dns(asyncio.get_running_loop())
    services = await asyncio.to_thread(
        functools.partial(build_services, from_systemd=from_systemd, dns=dns),
        ctx.invocation.config_dir,
        overrides,
        names,
        spools,
    )
    server = SmtpdServer(services, ctx.lifetime)

    async def reload(_cfg: Config) -> None:
        # A configuration error here fails the reload (the skeleton keeps the old
        # configuration and STATUS= keeps naming the old main.cf).
        new = await asyncio.to_thread(
            functools.partial(build_services, from_systemd=from_systemd, dns=dns),
            ctx.invocation.config_dir,
            overrides,
            names,
            spools,
        )
        server.replace_services(new)

    ctx.add_reload_hook(reload)
    listeners = await start_listeners(server, sockets)
    ctx.ready()
    done_serving = False
    try:
        while not ctx.stopping:
            wait = ctx.lifetime.seconds_until_idle_exit()
            await ctx.wait(_LIFETIME_POLL if wait is None else min(wait, _LIFETIME_POLL))
            if ctx.lifetime.should_exit():
                done_serving = True
                break
    finally:
        await shut_down(server, listeners, graceful=done_serving and not ctx.stopping)
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon_async(PROGRAM, argv, serve, parser=_parser())


if __name__ == "__main__":
    sys.exit(main())
