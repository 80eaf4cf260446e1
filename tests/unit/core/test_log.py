"""Tests for sdmail.core.log: journal entries, stderr lines, the delivery and reject lines."""

import array
import fcntl
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.log import (
    FATAL,
    PANIC,
    JournalHandler,
    ToolStderrHandler,
    format_delay,
    format_delivery,
    format_reject,
    log_traceback,
    msg_info,
    msg_warning,
    setup_logging,
)

REPO = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------------------
# A journald stand-in: a datagram socket, and a reader of the native protocol
# --------------------------------------------------------------------------------------
def parse_native(data: bytes) -> dict[str, list[bytes]]:
    """Fields of one native-protocol datagram, read the way journald documents it."""
    fields: dict[str, list[bytes]] = {}
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
            assert data[end + 9 + size : end + 10 + size] == b"\n", "binary field not ended"
            at = end + 10 + size
        fields.setdefault(name.decode("ascii"), []).append(value)
    return fields


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(5)

    def receive(self) -> dict[str, str]:
        """The next entry, one value per field, as text."""
        return {k: v[0].decode("utf-8") for k, v in self.receive_raw().items()}

    def receive_raw(self) -> dict[str, list[bytes]]:
        data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
        for level, kind, payload in ancillary:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            (fd,) = array.array("i", payload[:4])
            try:
                self.last_seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        return parse_native(data)

    def nothing_more(self) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        return False


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdlog-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
def journal(short_dir):
    listener = Journal(short_dir / "journal.sock")
    yield listener
    listener.sock.close()


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


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


# --------------------------------------------------------------------------------------
# Journal entries
# --------------------------------------------------------------------------------------
def test_entry_carries_postfix_identifier_mail_facility_and_component(journal):
    setup_logging("cleanup", "sdmail", journal_socket=journal.path)
    logging.getLogger("sdmail.cleanup").info("statistics: nothing to report")
    entry = journal.receive()
    assert entry["MESSAGE"] == "statistics: nothing to report"
    assert entry["SYSLOG_IDENTIFIER"] == "sdmail/cleanup"
    assert entry["SYSLOG_FACILITY"] == "2"
    assert entry["SYSLOG_PID"] == str(os.getpid())
    assert entry["PRIORITY"] == "6"
    assert entry["SDMAIL_COMPONENT"] == "cleanup"
    assert "SDMAIL_QUEUE_ID" not in entry
    assert entry["CODE_FILE"] == __file__
    assert int(entry["CODE_LINE"]) > 0


def test_syslog_name_sets_the_identifier_prefix(journal):
    setup_logging("smtpd", "sdmail/submission", journal_socket=journal.path)
    logging.getLogger("x").info("connect from localhost[127.0.0.1]")
    assert journal.receive()["SYSLOG_IDENTIFIER"] == "sdmail/submission/smtpd"


def test_line_about_a_message_starts_with_its_queue_id_and_has_the_field(journal):
    setup_logging("cleanup", journal_socket=journal.path)
    logging.getLogger("x").info("message-id=<1@x>", extra={"queue_id": "4XyZ1234abcd"})
    msg_info("4XyZ1234abce", "removed")
    first, second = journal.receive(), journal.receive()
    assert first["MESSAGE"] == "4XyZ1234abcd: message-id=<1@x>"
    assert first["SDMAIL_QUEUE_ID"] == "4XyZ1234abcd"
    assert second["MESSAGE"] == "4XyZ1234abce: removed"
    assert second["SDMAIL_QUEUE_ID"] == "4XyZ1234abce"
    assert second["CODE_FILE"] == __file__, "the helper reports its caller's place"


def test_text_that_already_names_the_queue_id_is_not_prefixed_twice(journal):
    setup_logging("qmgr", journal_socket=journal.path)
    logging.getLogger("x").info("ABC: removed", extra={"queue_id": "ABC"})
    assert journal.receive()["MESSAGE"] == "ABC: removed"


@pytest.mark.parametrize(
    ("level", "prefix", "priority"),
    [
        (logging.INFO, "", "6"),
        (logging.WARNING, "warning: ", "4"),
        (logging.ERROR, "error: ", "3"),
        (FATAL, "fatal: ", "2"),
        (PANIC, "panic: ", "2"),
    ],
)
def test_severity_shows_as_postfix_prefix_and_syslog_priority(journal, level, prefix, priority):
    setup_logging("local", journal_socket=journal.path)
    logging.getLogger("x").log(level, "something happened")
    entry = journal.receive()
    assert entry["MESSAGE"] == prefix + "something happened"
    assert entry["PRIORITY"] == priority


