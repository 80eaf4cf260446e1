"""Logging: Postfix-shaped lines in the systemd journal, and the one delivery-status line.

Every sdmail program logs through the stdlib `logging` module; `setup_logging` installs
the one handler that turns a record into a journal entry. Entries are written with
journald's native protocol (one datagram of `KEY=value` fields to
/run/systemd/journal/socket) so that each carries structured fields besides its text:
SYSLOG_IDENTIFIER `sdmail/cleanup` (`$syslog_name/<program>`), SYSLOG_FACILITY 2 (mail,
so rsyslog's mail.log gets the line), SYSLOG_PID, PRIORITY, SDMAIL_COMPONENT and, for a
line about one message, SDMAIL_QUEUE_ID (`journalctl SDMAIL_QUEUE_ID=...` follows one
message through the system). A record is about a message when it is logged with
`extra={"queue_id": qid}` or through `msg_info` / `msg_warning`; its text then starts with
`QUEUEID: `. Severity shows inside the text as Postfix shows it: nothing for info,
`warning: `, `error: `, `fatal: ` (CRITICAL) and `panic: ` (PANIC).

Where no journal socket answers (a test, a container) a daemon's lines go to stderr as
`sdmail/cleanup[PID]: text`, one physical line each, so a line break inside a logged value
cannot forge a line of another program. A command-line tool (`tool=True`) writes its lines
to stderr as Postfix's tools do (`postsuper: fatal: ...`), never with a traceback, and to
the journal when one is reachable.

The delivery line (`QUEUEID: to=<...>, relay=..., delay=..., delays=a/b/c/d, dsn=X.Y.Z,
status=S (text)`) and the smtpd reject line (`NOQUEUE: reject: RCPT from ...`) are built
only here, in exactly the field order log analysers (pflogsumm) key on.

Failure modes: logging never raises into the caller. A datagram too large for the socket
is passed to journald as a sealed memfd (SCM_RIGHTS); if that fails too, the text is
truncated with a note. A journal that stops answering sends the line to stderr instead; a
stderr that cannot be written loses the line silently (there is nowhere left to say so).
`format_delay` raises ValueError for a resolution limit outside 0..6.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from sdmail.core.params import PARAMS

JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
LOGGER_NAME: Final = "sdmail"
SYSLOG_FACILITY_MAIL: Final = 2

FATAL: Final = logging.CRITICAL
PANIC: Final = logging.CRITICAL + 10
logging.addLevelName(FATAL, "FATAL")
logging.addLevelName(PANIC, "PANIC")

# The text journald gets when a message had to be cut short: enough to see what it was.
TRUNCATED_MESSAGE_BYTES: Final = 48 * 1024

# Postfix's log_adhoc keeps two significant digits of each delay.
_DELAY_SIGNIFICANT_DIGITS: Final = 2
_MICROSECONDS: Final = 1_000_000
_POWERS_OF_TEN: Final = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)

_PRIORITY_BY_LEVEL: Final = (  # (lowest level, syslog priority), highest first
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_PREFIX_BY_LEVEL: Final = (
    (PANIC, "panic: "),
    (FATAL, "fatal: "),
    (logging.ERROR, "error: "),
    (logging.WARNING, "warning: "),
)


# --------------------------------------------------------------------------------------
# Record -> text
# --------------------------------------------------------------------------------------
def syslog_priority(level: int) -> int:
    """The syslog priority (0..7) journald stores for a logging level."""
    for lowest, priority in _PRIORITY_BY_LEVEL:
        if level >= lowest:
            return priority
    return 7


def severity_prefix(level: int) -> str:
    """Postfix's severity word inside the text: '' for info and debug, else 'warning: ' etc."""
    for lowest, prefix in _PREFIX_BY_LEVEL:
        if level >= lowest:
            return prefix
    return ""


def queue_id_of(record: logging.LogRecord) -> str | None:
    queue_id = getattr(record, "queue_id", None)
    return str(queue_id) if queue_id else None


