"""Tests for sdmail.core.skeleton: a demo daemon as a real process, tools, Lifetime."""

import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdmail.core.skeleton import (
    ExitCode,
    Fatal,
    Lifetime,
    UsageError,
    option_parser,
    parse_invocation,
    run_tool,
)

REPO = Path(__file__).resolve().parents[3]

# A tiny daemon built on the skeleton; DEMO_SHAPE picks the plain or the asyncio runner and
# DEMO_MODE what it does once it serves.
DEMO = textwrap.dedent(
    """
    import asyncio, logging, os, sys
    from dataclasses import dataclass
    from sdmail.core.skeleton import Fatal, run_daemon, run_daemon_async

    @dataclass(frozen=True)
    class Settings:
        message_size_limit: int

    log = logging.getLogger("sdmail.demo")
    MODE = os.environ.get("DEMO_MODE", "")

    def refuse_odd_limits(cfg):
        from sdmail.core.config import ConfigError
        if MODE == "refuse" and ctx_ref[0].settings.message_size_limit % 2:
            raise ConfigError("odd limits are refused by this service", name="message_size_limit")

    ctx_ref = []

    def start(ctx):
        ctx_ref.append(ctx)
        ctx.add_reload_hook(refuse_odd_limits)
        ctx.add_reload_hook(
            lambda cfg: log.info("reloaded: message_size_limit=%d", ctx.settings.message_size_limit)
        )
        log.info("started: message_size_limit=%d", ctx.settings.message_size_limit)
        log.debug("verbose logging is on")
        ctx.ready()
        if MODE == "crash":
            raise KeyError("no such thing")
        if MODE == "fatal":
            raise Fatal("queue directory /nowhere is missing", 69)

    def finish(ctx):
        log.info("stopping: message_size_limit=%d", ctx.settings.message_size_limit)

    def serve(ctx):
        start(ctx)
        if MODE == "select":
            import select
            wakeups = 0
            while True:
                readable, _, _ = select.select([ctx.wakeup_fd], [], [], 0.2)
                wakeups += bool(readable)
                if ctx.wait(0):
                    break
            log.info("wakeups: %d", wakeups)
            finish(ctx)
            return 0
        if MODE == "idle":
            while not ctx.wait(ctx.lifetime.seconds_until_idle_exit()):
                if ctx.lifetime.should_exit():
                    log.info("idle, exiting")
                    return 0
        while not ctx.wait(None):
            pass
        finish(ctx)

    async def serve_async(ctx):
        start(ctx)
        if MODE == "idle":
            while not await ctx.wait(ctx.lifetime.seconds_until_idle_exit()):
                if ctx.lifetime.should_exit():
                    log.info("idle, exiting")
                    return 0
        await ctx.stopped()
        finish(ctx)

    runner = run_daemon_async if os.environ["DEMO_SHAPE"] == "async" else run_daemon
    sys.exit(
        runner(
            "demo",
            sys.argv[1:],
            serve_async if runner is run_daemon_async else serve,
            settings=Settings,
            journal_socket=os.environ["DEMO_JOURNAL"],
        )
    )
    """
)


