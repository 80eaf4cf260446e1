"""The common main(): options, configuration, logging, signals, lifetime and exit codes.

Every sdmail program's `main(argv)` hands its work to one of three runners here, which do
the chores Postfix's single_server.c / multi_server.c / mail_task do for its programs:

- `run_daemon(program, argv, serve)`: a daemon whose `serve(ctx)` blocks in `ctx.wait()`
  (or selects on `ctx.wakeup_fd` besides its own descriptors);
- `run_daemon_async(program, argv, serve)`: the same for an asyncio daemon (smtpd, qmgr),
  whose `async serve(ctx)` awaits `ctx.wait()` or `ctx.stopped()`;
- `run_tool(program, argv, tool)`: a command-line tool (postsuper, postqueue, ...).

Each runner parses the options every program takes (`-c DIR` configuration directory,
`-o name=value` overrides, repeatable, `-v` more logging, repeatable, `-D` debug mode:
Python's faulthandler and asyncio's debug mode, as Postfix's -D runs a daemon under a
debugger), loads main.cf, binds the program's settings dataclass, and sets up logging with
`$syslog_name/program` as the identifier. Daemons then get: SIGTERM and SIGINT ask for an
orderly exit (`ctx.stopping`, STOPPING=1 to systemd); SIGHUP re-reads main.cf with the same
-c and -o, and binds the settings again. A new configuration that does not parse or bind
leaves the old one in force and logs a warning that names file, line and parameter; a good
one is announced to systemd (RELOADING=1, then READY=1 once the reload hooks ran), so a
`systemctl reload` returns when the daemon runs with it. `Lifetime` counts max_use and
max_idle for the daemons that exit when idle.

Exit codes are sysexits (`ExitCode`). A configuration that does not parse at start logs
`fatal: /etc/sdmail/main.cf, line N: name: why` and exits 78 (EX_CONFIG), which the units
list in RestartPreventExitStatus=. A bad command line exits 64. A program gives up with
`raise Fatal(message, exit_code)`: `fatal: message` in the log, and on a tool's stderr as
`postsuper: fatal: message`. An exception nobody expected is logged as `fatal: internal
error: ...` with its traceback in the journal at debug priority (never on a user's
terminal) and exits 70 (EX_SOFTWARE) or the tool's chosen code.

Failure modes: the runners never raise (they return the exit status; SystemExit from a
program becomes its code). `Lifetime.end_use` raises RuntimeError without a matching
`begin_use`. The contexts' `settings` raises RuntimeError when the runner got no settings
type.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import inspect
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, Generic, NoReturn, TypeVar

from sdmail.core import systemd
from sdmail.core.config import Config, ConfigError, bind, load_config
from sdmail.core.log import JOURNAL_SOCKET, log_traceback, setup_logging
from sdmail.core.match_list import MatchListError
from sdmail.core.tables.table import TableError

S = TypeVar("S")

_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_HANDLED_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# What a bad main.cf, list file or table file raises: each names file, line and
# parameter, and each ends a starting daemon with EX_CONFIG (78) or fails a reload.
CONFIGURATION_ERRORS = (ConfigError, MatchListError, TableError)


class ExitCode(IntEnum):
    """sysexits.h, the exit statuses sdmail's programs use."""

    OK = 0
    USAGE = 64
    DATAERR = 65
    NOINPUT = 66
    NOUSER = 67
    UNAVAILABLE = 69
    SOFTWARE = 70
    TEMPFAIL = 75
    NOPERM = 77
    CONFIG = 78


class UsageError(Exception):
    """A command line the program does not understand (exit 64)."""


class Fatal(Exception):
    """The program gives up: `fatal: message` in the log, and EXIT_CODE."""

    def __init__(self, message: str, exit_code: int = ExitCode.SOFTWARE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; {self.format_usage().strip()}")


def _override(text: str) -> str:
    name, equals, _value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"bad -o {text!r}: expected name=value")
    return text