def line_text(record: logging.LogRecord, *, with_traceback: bool) -> str:
    """The text of a record as Postfix would log it: `[QUEUEID: ][severity: ]message`."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError) as exc:
        # A bad format call must still leave a line, and never a logging traceback.
        message = f"{record.msg!s} [log arguments do not fit: {exc}]"
    queue_id = queue_id_of(record)
    lead = ""
    if queue_id is not None:
        lead = f"{queue_id}: "
        message = message.removeprefix(lead)
    text = lead + severity_prefix(record.levelno) + message
    if with_traceback and record.exc_info and record.exc_info[0] is not None:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text


# --------------------------------------------------------------------------------------
# journald's native protocol
# --------------------------------------------------------------------------------------
def encode_journal_fields(fields: Sequence[tuple[str, str]]) -> bytes:
    """One native-protocol datagram: `KEY=value\\n`, or the length-prefixed form for values
    that hold a line break."""
    parts: list[bytes] = []
    for name, value in fields:
        data = _journal_bytes(value)
        key = name.encode("ascii")
        if b"\n" in data:
            parts.append(key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key + b"=" + data + b"\n")
    return b"".join(parts)


def _journal_bytes(value: str) -> bytes:
    # Text read from the network may carry undecodable bytes as surrogates; journald
    # stores non-UTF-8 values as they are, so give it the original bytes.
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace")


def _send_as_memfd(sock: socket.socket, path: str, payload: bytes) -> None:
    """journald's way for entries too large for a datagram: a sealed memfd, passed as the
    only content of an empty datagram."""
    fd = os.memfd_create("sdmail-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        rights = array.array("i", [fd]).tobytes()
        sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, path)
    finally:
        os.close(fd)


def _truncated(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    shortened: list[tuple[str, str]] = []
    for name, value in fields:
        data = _journal_bytes(value)
        if name == "MESSAGE" and len(data) > TRUNCATED_MESSAGE_BYTES:
            head = data[:TRUNCATED_MESSAGE_BYTES].decode("utf-8", "ignore")
            shortened.append((name, f"{head}... [message truncated from {len(data)} bytes]"))
        else:
            shortened.append((name, value))
    return shortened


class JournalHandler(logging.Handler):
    """Writes records to journald (native protocol); stderr lines when it does not answer."""

    def __init__(
        self,
        identifier: str,
        component: str,
        *,
        socket_path: str | Path = JOURNAL_SOCKET,
        fallback: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.identifier = identifier
        self.component = component
        self.socket_path = str(socket_path)
        self.fallback = fallback
        self._socket: socket.socket | None = None

    def journal_fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        fields = [
            ("MESSAGE", line_text(record, with_traceback=True)),
            ("PRIORITY", str(syslog_priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("SYSLOG_FACILITY", str(SYSLOG_FACILITY_MAIL)),
            ("SYSLOG_PID", str(record.process or os.getpid())),
            ("SDMAIL_COMPONENT", self.component),
        ]
        queue_id = queue_id_of(record)
        if queue_id is not None:
            fields.append(("SDMAIL_QUEUE_ID", queue_id))
        if record.pathname and record.lineno:
            fields += [("CODE_FILE", record.pathname), ("CODE_LINE", str(record.lineno))]
        if record.funcName:
            fields.append(("CODE_FUNC", record.funcName))
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(self.journal_fields(record))
        except OSError:
            self._write_fallback(record)
        except Exception:
            self.handleError(record)

    def _send(self, fields: list[tuple[str, str]]) -> None:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        payload = encode_journal_fields(fields)
        try:
            self._socket.sendto(payload, self.socket_path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            try:
                _send_as_memfd(self._socket, self.socket_path, payload)
            except OSError:
                self._socket.sendto(encode_journal_fields(_truncated(fields)), self.socket_path)

    def _write_fallback(self, record: logging.LogRecord) -> None:
        if self.fallback is None:
            return
        lead = f"{self.identifier}[{record.process or os.getpid()}]: "
        text = line_text(record, with_traceback=True)
        try:
            self.fallback.write("".join(lead + line + "\n" for line in text.split("\n")))
            self.fallback.flush()
        except (OSError, ValueError):
            pass

    def handleError(self, record: logging.LogRecord) -> None:
        # The default prints a traceback to stderr: never that on a user's terminal.
        pass

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        super().close()


class ToolStderrHandler(logging.StreamHandler[TextIO]):
    """A command-line tool's lines on its stderr, `postsuper: fatal: text`, no tracebacks."""

    def __init__(self, program: str, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.program}: {line_text(record, with_traceback=False)}"

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "journal_only", False) and bool(super().filter(record))

    def handleError(self, record: logging.LogRecord) -> None:
        pass