def test_warning_about_a_message_puts_the_queue_id_first(journal):
    setup_logging("cleanup", journal_socket=journal.path)
    msg_warning("ABC", "header Subject: spam from x[192.0.2.1]")
    assert journal.receive()["MESSAGE"] == "ABC: warning: header Subject: spam from x[192.0.2.1]"


def test_debug_lines_only_with_verbose(journal):
    setup_logging("smtpd", journal_socket=journal.path)
    logging.getLogger("x").debug("quiet")
    assert journal.nothing_more()
    setup_logging("smtpd", verbose=1, journal_socket=journal.path)
    logging.getLogger("x").debug("> 250 ok")
    entry = journal.receive()
    assert (entry["MESSAGE"], entry["PRIORITY"]) == ("> 250 ok", "7")


def test_setting_up_again_replaces_the_handler(journal):
    setup_logging("smtpd", "old", journal_socket=journal.path)
    setup_logging("smtpd", "new", journal_socket=journal.path)
    logging.getLogger("x").info("once")
    assert journal.receive()["SYSLOG_IDENTIFIER"] == "new/smtpd"
    assert journal.nothing_more()


def test_multi_line_message_uses_the_binary_field_form(journal):
    setup_logging("smtpd", journal_socket=journal.path)
    logging.getLogger("x").warning("first line\nsecond line with = sign\n")
    entry = journal.receive()
    assert entry["MESSAGE"] == "warning: first line\nsecond line with = sign\n"


def test_exception_traceback_is_part_of_the_journal_message(journal):
    setup_logging("qmgr", journal_socket=journal.path)
    try:
        raise RuntimeError("queue scan failed")
    except RuntimeError:
        logging.getLogger("x").exception("scan")
    message = journal.receive()["MESSAGE"]
    assert message.startswith("error: scan\nTraceback (most recent call last):")
    assert message.endswith("RuntimeError: queue scan failed")


def test_log_traceback_reaches_the_journal_at_debug_priority_even_when_not_verbose(journal):
    logger = setup_logging("qmgr", journal_socket=journal.path)
    try:
        raise KeyError("boom")
    except KeyError as exc:
        log_traceback(logger, exc)
    entry = journal.receive()
    assert entry["PRIORITY"] == "7"
    assert "Traceback (most recent call last):" in entry["MESSAGE"]
    assert "KeyError: 'boom'" in entry["MESSAGE"]


def test_undecodable_bytes_reach_the_journal_as_the_original_bytes(journal):
    setup_logging("smtpd", journal_socket=journal.path)
    helo = b"h\xffst".decode("utf-8", "surrogateescape")
    logging.getLogger("x").info("helo=<%s>", helo)
    assert journal.receive_raw()["MESSAGE"] == [b"helo=<h\xffst>"]


def test_bad_log_arguments_still_give_a_line(journal):
    handler = JournalHandler("sdmail/smtpd", "smtpd", socket_path=journal.path)
    # Apart from the root logger: pytest's own capture handler raises on such records.
    logger = logging.getLogger("test_log.bad_arguments")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("%d messages", "three")
    finally:
        logger.removeHandler(handler)
        handler.close()
    message = journal.receive()["MESSAGE"]
    assert message.startswith("warning: %d messages [log arguments do not fit:")


def test_entry_too_large_for_a_datagram_is_passed_as_a_sealed_memfd(journal):
    setup_logging("cleanup", journal_socket=journal.path)
    big = "x" * (4 << 20)
    logging.getLogger("x").info("%s", big, extra={"queue_id": "BIG"})
    entry = journal.receive()
    assert entry["MESSAGE"] == "BIG: " + big
    assert entry["SDMAIL_QUEUE_ID"] == "BIG"
    needed = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    assert journal.last_seals & needed == needed


def test_journal_that_goes_away_sends_lines_to_the_fallback(short_dir):
    journal = Journal(short_dir / "j.sock")
    lines = []

    class Collect:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    handler = JournalHandler(
        "sdmail/pickup", "pickup", socket_path=journal.path, fallback=Collect()
    )
    logger = logging.getLogger("test_log.fallback")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("first")
        assert journal.receive()["MESSAGE"] == "warning: first"
        journal.sock.close()
        journal.path.unlink()
        logger.warning("second")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert lines == [f"sdmail/pickup[{os.getpid()}]: warning: second\n"]