# --------------------------------------------------------------------------------------
# Stand-ins for journald and systemd's notify socket
# --------------------------------------------------------------------------------------
def parse_native(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            at = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            at = end + 10 + size
        fields.setdefault(name.decode(), value.decode())
    return fields


class Datagrams:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def next(self, timeout: float = 10) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(1 << 20)


class Journal(Datagrams):
    def wait_for(self, pattern: str, timeout: float = 15) -> dict[str, str]:
        """The first entry (from now) whose MESSAGE matches PATTERN."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                entry = parse_native(self.next(max(remaining, 0.01)))
            except TimeoutError:
                raise AssertionError(f"no log line matching {pattern!r}; saw {self.seen}") from None
            self.seen.append(entry["MESSAGE"])
            if re.search(pattern, entry["MESSAGE"]):
                return entry


class Notify(Datagrams):
    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self.next(max(remaining, 0.01)).decode()
            except TimeoutError:
                raise AssertionError(f"no notification {text!r}; saw {self.seen}") from None
            self.seen.append(message)
            if text in message:
                return message


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdsk-", dir="/tmp") as directory:
        yield Path(directory)


class Demo:
    def __init__(self, directory: Path, shape: str) -> None:
        self.directory = directory
        self.shape = shape
        self.config_dir = directory / "etc"
        self.config_dir.mkdir()
        self.main_cf = self.config_dir / "main.cf"
        self.script = directory / "demo.py"
        self.script.write_text(DEMO)
        self.journal = Journal(directory / "journal")
        self.notify = Notify(directory / "notify")
        self.process: subprocess.Popen[str] | None = None

    def start(self, *args: str, mode: str = "", **extra_env: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update(
            extra_env,
            PYTHONPATH=str(REPO),
            DEMO_SHAPE=self.shape,
            DEMO_MODE=mode,
            DEMO_JOURNAL=str(self.directory / "journal"),
            NOTIFY_SOCKET=str(self.directory / "notify"),
        )
        self.process = subprocess.Popen(
            [sys.executable, str(self.script), "-c", str(self.config_dir), *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, mode: str = "") -> int:
        self.start(*args, mode=mode)
        return self.wait()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self) -> int:
        assert self.process is not None
        try:
            _, stderr = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        assert "Traceback" not in stderr, stderr
        return self.process.returncode

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.journal.sock.close()
        self.notify.sock.close()


@pytest.fixture(params=["plain", "async"])
def demo(short_dir, request):
    running = Demo(short_dir, request.param)
    yield running
    running.close()


# --------------------------------------------------------------------------------------
# The demo daemon
# --------------------------------------------------------------------------------------
def test_broken_main_cf_at_start_exits_78_naming_file_and_line(demo):
    demo.main_cf.write_text("# sdmail\nmessage_size_limit = ten\n")
    assert demo.run() == ExitCode.CONFIG == 78
    entry = demo.journal.wait_for("fatal")
    assert entry["MESSAGE"] == (
        f'fatal: {demo.main_cf}, line 2: message_size_limit: bad numerical value: "ten"'
    )
    assert entry["PRIORITY"] == "2"
    assert entry["SYSLOG_IDENTIFIER"] == "sdmail/demo"


def test_missing_main_cf_at_start_exits_78(demo):
    assert demo.run() == 78
    assert str(demo.main_cf) in demo.journal.wait_for("^fatal: ")["MESSAGE"]


def test_sighup_with_broken_main_cf_keeps_the_old_configuration_and_says_why(demo):
    demo.main_cf.write_text("message_size_limit = 1000\n")
    demo.start()
    demo.journal.wait_for("^started: message_size_limit=1000$")
    demo.notify.wait_for("READY=1")

    demo.main_cf.write_text("# edited\n\nmessage_size_limit = big\n")
    demo.signal(signal.SIGHUP)
    warning = demo.journal.wait_for("^warning: ")
    assert warning["MESSAGE"] == (
        f'warning: {demo.main_cf}, line 3: message_size_limit: bad numerical value: "big"; '
        "keeping the previous configuration"
    )
    demo.notify.wait_for("RELOADING=1")
    demo.notify.wait_for("READY=1")

    demo.signal(signal.SIGTERM)
    demo.journal.wait_for("^stopping: message_size_limit=1000$")
    demo.journal.wait_for("^terminating on signal 15$")
    assert demo.wait() == 0
    demo.notify.wait_for("STOPPING=1")


def test_sighup_with_good_main_cf_applies_it_before_telling_systemd(demo):
    demo.main_cf.write_text("message_size_limit = 1000\n")
    demo.start()
    demo.notify.wait_for("READY=1")
    demo.main_cf.write_text("message_size_limit = 2000\n")
    demo.signal(signal.SIGHUP)
    demo.journal.wait_for("^reloaded: message_size_limit=2000$")
    demo.journal.wait_for(f"^reload -- configuration {re.escape(str(demo.config_dir))}$")
    reloading = demo.notify.wait_for("RELOADING=1")
    assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.M)
    demo.notify.wait_for("READY=1")
    demo.signal(signal.SIGINT)
    demo.journal.wait_for("^stopping: message_size_limit=2000$")
    assert demo.wait() == 0


def test_status_names_the_main_cf_digest_and_a_reload_updates_it(demo):
    """postfix reload-parts waits for `config DIGEST` of the new main.cf in STATUS=."""
    from sdmail.core.config import main_cf_digest

    demo.main_cf.write_text("message_size_limit = 1000\n")
    demo.start()
    first = main_cf_digest(demo.config_dir)
    demo.notify.wait_for(f"STATUS=config {first}")
    demo.main_cf.write_text("message_size_limit = 2000\n")
    second = main_cf_digest(demo.config_dir)
    assert second != first
    demo.signal(signal.SIGHUP)
    ready = demo.notify.wait_for(f"STATUS=config {second}")
    assert "READY=1" in ready
    demo.main_cf.write_text("message_size_limit = broken\n")
    demo.signal(signal.SIGHUP)
    demo.journal.wait_for("keeping the previous configuration")
    demo.signal(signal.SIGTERM)
    assert demo.wait() == 0


def test_reload_hook_that_refuses_keeps_the_old_configuration_and_digest(demo):
    """A component that cannot use the new settings fails the reload: old config, old STATUS."""
    from sdmail.core.config import main_cf_digest

    demo.main_cf.write_text("message_size_limit = 1000\n")
    demo.start(mode="refuse")
    first = main_cf_digest(demo.config_dir)
    demo.notify.wait_for(f"STATUS=config {first}")
    demo.main_cf.write_text("message_size_limit = 1001\n")
    demo.signal(signal.SIGHUP)
    demo.journal.wait_for("odd limits are refused by this service; keeping the previous")
    demo.notify.wait_for(f"READY=1\nSTATUS=config {first}")
    demo.signal(signal.SIGTERM)
    demo.journal.wait_for("^stopping: message_size_limit=1000$")
    assert demo.wait() == 0


def test_selecting_on_the_wakeup_fd_does_not_spin_after_a_signal(demo):
    """A daemon that selects on ctx.wakeup_fd and calls wait(0) sees one wake-up per
    signal, not a pipe that stays readable for ever."""
    if demo.shape == "async":
        pytest.skip(
            "not applicable: asyncio daemons get signals in their event loop, with no wakeup_fd to select on"
        )
    demo.main_cf.write_text("message_size_limit = 1000\n")
    demo.start(mode="select")
    demo.notify.wait_for("READY=1")
    demo.signal(signal.SIGHUP)
    demo.journal.wait_for("^reload -- configuration")
    time.sleep(1)
    demo.signal(signal.SIGTERM)
    wakeups = int(demo.journal.wait_for("^wakeups: ")["MESSAGE"].split()[1])
    assert demo.wait() == 0
    assert wakeups <= 3, wakeups


def test_overrides_win_over_main_cf_and_survive_a_reload(demo):
    demo.main_cf.write_text("message_size_limit = 1000\n")
    demo.start("-o", "message_size_limit=5000", "-o", "syslog_name=sdmail/relay")
    entry = demo.journal.wait_for("^started: ")
    assert entry["MESSAGE"] == "started: message_size_limit=5000"
    assert entry["SYSLOG_IDENTIFIER"] == "sdmail/relay/demo"
    demo.signal(signal.SIGHUP)
    assert demo.journal.wait_for("^reloaded: ")["MESSAGE"] == "reloaded: message_size_limit=5000"
    demo.signal(signal.SIGTERM)
    assert demo.wait() == 0


def test_syslog_name_and_verbose_logging_from_configuration_and_options(demo):
    demo.main_cf.write_text("syslog_name = sdtest\nmessage_size_limit = 1\n")
    demo.start("-v")
    entry = demo.journal.wait_for("^verbose logging is on$")
    assert (entry["SYSLOG_IDENTIFIER"], entry["PRIORITY"]) == ("sdtest/demo", "7")
    demo.signal(signal.SIGTERM)
    assert demo.wait() == 0


def test_unexpected_exception_is_a_fatal_line_with_traceback_at_debug(demo):
    demo.main_cf.write_text("message_size_limit = 1\n")
    assert demo.run(mode="crash") == ExitCode.SOFTWARE
    fatal = demo.journal.wait_for("^fatal: ")
    assert fatal["MESSAGE"] == "fatal: internal error: KeyError: 'no such thing'"
    traceback = demo.journal.wait_for("^traceback of the error above")
    assert traceback["PRIORITY"] == "7"
    assert "Traceback (most recent call last)" in traceback["MESSAGE"]
    assert "panic" not in fatal["MESSAGE"]


def test_fatal_gives_its_message_and_exit_status(demo):
    demo.main_cf.write_text("message_size_limit = 1\n")
    assert demo.run(mode="fatal") == ExitCode.UNAVAILABLE
    assert demo.journal.wait_for("^fatal: ")["MESSAGE"] == (
        "fatal: queue directory /nowhere is missing"
    )


def test_daemon_exits_after_max_idle_without_clients(demo):
    demo.main_cf.write_text("message_size_limit = 1\nmax_idle = 1s\n")
    started = time.monotonic()
    assert demo.run(mode="idle") == 0
    demo.journal.wait_for("^idle, exiting$")
    assert 0.9 <= time.monotonic() - started < 15


def test_watchdog_is_fed_while_the_daemon_waits(demo):
    demo.main_cf.write_text("message_size_limit = 1\n")
    demo.start(WATCHDOG_USEC="300000")
    demo.notify.wait_for("READY=1")
    started = time.monotonic()
    demo.notify.wait_for("WATCHDOG=1", timeout=5)
    demo.notify.wait_for("WATCHDOG=1", timeout=5)
    assert time.monotonic() - started < 1.5
    demo.signal(signal.SIGTERM)
    assert demo.wait() == 0


def test_bad_command_line_exits_64_with_usage(demo):
    demo.main_cf.write_text("message_size_limit = 1\n")
    assert demo.run("-x") == ExitCode.USAGE
    message = demo.journal.wait_for("^fatal: ")["MESSAGE"]
    assert message.startswith("fatal: unrecognized arguments: -x; usage: demo [-c DIR]")


# --------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def no_journal(short_dir):
    return short_dir / "no-journal"


@dataclass(frozen=True)
class ToolSettings:
    message_size_limit: int


def test_tool_gets_its_options_config_and_settings(tmp_path, no_journal):
    (tmp_path / "main.cf").write_text("message_size_limit = 4242\n")
    parser = option_parser("postdemo")
    parser.add_argument("-q", dest="quick", action="store_true")
    seen = {}

    def tool(ctx):
        seen.update(
            quick=ctx.options.quick,
            limit=ctx.settings.message_size_limit,
            myhostname=ctx.config.get("myhostname"),
        )
        return 3

    argv = ["-q", "-c", str(tmp_path), "-o", "myhostname=mx.example.org"]
    status = run_tool(
        "postdemo", argv, tool, settings=ToolSettings, parser=parser, journal_socket=no_journal
    )
    assert status == 3
    assert seen == {"quick": True, "limit": 4242, "myhostname": "mx.example.org"}


def test_tool_fatal_goes_to_stderr_as_tool_name_fatal(tmp_path, no_journal, capsys):
    (tmp_path / "main.cf").write_text("")

    def tool(ctx):
        raise Fatal("open /var/spool/sdmail/hold: Permission denied", ExitCode.NOPERM)

    status = run_tool("postdemo", ["-c", str(tmp_path)], tool, journal_socket=no_journal)
    assert status == 77
    assert capsys.readouterr().err == (
        "postdemo: fatal: open /var/spool/sdmail/hold: Permission denied\n"
    )


def test_tool_unexpected_exception_shows_no_traceback_on_the_terminal(tmp_path, no_journal, capsys):
    (tmp_path / "main.cf").write_text("")

    def tool(ctx):
        return {}["missing"]

    status = run_tool(
        "sendmail",
        ["-c", str(tmp_path), "-v"],
        tool,
        unexpected_exit=ExitCode.TEMPFAIL,
        journal_socket=no_journal,
    )
    assert status == 75
    err = capsys.readouterr().err
    assert err == "sendmail: fatal: internal error: KeyError: 'missing'\n"


def test_tool_with_broken_main_cf_exits_78_naming_file_and_line(tmp_path, no_journal, capsys):
    (tmp_path / "main.cf").write_text("myhostname = a\nmax_use = many\n")
    status = run_tool("postdemo", ["-c", str(tmp_path)], lambda ctx: 0, journal_socket=no_journal)
    assert status == 78
    assert capsys.readouterr().err == (
        f'postdemo: fatal: {tmp_path / "main.cf"}, line 2: max_use: bad numerical value: "many"\n'
    )


def test_bad_table_file_is_a_configuration_error_naming_file_and_line(tmp_path, no_journal, capsys):
    """A table the program opens (here a regexp file with a bad line) ends it with 78."""
    from sdmail.core.tables import open_table

    (tmp_path / "main.cf").write_text("")
    (tmp_path / "checks").write_text("/ok/ OK\nthis is not a rule\n")

    def tool(ctx):
        open_table(f"regexp:{tmp_path / 'checks'}").lookup("x")

    status = run_tool("postdemo", ["-c", str(tmp_path)], tool, journal_socket=no_journal)
    assert status == 78
    err = capsys.readouterr().err
    assert err.startswith(f"postdemo: fatal: {tmp_path / 'checks'}, line 2:")


def test_tool_that_does_not_need_config_runs_with_a_broken_main_cf(tmp_path, no_journal, capsys):
    (tmp_path / "main.cf").write_text("max_use = many\n")
    status = run_tool(
        "postdemo",
        ["-c", str(tmp_path)],
        lambda ctx: 0,
        needs_config=False,
        journal_socket=no_journal,
    )
    assert status == 0
    status = run_tool(
        "postdemo",
        ["-c", str(tmp_path)],
        lambda ctx: ctx.config.get("max_use") and 0,
        needs_config=False,
        journal_socket=no_journal,
    )
    assert status == 78
    assert "line 1: max_use" in capsys.readouterr().err


def test_tool_usage_error_exits_64(no_journal, capsys):
    status = run_tool("postdemo", ["-o", "novalue"], lambda ctx: 0, journal_socket=no_journal)
    assert status == 64
    err = capsys.readouterr().err
    assert err.startswith("postdemo: fatal: argument -o: bad -o 'novalue': expected name=value;")
    assert "usage: postdemo [-c DIR] [-o name=value] [-v] [-D]" in err


def test_tool_sys_exit_becomes_its_status(tmp_path, no_journal):
    (tmp_path / "main.cf").write_text("")

    def tool(ctx):
        sys.exit(2)

    assert run_tool("postdemo", ["-c", str(tmp_path)], tool, journal_socket=no_journal) == 2


def test_settings_without_a_settings_type_is_a_programming_error(tmp_path, no_journal, capsys):
    (tmp_path / "main.cf").write_text("")
    status = run_tool(
        "postdemo", ["-c", str(tmp_path)], lambda ctx: ctx.settings, journal_socket=no_journal
    )
    assert status == ExitCode.SOFTWARE
    assert "no settings type was given" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------
def test_common_options_are_parsed():
    invocation = parse_invocation(
        "smtpd", ["-c", "/etc/x", "-o", "a=1", "-o", "b = two words", "-vv", "-D"]
    )
    assert invocation.config_dir == "/etc/x"
    assert invocation.overrides == ("a=1", "b = two words")
    assert (invocation.verbose, invocation.debug) == (2, True)


def test_no_options_mean_defaults():
    invocation = parse_invocation("smtpd", [])
    assert (invocation.config_dir, invocation.overrides, invocation.verbose) == (None, (), 0)


def test_program_without_common_options_keeps_its_own():
    parser = option_parser("sendmail", common=False)
    parser.add_argument("-o", dest="sendmail_option")
    invocation = parse_invocation("sendmail", ["-oi"], parser)
    assert invocation.options.sendmail_option == "i"
    assert invocation.overrides == ()


def test_unknown_option_is_a_usage_error_not_an_exit():
    with pytest.raises(UsageError, match="unrecognized arguments: --help"):
        parse_invocation("smtpd", ["--help"])


# --------------------------------------------------------------------------------------
# Lifetime
# --------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_daemon_exits_after_max_idle():
    clock = Clock()
    lifetime = Lifetime(max_idle=100, max_use=100, clock=clock)
    assert not lifetime.should_exit()
    assert lifetime.seconds_until_idle_exit() == 100
    clock.now += 99
    assert not lifetime.should_exit()
    clock.now += 1
    assert lifetime.should_exit()


def test_serving_a_client_restarts_the_idle_clock_and_blocks_exit():
    clock = Clock()
    lifetime = Lifetime(max_idle=10, max_use=100, clock=clock)
    lifetime.begin_use()
    clock.now += 50
    assert not lifetime.should_exit()
    assert lifetime.seconds_until_idle_exit() is None
    lifetime.end_use()
    assert not lifetime.should_exit()
    clock.now += 10
    assert lifetime.should_exit()


def test_after_max_use_it_exits_once_no_client_is_left():
    lifetime = Lifetime(max_idle=100, max_use=2, clock=Clock())
    with lifetime.use():
        pass
    lifetime.begin_use()
    assert lifetime.used_up()
    assert not lifetime.should_exit(), "never while a client is served"
    lifetime.end_use()
    assert lifetime.should_exit()
    assert lifetime.uses == 2


def test_end_without_begin_is_a_programming_error():
    with pytest.raises(RuntimeError, match="without begin_use"):
        Lifetime(1, 1).end_use()