# --------------------------------------------------------------------------------------
# Setting it up
# --------------------------------------------------------------------------------------
def setup_logging(
    program: str,
    syslog_name: str = PARAMS["syslog_name"].default,
    verbose: int = 0,
    *,
    tool: bool = False,
    journal_socket: str | Path = JOURNAL_SOCKET,
) -> logging.Logger:
    """Route every log record of this process to the journal as `syslog_name/program`.

    Replaces what an earlier call installed (a reload may change syslog_name or -v).
    VERBOSE > 0 logs debug records too. A daemon's lines go to stderr when the journal
    does not answer; a TOOL's lines always go to stderr as `program: text`. Returns the
    `sdmail` logger.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, (JournalHandler, ToolStderrHandler))]:
        root.removeHandler(old)
        old.close()
    identifier = f"{syslog_name}/{program}"
    journal = JournalHandler(
        identifier,
        program,
        socket_path=journal_socket,
        fallback=None if tool else sys.stderr,
    )
    root.addHandler(journal)
    if tool:
        stderr = ToolStderrHandler(program)
        stderr.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
        root.addHandler(stderr)
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    return logging.getLogger(LOGGER_NAME)


def log_traceback(logger: logging.Logger, exc: BaseException) -> None:
    """Put EXC's traceback in the journal at debug priority, whatever the log level, and
    never on a tool's stderr."""
    record = logger.makeRecord(
        logger.name,
        logging.DEBUG,
        "",
        0,
        "traceback of the error above",
        (),
        (type(exc), exc, exc.__traceback__),
        func="log_traceback",
        extra={"journal_only": True},
    )
    # Logger.handle skips the level check that would drop a debug record at verbose 0.
    logger.handle(record)


def msg_info(queue_id: str, text: str) -> None:
    """Log TEXT about the message QUEUE_ID at info: `QUEUEID: text` with its journal field."""
    logging.getLogger(LOGGER_NAME).info(text, extra={"queue_id": queue_id}, stacklevel=2)


def msg_warning(queue_id: str, text: str) -> None:
    """Log TEXT about the message QUEUE_ID as a warning: `QUEUEID: warning: text`."""
    logging.getLogger(LOGGER_NAME).warning(text, extra={"queue_id": queue_id}, stacklevel=2)