# --------------------------------------------------------------------------------------
# Without a journal, and tools
# --------------------------------------------------------------------------------------
def test_without_journal_a_daemon_logs_postfix_lines_to_stderr(short_dir):
    result = run_python(
        f"""
        import logging, os
        from sdmail.core.log import setup_logging, msg_info
        setup_logging("cleanup", journal_socket={str(short_dir / "none.sock")!r})
        msg_info("4XyZ1234abcd", "message-id=<1@example.org>")
        logging.getLogger("sdmail.cleanup").warning("two\\nlines")
        print(os.getpid())
        """
    )
    assert result.returncode == 0, result.stderr
    pid = result.stdout.strip()
    assert result.stderr == (
        f"sdmail/cleanup[{pid}]: 4XyZ1234abcd: message-id=<1@example.org>\n"
        f"sdmail/cleanup[{pid}]: warning: two\n"
        f"sdmail/cleanup[{pid}]: lines\n"
    )


def test_tool_writes_its_name_and_text_to_stderr_without_traceback(journal):
    result = run_python(
        f"""
        import logging
        from sdmail.core.log import setup_logging, msg_info, log_traceback
        logger = setup_logging("postsuper", tool=True, journal_socket={str(journal.path)!r})
        msg_info("ABC", "removed")
        try:
            raise OSError("disk on fire")
        except OSError as exc:
            logger.critical("queue file: %s", exc, exc_info=True)
            log_traceback(logger, exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "postsuper: ABC: removed\npostsuper: fatal: queue file: disk on fire\n"
    removed, fatal, traceback = journal.receive(), journal.receive(), journal.receive()
    assert removed["SYSLOG_IDENTIFIER"] == "sdmail/postsuper"
    assert removed["MESSAGE"] == "ABC: removed"
    assert fatal["MESSAGE"].startswith("fatal: queue file: disk on fire\nTraceback")
    assert traceback["PRIORITY"] == "7"
    assert "OSError: disk on fire" in traceback["MESSAGE"]


def test_tool_without_journal_writes_each_line_once(short_dir):
    result = run_python(
        f"""
        import logging
        from sdmail.core.log import setup_logging
        setup_logging("postmap", tool=True, journal_socket={str(short_dir / "none.sock")!r})
        logging.getLogger("x").error("open /etc/x: No such file or directory")
        """
    )
    assert result.stderr == "postmap: error: open /etc/x: No such file or directory\n"


def test_tool_handler_formats_as_program_colon_text():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
    assert ToolStderrHandler("postconf").format(record) == "postconf: warning: a b"


# --------------------------------------------------------------------------------------
# Delay numbers
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0"),
        (0.001, "0"),
        (0.0049, "0"),
        (0.005, "0.01"),
        (0.01, "0.01"),
        (0.0123, "0.01"),
        (0.1, "0.1"),
        (0.29, "0.29"),
        (0.5, "0.5"),
        (0.505, "0.51"),
        (0.995, "1"),
        (1, "1"),
        (1.23, "1.2"),
        (1.25, "1.3"),
        (9.94, "9.9"),
        (9.96, "10"),
        (12.3, "12"),
        (12.5, "13"),
        (99.4, "99"),
        (352.4, "352"),
        (86400.7, "86401"),
        (-3, "0"),
    ],
)
def test_delay_keeps_two_significant_digits_and_two_decimals(seconds, text):
    assert format_delay(seconds, 2) == text


@pytest.mark.parametrize(
    ("seconds", "limit", "text"),
    [
        (0.0123, 6, "0.012"),
        (0.000123, 6, "0.00012"),
        (0.0123, 0, "0"),
        (0.5, 0, "1"),
        (1.2, 1, "1.2"),
    ],
)
def test_delay_resolution_limit_caps_the_decimals(seconds, limit, text):
    assert format_delay(seconds, limit) == text


def test_delay_resolution_limit_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"not in 0\.\.6"):
        format_delay(1, 7)


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_delay_is_a_plain_number_close_to_the_value(seconds):
    text = format_delay(seconds, 2)
    assert re.fullmatch(r"\d+(\.\d{0,1}[1-9])?", text), text
    tolerance = 0.5 if seconds >= 9.95 else 0.05 if seconds >= 0.995 else 0.005
    assert abs(float(text) - seconds) <= tolerance + 1e-9


# --------------------------------------------------------------------------------------
# The delivery line and the reject line: golden strings
# --------------------------------------------------------------------------------------
def test_delivery_line_local_maildir():
    line = format_delivery(
        "5B1461640E6",
        to="bench@localhost",
        relay="local",
        delay_total=0.012,
        delays=(0.0071, 0.0002, 0, 0.0031),
        dsn="2.0.0",
        status="sent",
        text="delivered to maildir",
        resolution_limit=2,
    )
    assert line == (
        "5B1461640E6: to=<bench@localhost>, relay=local, delay=0.01, delays=0.01/0/0/0, "
        "dsn=2.0.0, status=sent (delivered to maildir)"
    )


def test_delivery_line_with_orig_to_and_connection_reuse():
    line = format_delivery(
        "4Vq2Lk0x3Hz1ABC",
        to="joe@example.com",
        orig_to="Postmaster@example.org",
        relay="mx.example.com[192.0.2.7]:25",
        conn_use=3,
        delay_total=352.2,
        delays=(350.01, 0.021, 1.24, 0.5),
        dsn="2.0.0",
        status="sent",
        text="250 2.0.0 Ok: queued as 9F3E21",
        resolution_limit=2,
    )
    assert line == (
        "4Vq2Lk0x3Hz1ABC: to=<joe@example.com>, orig_to=<Postmaster@example.org>, "
        "relay=mx.example.com[192.0.2.7]:25, conn_use=3, delay=352, delays=350/0.02/1.2/0.5, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F3E21)"
    )


def test_delivery_line_hides_orig_to_differing_only_in_case_and_single_use():
    line = format_delivery(
        "ABC",
        to="joe@example.com",
        orig_to="JOE@Example.COM",
        relay="none",
        conn_use=1,
        delay_total=12.3,
        delays=(12.3, 0, 0, 0),
        dsn="4.4.1",
        status="deferred",
        text="delivery temporarily suspended: connect to mx[192.0.2.7]:25: Connection refused",
        resolution_limit=2,
    )
    assert line == (
        "ABC: to=<joe@example.com>, relay=none, delay=12, delays=12/0/0/0, dsn=4.4.1, "
        "status=deferred (delivery temporarily suspended: connect to mx[192.0.2.7]:25: "
        "Connection refused)"
    )


def test_delivery_line_shows_null_address_and_masks_control_characters():
    line = format_delivery(
        "ABC",
        to="",
        relay="none",
        delay_total=1.2,
        delays=(1.2, 0, 0, 0),
        dsn="5.0.0",
        status="bounced",
        text="host said: 550 no\r\nsuch",
        resolution_limit=2,
    )
    assert line == (
        "ABC: to=<>, relay=none, delay=1.2, delays=1.2/0/0/0, dsn=5.0.0, "
        "status=bounced (host said: 550 no??such)"
    )


def test_reject_line_relay_denied():
    line = format_reject(
        "RCPT",
        "unknown[203.0.113.5]",
        "554 5.7.1 <u@other.example>: Relay access denied",
        sender="a@b.example",
        recipient="u@other.example",
        proto="ESMTP",
        helo="client.example",
    )
    assert line == (
        "NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <u@other.example>: "
        "Relay access denied; from=<a@b.example> to=<u@other.example> proto=ESMTP "
        "helo=<client.example>"
    )


def test_reject_line_with_queue_id_null_sender_and_unknown_fields():
    line = format_reject(
        "END-OF-MESSAGE",
        "x.example[192.0.2.1]",
        "552 5.3.4 Message size exceeds fixed limit",
        queue_id="4Vq2Lk0x3Hz1ABC",
        sender="",
        proto="SMTP",
    )
    assert line == (
        "4Vq2Lk0x3Hz1ABC: reject: END-OF-MESSAGE from x.example[192.0.2.1]: "
        "552 5.3.4 Message size exceeds fixed limit; from=<> proto=SMTP"
    )


def test_reject_line_other_actions_and_hostile_helo():
    line = format_reject(
        "CONNECT",
        "bad[192.0.2.9]",
        "450 4.7.1 Client host rejected",
        action="reject_warning",
        helo="evil\nsdmail/qmgr[1]: fake",
    )
    assert line == (
        "NOQUEUE: reject_warning: CONNECT from bad[192.0.2.9]: 450 4.7.1 Client host rejected;"
        " helo=<evil?sdmail/qmgr[1]: fake>"
    )