def option_parser(
    program: str, description: str | None = None, *, common: bool = True
) -> argparse.ArgumentParser:
    """A parser that fails with UsageError (exit 64) instead of exiting, has no -h (postconf
    uses it), and with COMMON holds the options every program takes: -c, -o, -v, -D.

    A program adds its own options and gives the parser to its runner; one with options of
    its own that clash (sendmail's -oi) passes COMMON=False and adds what it keeps.
    """
    parser = _Parser(prog=program, description=description, add_help=False, allow_abbrev=False)
    if common:
        parser.add_argument("-c", dest="config_dir", metavar="DIR", help="configuration directory")
        parser.add_argument(
            "-o",
            dest="overrides",
            metavar="name=value",
            action="append",
            type=_override,
            help="override a main.cf parameter (repeatable)",
        )
        parser.add_argument(
            "-v", dest="verbose", action="count", default=0, help="more logging (repeatable)"
        )
        parser.add_argument("-D", dest="debug", action="store_true", help="debug mode")
    return parser


@dataclass(frozen=True)
class Invocation:
    """What the command line said: the common options, and the program's own in `options`."""

    program: str
    options: argparse.Namespace
    config_dir: str | None
    overrides: tuple[str, ...]
    verbose: int
    debug: bool


def parse_invocation(
    program: str, argv: Sequence[str] | None, parser: argparse.ArgumentParser | None = None
) -> Invocation:
    """Parse ARGV (sys.argv[1:] when None); raises UsageError."""
    parser = parser if parser is not None else option_parser(program)
    options = parser.parse_args(argv)
    return Invocation(
        program=program,
        options=options,
        config_dir=getattr(options, "config_dir", None),
        overrides=tuple(getattr(options, "overrides", None) or ()),
        verbose=int(getattr(options, "verbose", 0) or 0),
        debug=bool(getattr(options, "debug", False)),
    )