# --------------------------------------------------------------------------------------
# The delivery-status line (Postfix's log_adhoc) and the reject line
# --------------------------------------------------------------------------------------
def format_delay(seconds: float, resolution_limit: int) -> str:
    """A delay as Postfix logs it: two significant digits, at most RESOLUTION_LIMIT
    decimals, no trailing zeros, whole seconds from 10 s up (`0.01`, `1.2`, `12`, `352`).
    A negative delay (a clock that jumped back) shows as 0."""
    if not 0 <= resolution_limit <= 6:
        raise ValueError(f"delay resolution limit {resolution_limit} is not in 0..6")
    total = max(0, round(seconds * _MICROSECONDS))
    whole, micro = divmod(total, _MICROSECONDS)
    resolution = _delay_resolution(whole, micro, resolution_limit)
    if resolution > 1:  # round half up at the resolution; digits below it are dropped
        whole, micro = divmod(whole * _MICROSECONDS + micro + resolution // 2, _MICROSECONDS)
    text = str(whole)
    if micro >= resolution:
        digits = f"{micro:06d}"[: 6 - len(str(resolution)) + 1]
        text += "." + digits.rstrip("0")
    return text


def _delay_resolution(whole: int, micro: int, resolution_limit: int) -> int:
    """The smallest step (in microseconds) worth printing for this value."""
    resolution = _MICROSECONDS // _POWERS_OF_TEN[resolution_limit]
    if resolution == _MICROSECONDS:
        return resolution
    width = _POWERS_OF_TEN[_DELAY_SIGNIFICANT_DIGITS]
    if whole > 0:
        magnitude = 1
        while whole >= magnitude and magnitude <= width // 10:
            magnitude *= 10
        return (_MICROSECONDS // width) * magnitude
    while micro >= width * resolution:
        resolution *= 10
    return resolution


def format_delivery(
    queue_id: str,
    *,
    to: str,
    orig_to: str | None = None,
    relay: str,
    conn_use: int = 1,
    delay_total: float,
    delays: tuple[float, float, float, float],
    dsn: str,
    status: str,
    text: str,
    resolution_limit: int,
) -> str:
    """The one delivery-status line, field for field Postfix's:

    `QUEUEID: to=<rcpt>[, orig_to=<orig>], relay=R[, conn_use=N], delay=D, delays=a/b/c/d,
    dsn=X.Y.Z, status=S (text)`

    TO and ORIG_TO are addresses in their logged (external, quoted) form, "" for the null
    address; ORIG_TO is shown only when it differs from TO ignoring case; CONN_USE only when
    the connection carried more than one delivery. DELAYS are the seconds before qmgr, in
    qmgr, in connection set-up and in transmission; RESOLUTION_LIMIT is
    delay_logging_resolution_limit. Control characters in the texts show as `?`.
    """
    parts = [f"{_printable(queue_id)}: to=<{_printable(to)}>"]
    if orig_to and orig_to.casefold() != to.casefold():
        parts.append(f"orig_to=<{_printable(orig_to)}>")
    parts.append(f"relay={_printable(relay)}")
    if conn_use > 1:
        parts.append(f"conn_use={conn_use}")
    parts.append(f"delay={format_delay(delay_total, resolution_limit)}")
    parts.append("delays=" + "/".join(format_delay(d, resolution_limit) for d in delays))
    parts.append(f"dsn={_printable(dsn)}")
    parts.append(f"status={_printable(status)} ({_printable(text)})")
    return ", ".join(parts)


def format_reject(
    stage: str,
    client: str,
    reply: str,
    *,
    queue_id: str | None = None,
    action: str = "reject",
    sender: str | None = None,
    recipient: str | None = None,
    proto: str | None = None,
    helo: str | None = None,
) -> str:
    """smtpd's line for a refused (or held, discarded, ...) command, Postfix's shape:

    `NOQUEUE: reject: RCPT from host[addr]: 554 5.7.1 <u@x>: Relay access denied;
    from=<a@b> to=<u@x> proto=ESMTP helo=<h>`

    STAGE is the SMTP stage (`CONNECT`, `EHLO`, `MAIL`, `RCPT`, `DATA`, `END-OF-MESSAGE`,
    ...), CLIENT `name[addr]`, REPLY the reply sent. Each of SENDER ("" is the null sender,
    logged `from=<>`), RECIPIENT, PROTO and HELO is shown only when known (not None).
    Control characters in the texts show as `?`.
    """
    line = (
        f"{_printable(queue_id or 'NOQUEUE')}: {_printable(action)}: {_printable(stage)} "
        f"from {_printable(client)}: {_printable(reply)};"
    )
    if sender is not None:
        line += f" from=<{_printable(sender)}>"
    if recipient is not None:
        line += f" to=<{_printable(recipient)}>"
    if proto is not None:
        line += f" proto={_printable(proto)}"
    if helo is not None:
        line += f" helo=<{_printable(helo)}>"
    return line


def _printable(text: str) -> str:
    # Postfix's printable(): a client-chosen value must not break or fake a log line.
    return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