# --------------------------------------------------------------------------------------
# max_idle / max_use
# --------------------------------------------------------------------------------------
class Lifetime:
    """When a daemon that serves clients should exit: after MAX_USE uses, or MAX_IDLE seconds
    without a client; never while it serves one (Postfix's max_use and max_idle)."""

    def __init__(
        self, max_idle: float, max_use: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_idle = max_idle
        self.max_use = max_use
        self.uses = 0
        self.busy = 0
        self._clock = clock
        self._idle_since = clock()

    @classmethod
    def from_config(cls, cfg: Config) -> Lifetime:
        return cls(cfg.get_time("max_idle"), cfg.get_int("max_use"))

    def set_limits(self, max_idle: float, max_use: int) -> None:
        self.max_idle = max_idle
        self.max_use = max_use

    def begin_use(self) -> None:
        """A client connected, or a request arrived."""
        self.uses += 1
        self.busy += 1

    def end_use(self) -> None:
        """That client or request is done; idle time counts from now when none is left."""
        if self.busy == 0:
            raise RuntimeError("Lifetime.end_use() without begin_use()")
        self.busy -= 1
        if self.busy == 0:
            self._idle_since = self._clock()

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        """`with lifetime.use():` around serving one client."""
        self.begin_use()
        try:
            yield
        finally:
            self.end_use()

    def idle_seconds(self) -> float:
        return 0.0 if self.busy else max(0.0, self._clock() - self._idle_since)

    def used_up(self) -> bool:
        return self.uses >= self.max_use

    def should_exit(self) -> bool:
        """True when no client is served and max_use was reached or max_idle passed."""
        return self.busy == 0 and (self.used_up() or self.idle_seconds() >= self.max_idle)

    def seconds_until_idle_exit(self) -> float | None:
        """How long to wait for work before should_exit() turns true; None while busy."""
        if self.busy:
            return None
        return max(0.0, self.max_idle - self.idle_seconds())


# --------------------------------------------------------------------------------------
# What a running program sees
# --------------------------------------------------------------------------------------
ReloadHook = Callable[[Config], "Awaitable[None] | None"]


class _Context(Generic[S]):
    """The configuration and settings of a running program; shared by daemons and tools."""

    def __init__(
        self,
        invocation: Invocation,
        logger: logging.Logger,
        settings_type: type[S] | None,
        journal_socket: str | Path,
        tool: bool,
    ) -> None:
        self.invocation = invocation
        self.program = invocation.program
        self.options = invocation.options
        self.logger = logger
        self._settings_type = settings_type
        self._journal_socket = journal_socket
        self._tool = tool
        self._config: Config | None = None
        self._settings: S | None = None

    def _load(self) -> tuple[Config, S | None]:
        """A new configuration and its bound settings; raises ConfigError, changes nothing."""
        cfg = load_config(self.invocation.config_dir, self.invocation.overrides)
        settings = bind(self._settings_type, cfg) if self._settings_type is not None else None
        return cfg, settings

    def _apply(self, cfg: Config, settings: S | None) -> None:
        self._config, self._settings = cfg, settings
        self.logger = setup_logging(
            self.program,
            cfg.get("syslog_name"),
            self.invocation.verbose,
            tool=self._tool,
            journal_socket=self._journal_socket,
        )
        for warning in cfg.warnings:
            self.logger.warning("%s: %s", cfg.config_dir / "main.cf", warning)

    @property
    def config(self) -> Config:
        """The configuration in force (a tool that said needs_config=False loads it now)."""
        if self._config is None:
            self._apply(*self._load())
        assert self._config is not None
        return self._config

    @property
    def settings(self) -> S:
        """The program's settings dataclass, bound from the configuration in force."""
        if self._settings_type is None:
            raise RuntimeError(f"{self.program}: no settings type was given to the runner")
        self.config  # noqa: B018  (loads the configuration on first use)
        assert self._settings is not None
        return self._settings


class ToolContext(_Context[S]):
    """What a command-line tool sees: its options, its configuration, its logger."""


class DaemonContext(_Context[S]):
    """What a running daemon sees: configuration, settings, lifetime, stop and reload."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lifetime = Lifetime(1, 1)  # its limits come with the configuration, in _apply
        self.stopping = False
        self._stop_signal: int | None = None
        self._stopping_told = False
        self._reload_hooks: list[ReloadHook] = []
        self._watchdog = self._watchdog_interval()
        self._last_watchdog = time.monotonic()
        self._status_text: str | None = None

    def _watchdog_interval(self) -> float | None:
        try:
            return systemd.watchdog_interval()
        except systemd.SystemdError as exc:
            self.logger.warning("%s; not feeding the watchdog", exc)
            return None

    def _apply(self, cfg: Config, settings: S | None) -> None:
        super()._apply(cfg, settings)
        self.lifetime.set_limits(cfg.get_time("max_idle"), cfg.get_int("max_use"))

    def add_reload_hook(self, hook: ReloadHook) -> None:
        """Call HOOK(new_config) after each successful reload, once ctx.config and
        ctx.settings are the new ones and before systemd hears READY=1.

        A hook that raises a configuration error (ConfigError, MatchListError,
        TableError: the new settings cannot be used) fails the reload: the old
        configuration comes back and STATUS= keeps naming the old main.cf."""
        self._reload_hooks.append(hook)

    def request_stop(self) -> None:
        """Ask for the same orderly exit SIGTERM asks for."""
        self.stopping = True
        if not self._stopping_told:
            self._stopping_told = True
            self._notify(systemd.notify_stopping)

    def ready(self, status: str | None = None) -> None:
        """Tell systemd the daemon serves (Type=notify units wait for this)."""
        if status is not None:
            self._status_text = status
        self._notify(systemd.notify_ready, self._status_line())

    def set_status(self, text: str | None = None) -> None:
        """STATUS= for `systemctl status`: `config DIGEST`, then TEXT.

        The digest of the main.cf the daemon runs with is what `postfix reload-parts`
        (sdmail.service's reload) waits to see, so a daemon's own status must go
        through here, never straight to systemd.notify_status.
        """
        self._status_text = text
        self._notify(systemd.notify_status, self._status_line())

    def _status_line(self) -> str:
        line = f"config {self.config.digest}"
        return f"{line}; {self._status_text}" if self._status_text else line

    def _notify(self, send: Callable[..., bool], *args: Any) -> None:
        try:
            send(*args)
        except (systemd.SystemdError, ValueError) as exc:
            self.logger.warning("%s", exc)

    def _reload_prepare(self) -> None:
        self._notify(systemd.notify_reloading)

    def _reload_failed(self, exc: ConfigError | MatchListError | TableError) -> None:
        self.logger.warning("%s; keeping the previous configuration", exc)
        self._notify(systemd.notify_ready, self._status_line())

    def _reload_done(self) -> None:
        self.logger.info("reload -- configuration %s", self.config.config_dir)
        self._notify(systemd.notify_ready, self._status_line())

    def _watchdog_due(self) -> float | None:
        """Seconds until the next WATCHDOG=1 is due (sent at half the interval), or None."""
        if self._watchdog is None:
            return None
        return max(0.0, self._last_watchdog + self._watchdog / 2 - time.monotonic())

    def _pet_watchdog(self) -> None:
        if self._watchdog_due() == 0.0:
            self._last_watchdog = time.monotonic()
            self._notify(systemd.notify_watchdog)


class PlainDaemonContext(DaemonContext[S]):
    """A daemon without asyncio: it blocks in `wait()`, where signals are acted upon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wakeup_read, self._wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._reload_pending = False

    @property
    def wakeup_fd(self) -> int:
        """Readable when a signal arrived: select on it beside your own descriptors, then
        call `wait(0)` to act on it."""
        return self._wakeup_read

    def wait(self, timeout: float | None) -> bool:
        """Block up to TIMEOUT seconds (None: until a signal), reloading on SIGHUP and
        keeping systemd's watchdog fed. True when the daemon should stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # Emptied before acting: a signal that comes later writes to it again, and a
            # caller selecting on wakeup_fd does not see it readable for one already handled.
            self._drain_wakeup()
            self._act_on_signals()
            if self.stopping:
                self.request_stop()  # a signal may have come after _act_on_signals looked
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            watchdog = self._watchdog_due()
            if watchdog is not None:
                remaining = watchdog if remaining is None else min(remaining, watchdog)
            select.select([self._wakeup_read], [], [], remaining)

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup_read, 512):
                pass

    def _act_on_signals(self) -> None:
        self._pet_watchdog()
        if self.stopping:
            self.request_stop()
        elif self._reload_pending:
            self._reload_pending = False
            self._reload()

    def _reload(self) -> None:
        self._reload_prepare()
        try:
            new = self._load()
        except CONFIGURATION_ERRORS as exc:
            self._reload_failed(exc)
            return
        previous = (self.config, self._settings)
        self._apply(*new)
        try:
            for hook in self._reload_hooks:
                hook(self.config)
        except CONFIGURATION_ERRORS as exc:
            self._apply(*previous)
            self._reload_failed(exc)
            return
        self._reload_done()

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Runs between two bytecodes of the service: only note it, wait() acts on it.
        if signum == signal.SIGHUP:
            self._reload_pending = True
        else:
            self._stop_signal = signum
            self.stopping = True

    def _close(self) -> None:
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)


class AsyncDaemonContext(DaemonContext[S]):
    """An asyncio daemon: it awaits `wait()` or `stopped()`; reloads run as tasks, with
    main.cf read in a worker thread, off the event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_event = asyncio.Event()
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False

    def request_stop(self) -> None:
        super().request_stop()
        self._stop_event.set()

    async def stopped(self) -> None:
        """Return when the daemon should stop."""
        await self._stop_event.wait()

    async def wait(self, timeout: float | None) -> bool:
        """Wait up to TIMEOUT seconds (None: until asked to stop). True when it should stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout)
        return self.stopping

    def _on_reload_signal(self) -> None:
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self._reload_task = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            self._reload_prepare()
            try:
                new = await asyncio.to_thread(self._load)
            except CONFIGURATION_ERRORS as exc:
                self._reload_failed(exc)
            else:
                previous = (self.config, self._settings)
                self._apply(*new)
                try:
                    for hook in self._reload_hooks:
                        outcome = hook(self.config)
                        if inspect.isawaitable(outcome):
                            await outcome
                except CONFIGURATION_ERRORS as exc:
                    self._apply(*previous)
                    self._reload_failed(exc)
                else:
                    self._reload_done()
            if not self._reload_again:
                return

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signal = signum
        self.request_stop()

    async def _feed_watchdog(self) -> None:
        while True:
            due = self._watchdog_due()
            if due is None:
                return
            await asyncio.sleep(due)
            self._pet_watchdog()


def passed_socket(name: str, program: str) -> socket.socket:
    """The listening socket systemd passed as NAME (FileDescriptorName=); Fatal (EX_CONFIG)
    naming the unit to run PROGRAM from when there is none."""
    try:
        passed = systemd.listen_fds()
    except systemd.SystemdError as exc:
        raise Fatal(str(exc), ExitCode.CONFIG) from None
    for fd, fd_name in passed:
        if fd_name == name:
            return socket.socket(fileno=fd)
    names = ", ".join(fd_name for _, fd_name in passed) or "none"
    raise Fatal(
        f"no listening socket named {name} was passed (sockets: {names}); "
        f"run {program} from sdmail-{name}.socket",
        ExitCode.CONFIG,
    )


class Clients:
    """The clients of an asyncio daemon that serves one connection at a time per task:
    counted in its Lifetime, waited for at stop, and the idle exit (max_idle)."""

    def __init__(self, ctx: AsyncDaemonContext[Any]) -> None:
        self.ctx = ctx
        self._tasks: set[asyncio.Task[Any]] = set()
        self._activity = asyncio.Event()

    async def serve(self, writer: asyncio.StreamWriter, work: Awaitable[None]) -> None:
        """Await WORK, one client's conversation on WRITER's connection, then close it."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.ctx.lifetime.begin_use()
        try:
            await work
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.ctx.lifetime.end_use()
            self._tasks.discard(task)
            self._activity.set()

    async def run_until_idle(self) -> None:
        """Return after max_idle seconds without a client, or when asked to stop."""
        lifetime = self.ctx.lifetime
        stop = asyncio.ensure_future(self.ctx.stopped())
        try:
            while not self.ctx.stopping:
                remaining = lifetime.seconds_until_idle_exit()
                if remaining is not None and remaining <= 0:
                    return
                self._activity.clear()
                activity = asyncio.ensure_future(self._activity.wait())
                await asyncio.wait(
                    {stop, activity}, timeout=remaining, return_when="FIRST_COMPLETED"
                )
                activity.cancel()
        finally:
            stop.cancel()

    async def finish(self, grace: float) -> None:
        """Let the clients being served finish, for at most GRACE seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)


# --------------------------------------------------------------------------------------
# The runners
# --------------------------------------------------------------------------------------
def run_daemon(
    program: str,
    argv: Sequence[str] | None,
    serve: Callable[[PlainDaemonContext[S]], int | None],
    *,
    settings: type[S] | None = None,
    parser: argparse.ArgumentParser | None = None,
    journal_socket: str | Path = JOURNAL_SOCKET,
) -> int:
    """Run SERVE(ctx) as the daemon PROGRAM; returns the exit status for sys.exit()."""

    def body(ctx: _Context[S]) -> int | None:
        assert isinstance(ctx, PlainDaemonContext)
        with _plain_signals(ctx):
            ctx.set_status()
            status = serve(ctx)
            _log_stop_signal(ctx)
            return status

    return _run(
        program,
        argv,
        body,
        context_type=PlainDaemonContext,
        settings=settings,
        parser=parser,
        journal_socket=journal_socket,
    )


def run_daemon_async(
    program: str,
    argv: Sequence[str] | None,
    serve: Callable[[AsyncDaemonContext[S]], Awaitable[int | None]],
    *,
    settings: type[S] | None = None,
    parser: argparse.ArgumentParser | None = None,
    journal_socket: str | Path = JOURNAL_SOCKET,
) -> int:
    """Run `await SERVE(ctx)` in a new event loop as the daemon PROGRAM."""

    async def in_loop(ctx: AsyncDaemonContext[S]) -> int | None:
        loop = asyncio.get_running_loop()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, ctx._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, ctx._on_reload_signal)
        watchdog = loop.create_task(ctx._feed_watchdog())
        try:
            ctx.set_status()
            status = await serve(ctx)
            _log_stop_signal(ctx)
            return status
        finally:
            watchdog.cancel()
            for signum in _HANDLED_SIGNALS:
                loop.remove_signal_handler(signum)

    def body(ctx: _Context[S]) -> int | None:
        assert isinstance(ctx, AsyncDaemonContext)
        return asyncio.run(in_loop(ctx), debug=ctx.invocation.debug)

    return _run(
        program,
        argv,
        body,
        context_type=AsyncDaemonContext,
        settings=settings,
        parser=parser,
        journal_socket=journal_socket,
    )


def run_tool(
    program: str,
    argv: Sequence[str] | None,
    tool: Callable[[ToolContext[S]], int | None],
    *,
    settings: type[S] | None = None,
    parser: argparse.ArgumentParser | None = None,
    needs_config: bool = True,
    unexpected_exit: int = ExitCode.SOFTWARE,
    journal_socket: str | Path = JOURNAL_SOCKET,
) -> int:
    """Run TOOL(ctx) as the command-line tool PROGRAM; returns the exit status.

    With NEEDS_CONFIG=False main.cf is read on the first use of ctx.config (postconf
    reads it its own way). UNEXPECTED_EXIT is the status after an unexpected exception
    (sendmail says 75: try again later).
    """

    def body(ctx: _Context[S]) -> int | None:
        assert isinstance(ctx, ToolContext)
        return tool(ctx)

    return _run(
        program,
        argv,
        body,
        context_type=ToolContext,
        settings=settings,
        parser=parser,
        journal_socket=journal_socket,
        tool=True,
        eager_config=needs_config,
        unexpected_exit=unexpected_exit,
    )


def _run(
    program: str,
    argv: Sequence[str] | None,
    body: Callable[[_Context[S]], int | None],
    *,
    context_type: type[_Context[S]],
    settings: type[S] | None,
    parser: argparse.ArgumentParser | None,
    journal_socket: str | Path,
    tool: bool = False,
    eager_config: bool = True,
    unexpected_exit: int = ExitCode.SOFTWARE,
) -> int:
    """The guard every program runs in: each failure becomes a log line and an exit status."""
    logger = setup_logging(program, tool=tool, journal_socket=journal_socket)
    try:
        invocation = parse_invocation(program, argv, parser)
        logger = setup_logging(
            program, verbose=invocation.verbose, tool=tool, journal_socket=journal_socket
        )
        if invocation.debug:
            faulthandler.enable()
        ctx = context_type(invocation, logger, settings, journal_socket, tool)
        if eager_config:
            ctx.config  # noqa: B018  (reads main.cf now, so a bad one stops the start)
        status = body(ctx)
        return ExitCode.OK if status is None else int(status)
    except UsageError as exc:
        logger.critical("%s", exc)
        return ExitCode.USAGE
    except CONFIGURATION_ERRORS as exc:
        logger.critical("%s", exc)
        return ExitCode.CONFIG
    except Fatal as exc:
        logger.critical("%s", exc.message)
        return exc.exit_code
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or ExitCode.OK
        logger.critical("%s", exc.code)
        return 1
    except KeyboardInterrupt:
        logger.critical("interrupted")
        return 128 + signal.SIGINT
    except Exception as exc:
        logger.critical("internal error: %s", _describe(exc))
        log_traceback(logger, exc)
        return unexpected_exit


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _plain_signals(ctx: PlainDaemonContext[Any]) -> Iterator[None]:
    previous = {signum: signal.signal(signum, ctx._on_signal) for signum in _HANDLED_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(ctx._wakeup_write, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        ctx._close()


def _log_stop_signal(ctx: DaemonContext[Any]) -> None:
    if ctx._stop_signal is not None:
        ctx.logger.info("terminating on signal %d", ctx._stop_signal)
