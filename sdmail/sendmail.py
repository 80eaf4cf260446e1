"""sendmail, mailq, newaliases: Postfix's Sendmail-compatible command line.

USAGE
    sendmail [options] [recipient ...]      read a message on stdin and queue it
    sendmail -bs                            SMTP on stdin/stdout, each message queued
    mailq, sendmail -bp                     the queue listing (postqueue -p)
    sendmail -q | -qRsite | -qIqueueid      flush the queue (postqueue -f | -s site | -i id)
    newaliases, sendmail -bi | -I           rebuild $alias_database (postalias), -oA to name it
    sendmail -bd                            start the mail system (systemctl start sdmail)

WHAT IT DOES.  The default mode reads the message from stdin as Postfix's
sendmail does: a leading `From ` line (and `>From `) is skipped, CRLF becomes LF
(`sendmail_fix_line_endings`), and without -i/-oi a line with a single `.` ends
the input.  Recipients are the arguments (each parsed as an address list, so
`"Joe <joe@example.org>, ann"` is two), plus with -t those of To:, Cc: and Bcc:
(cleanup extracts them).  The message goes to the postdrop service
(`$socket_directory/postdrop`) in one frame (core/mail_stream), which learns the
user from the kernel, writes it to maildrop/ and answers; sendmail exits 0 only
after that answer.  The envelope sender is the user's login name unless -f/-r
(`-f ''` and `-f '<>'` are the null sender), checked by postdrop against
local_login_sender_maps; the full name is -F, else $NAME, else (postdrop) GECOS.
DSN: -N never|success,delay,failure, -R full|hdrs, -V envid; -B 7BIT|8BITMIME;
-G gateway submission (remote rewriting).  `-C dir` (or `-C dir/main.cf`) reads
another configuration (only the socket's place depends on it: postdrop applies
its own).  Accepted and ignored as in Postfix: -Am -Ac -c -e x -h n -L label -m
-n -O x=y -o7 -o8 -om -oX... -p x -U -x -X file -bh -bH -qNNm.  -bv (verify the
recipients, deliver nothing, collect no message) and a single -v (deliver, and
report the first attempt) mark the message with trace flags (core/records.TraceFlag)
and print `Mail Delivery Status Report will be mailed to <sender>.`; qmgr and
the agents do the rest.  Not available yet (warned about, never silently
wrong): -XV VERP (the mail is sent with one envelope sender).

The queue listing, the flush requests and newaliases replace this process
(`os.execv`) with `python3 -m sdmail.postqueue ...` / `python3 -m sdmail.postalias
TABLES`, as Postfix's sendmail execs postqueue and postalias: sendmail imports no
other program.  How it was invoked decides the default mode: a program name
(argv[0]) of `mailq` lists the queue, `newaliases` rebuilds the aliases; options
still win (`newaliases -bp` lists the queue).

EXIT STATUS (sysexits): 0 queued; 64 usage (bad option, no recipients: `sendmail:
fatal: Recipient addresses must be specified on the command line or via the -t
option`); 65 a message or address postdrop refuses as malformed; 69 refused for
good otherwise, or a mode that is not available; 75 the postdrop service cannot
be reached or answers 4xx (mail system down, disk full): try again later; 77 the
user may not submit (authorized_submit_users, local_login_sender_maps); 78 a bad
main.cf.  Every error is one line `sendmail: fatal: ...` on stderr (and in the
journal), never a traceback.

OWNS the command line and the `-bs` dialogue, nothing on disk.  Runs as any user
with no privilege: whatever it sends, postdrop decides.

IMPORTS are kept few because sendmail runs once per message (cron, scripts,
MUAs): the configuration, the submission client and nothing else on the common
path; address parsing only for an argument that is not a plain `user@domain`,
logging only when there is something to report.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from sdmail.core.config import ConfigError, bind, load_config, split_list
from sdmail.core.records import Notify, TraceFlag

if TYPE_CHECKING:
    import logging

SENDMAIL, MAILQ, NEWALIASES = "sendmail", "mailq", "newaliases"
POSTDROP_SOCKET = "postdrop"
CONFIG_DIR_ENV = "SDMAIL_CONFIG_DIR"
MAIN_CF = "main.cf"

# The modes of operation (Postfix's SM_MODE_*).
ENQUEUE, MAILQ_MODE, NEWALIAS, FLUSHQ, DAEMON, SMTP, IGNORE = (
    "enqueue",
    "mailq",
    "newaliases",
    "flushq",
    "daemon",
    "smtp",
    "ignore",
)

# getopt letters that take an argument, and those that do not (Postfix's GETOPT_LIST).
_WITH_ARGUMENT = frozenset("ABCFLNORVXbefhopqr")
_WITHOUT_ARGUMENT = frozenset("GIUcimntvx")
_NOTIFY_WORDS = {
    "NEVER": Notify.NEVER,
    "SUCCESS": Notify.SUCCESS,
    "FAILURE": Notify.FAILURE,
    "DELAY": Notify.DELAY,
}
# An argument whose internal form is itself: no address parser needed for it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*(?:@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?")


class SendmailExit(Exception):
    """Stop with STATUS after saying TEXT (`program: fatal: text`); TEXT empty says nothing."""

    def __init__(self, status: int, text: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def fatal(status: int, text: str) -> NoReturn:
    raise SendmailExit(status, text)


# --------------------------------------------------------------------------------------
# Saying things: stderr and the journal, set up only when there is something to say
# --------------------------------------------------------------------------------------
class Reporter:
    """`sendmail: warning: ...` and `sendmail: fatal: ...` on stderr and in the journal."""

    def __init__(self, program: str) -> None:
        self.program = program
        self._logger: logging.Logger | None = None

    def _log(self) -> logging.Logger:
        if self._logger is None:
            from sdmail.core.log import setup_logging  # noqa: PLC0415 (only when needed)

            self._logger = setup_logging(self.program, tool=True)
        return self._logger

    def warning(self, text: str) -> None:
        self._log().warning("%s", text)

    def fatal(self, text: str) -> None:
        self._log().critical("%s", text)

    def traceback(self, exc: BaseException) -> None:
        from sdmail.core.log import log_traceback  # noqa: PLC0415

        log_traceback(self._log(), exc)


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------
@dataclass
class Options:
    """What the command line asked for, after Postfix's rules."""

    mode: str = ENQUEUE
    sender: str | None = None  # -f / -r as typed
    full_name: str | None = None  # -F
    extract_recipients: bool = False  # -t
    dot_ends_input: bool = True  # cleared by -i / -oi
    notify: Notify = field(default_factory=lambda: Notify(0))
    ret: str | None = None
    envid: str | None = None
    body_type: str | None = None
    gateway: bool = False  # -G
    verify: bool = False  # -bv
    verbose: int = 0
    verp: bool = False
    config_dir: str | None = None  # -C
    alias_database: str | None = None  # -oA
    site_to_flush: str | None = None  # -qR
    id_to_flush: str | None = None  # -qI
    queue_interval: str | None = None  # -q30m, ignored
    recipients: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_command_line(argv: Sequence[str], program: str) -> Options:
    """ARGV as Postfix's sendmail reads it; SendmailExit(64) for a usage error."""
    opts = Options(mode={MAILQ: MAILQ_MODE, NEWALIASES: NEWALIAS}.get(program, ENQUEUE))
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "-q":  # not getopt-compatible: -q alone flushes
            if opts.mode == DAEMON:
                opts.warnings.append("ignoring -q option in daemon mode")
            else:
                opts.mode = FLUSHQ
            index += 1
            continue
        arg = _renamed_verp_option(arg, args, index, opts)
        if arg == "-XV":
            opts.verp = True
            index += 1
            continue
        position = 1
        index += 1
        while position < len(arg):
            letter = arg[position]
            position += 1
            if letter in _WITHOUT_ARGUMENT:
                _apply_flag(opts, letter)
                continue
            if letter not in _WITH_ARGUMENT:
                fatal(os.EX_USAGE, f"invalid option -- '{letter}'; usage: {program} [options]")
            if position < len(arg):
                value = arg[position:]
            elif index < len(args):
                value = args[index]
                index += 1
            else:
                fatal(
                    os.EX_USAGE,
                    f"option requires an argument -- '{letter}'; usage: {program} [options]",
                )
            _apply_option(opts, letter, value)
            break
    opts.recipients = args[index:]
    _check_conflicts(opts)
    return opts


def _renamed_verp_option(arg: str, args: list[str], index: int, opts: Options) -> str:
    """Postfix 2.2's -V / -Vxy for VERP are -XV / -XVxy since 2.3 (with a warning)."""
    if arg == "-V" and index + 1 < len(args) and len(args[index + 1]) == 2:
        opts.warnings.append("option -V is deprecated with Postfix 2.3; specify -XV instead")
        del args[index + 1]
        return "-XV"
    if arg.startswith("-V") and len(arg) == 4:
        opts.warnings.append(
            f"option {arg} is deprecated with Postfix 2.3; specify -X{arg[1:]} instead"
        )
        return "-X" + arg[1:]
    return arg


def _apply_flag(opts: Options, letter: str) -> None:
    if letter == "G":
        opts.gateway = True
    elif letter == "I":
        opts.mode = NEWALIAS
    elif letter == "i":
        opts.dot_ends_input = False
    elif letter == "t":
        opts.extract_recipients = True
    elif letter == "v":
        opts.verbose += 1
    # -U -c -m -n -x: accepted and ignored, as in Postfix.


def _apply_option(opts: Options, letter: str, value: str) -> None:
    if letter == "B":
        if value not in ("8BITMIME", "7BIT"):
            fatal(os.EX_USAGE, "-B option needs 8BITMIME or 7BIT")
        opts.body_type = value
    elif letter == "C":
        opts.config_dir = value
    elif letter == "F":
        opts.full_name = value
    elif letter in "fr":
        opts.sender = value
    elif letter == "N":
        notify = dsn_notify(value)
        if notify is None:
            opts.warnings.append("bad -N option value -- ignored")
        else:
            opts.notify = notify
    elif letter == "R":
        if value.upper() in ("FULL", "HDRS"):
            opts.ret = value.upper()
        else:
            opts.warnings.append("bad -R option value -- ignored")
    elif letter == "V":
        if len(value) > 100:
            opts.warnings.append("too long -V option value -- ignored")
        elif not (value.isascii() and value.isprintable()):
            opts.warnings.append("bad syntax in -V option value -- ignored")
        else:
            opts.envid = value
    elif letter == "X":
        opts.verp = opts.verp or value.startswith("V")  # -X logfile is ignored
    elif letter == "b":
        _apply_mode(opts, value)
    elif letter == "o":
        _apply_o_option(opts, value)
    elif letter == "q":
        _apply_q_option(opts, value)
    # -A -L -O -e -h -p: accepted and ignored, as in Postfix.


def _apply_mode(opts: Options, value: str) -> None:
    choice = value[:1]
    if choice in ("d", "l"):
        if opts.mode == FLUSHQ:
            opts.warnings.append("ignoring -q option in daemon mode")
        opts.mode = DAEMON
    elif choice in ("h", "H"):
        opts.mode = IGNORE
    elif choice == "i":
        opts.mode = NEWALIAS
    elif choice == "m":
        opts.mode = ENQUEUE
    elif choice == "p":
        opts.mode = MAILQ_MODE
    elif choice == "s":
        opts.mode = SMTP
    elif choice == "v":
        opts.verify = True
    else:
        fatal(os.EX_USAGE, f"unsupported: -b{choice}")


def _apply_o_option(opts: Options, value: str) -> None:
    if value.startswith("A"):
        if len(value) == 1:
            fatal(os.EX_USAGE, "-oA requires pathname")
        opts.alias_database = value[1:]
    elif value.startswith("i"):
        opts.dot_ends_input = False
    # -o7 -o8 -om and every other -oX: ignored, as in Postfix.


def _apply_q_option(opts: Options, value: str) -> None:
    if value[:1].isdigit():
        opts.queue_interval = value
    elif value.startswith("R"):
        if len(value) == 1:
            fatal(os.EX_USAGE, "specify: -qRsitename")
        opts.site_to_flush = value[1:]
    elif value.startswith("I"):
        if len(value) == 1:
            fatal(os.EX_USAGE, "specify: -qIqueueid")
        opts.id_to_flush = value[1:]
    else:
        fatal(os.EX_USAGE, f"-q{value[:1]} is not implemented")


def _check_conflicts(opts: Options) -> None:
    if opts.extract_recipients and opts.mode != ENQUEUE:
        fatal(os.EX_USAGE, "-t can be used only in delivery mode")
    if opts.site_to_flush is not None and opts.mode != ENQUEUE:
        fatal(os.EX_USAGE, "-qR can be used only in delivery mode")
    if opts.id_to_flush is not None and opts.mode != ENQUEUE:
        fatal(os.EX_USAGE, "-qI can be used only in delivery mode")
    if opts.verify:
        if opts.extract_recipients:
            fatal(os.EX_USAGE, "-t option cannot be used with -bv")
        if opts.notify:
            fatal(os.EX_USAGE, "-N option cannot be used with -bv")
        if opts.ret is not None:
            fatal(os.EX_USAGE, "-R option cannot be used with -bv")
        if opts.verbose == 1:
            fatal(os.EX_USAGE, "-v option cannot be used with -bv")


def dsn_notify(text: str) -> Notify | None:
    """`never` or a list of success, delay, failure (any case); None when malformed."""
    words = [w for w in re.split(r"[\s,]+", text.strip()) if w]
    flags = Notify(0)
    for word in words:
        flag = _NOTIFY_WORDS.get(word.upper())
        if flag is None:
            return None
        flags |= flag
    if not flags or (Notify.NEVER in flags and flags != Notify.NEVER):
        return None
    return flags


# --------------------------------------------------------------------------------------
# Addresses from the command line
# --------------------------------------------------------------------------------------
def addresses_in(text: str) -> list[str]:
    """The internal forms of the addresses in TEXT, an RFC 5322 address list as MUAs pass
    them (`Joe <joe@x>, ann`); AddressError when it does not parse."""
    if _PLAIN_ADDRESS.fullmatch(text):
        return [text]
    from sdmail.core.address import parse_header_addresses  # noqa: PLC0415 (rarely needed)

    return [found.address for found in parse_header_addresses(text)]


def envelope_sender(text: str, warnings: list[str]) -> str:
    """The internal form of -f/-r TEXT: "" for '' and '<>', else its first address."""
    if text.strip() in ("", "<>"):
        return ""
    try:
        found = addresses_in(text)
    except ValueError as exc:
        fatal(os.EX_USAGE, f"-f option specified malformed sender: {text}: {exc}")
    if len(found) > 1:
        warnings.append(f"-f option specified malformed sender: {text}")
    return found[0] if found else ""


def command_line_recipients(args: Sequence[str]) -> list[str]:
    """Every address of every recipient argument, in internal form."""
    recipients: list[str] = []
    for arg in args:
        try:
            found = addresses_in(arg)
        except ValueError as exc:
            fatal(os.EX_USAGE, f"bad recipient address: {arg}: {exc}")
        if not found:
            fatal(os.EX_USAGE, f"no recipient address in argument: {arg!r}")
        recipients.extend(found)
    return recipients


# --------------------------------------------------------------------------------------
# The message on stdin
# --------------------------------------------------------------------------------------
def message_content(data: bytes, *, dot_ends_input: bool, fix_line_endings: str) -> bytes:
    """The message as Postfix's sendmail stores it: leading `From `/`>From ` lines
    dropped, CRs at line ends removed per FIX_LINE_ENDINGS (always; strict: as the first
    line does; never), and with DOT_ENDS_INPUT everything from a line `.` on dropped."""
    strip_cr = _strips_cr(data, fix_line_endings)
    if _needs_no_change(data, dot_ends_input, strip_cr):
        return data
    lines = data.split(b"\n")
    last_terminated = lines[-1] == b""
    if last_terminated:
        lines.pop()
    kept: list[bytes] = []
    at_start = True
    for raw in lines:
        if at_start and raw.lstrip(b">").startswith(b"From "):
            continue
        at_start = False
        line = raw.rstrip(b"\r") if strip_cr else raw
        if dot_ends_input and line == b".":
            return b"".join(k + b"\n" for k in kept)
        kept.append(line)
    text = b"\n".join(kept)
    return text + b"\n" if kept and last_terminated else text


def _strips_cr(data: bytes | bytearray, fix_line_endings: str) -> bool:
    if fix_line_endings == "always":
        return True
    if fix_line_endings == "strict":
        return data.split(b"\n", 1)[0].endswith(b"\r")
    return False


def _needs_no_change(data: bytes, dot_ends_input: bool, strip_cr: bool) -> bool:
    """The common case, decided without looking at every line."""
    if strip_cr and (b"\r\n" in data or data.endswith(b"\r")):
        return False
    if dot_ends_input and _END_OF_INPUT[strip_cr].search(data):
        return False
    return not data.lstrip(b">").startswith(b"From ")


# A line `.` (with CRs when they are stripped), ending the input without -i.
_END_OF_INPUT = {
    True: re.compile(rb"(?:^|\n)\.\r*(?:\n|\Z)"),
    False: re.compile(rb"(?:^|\n)\.(?:\n|\Z)"),
}
_CHUNK = 1 << 16


def read_message(stream: BinaryIO, *, dot_ends_input: bool, fix_line_endings: str) -> bytes:
    """The message from STREAM (see message_content).  Without -i reading stops at the
    line `.`, as a user at a terminal expects, and what follows it is never read."""
    try:
        data = _read_to_end_line(stream, fix_line_endings) if dot_ends_input else stream.read()
    except OSError as exc:
        fatal(os.EX_DATAERR, f"error reading input: {exc.strerror or exc}")
    return message_content(data, dot_ends_input=dot_ends_input, fix_line_endings=fix_line_endings)


def _read_to_end_line(stream: BinaryIO, fix_line_endings: str) -> bytes:
    data = bytearray()
    while True:
        chunk = stream.read1(_CHUNK) if hasattr(stream, "read1") else stream.read(_CHUNK)
        if not chunk:
            return bytes(data)
        # From the start of the last line read so far: it may be the `.` line.
        searched_to = max(0, data.rfind(b"\n"))
        data += chunk
        if fix_line_endings == "strict" and b"\n" not in data:
            continue  # the first line decides, and it is not complete yet
        end_line = _END_OF_INPUT[_strips_cr(data, fix_line_endings)]
        # Only a complete line counts here: a `.` at the end of a chunk may go on.
        match = end_line.search(data, searched_to)
        while match is not None and not match.group().endswith(b"\n"):
            match = end_line.search(data, match.end())
        if match is not None:
            return bytes(data)


# --------------------------------------------------------------------------------------
# The configuration
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendmailSettings:
    """The main.cf parameters sendmail reads."""

    socket_directory: str
    alias_database: tuple[str, ...]
    sendmail_fix_line_endings: str
    ipc_timeout: int


def configuration_directory(opts: Options) -> str | None:
    """-C DIR or -C DIR/main.cf; exported so that postqueue and postalias read it too."""
    if opts.config_dir is None:
        return None
    directory = opts.config_dir
    if os.path.basename(directory) == MAIN_CF:
        directory = os.path.dirname(directory) or "."
    os.environ[CONFIG_DIR_ENV] = directory
    return directory


def load_settings(opts: Options, *settings_types: type) -> list[object]:
    """main.cf (of -C), with -oA, bound to each of SETTINGS_TYPES; SendmailExit(78) when bad."""
    overrides = [] if opts.alias_database is None else [f"alias_database={opts.alias_database}"]
    try:
        cfg = load_config(configuration_directory(opts), overrides)
        return [bind(settings_type, cfg) for settings_type in settings_types]
    except ConfigError as exc:
        fatal(os.EX_CONFIG, str(exc))


def sendmail_settings(opts: Options) -> SendmailSettings:
    [settings] = load_settings(opts, SendmailSettings)
    assert isinstance(settings, SendmailSettings)
    return settings


# --------------------------------------------------------------------------------------
# Submitting to postdrop
# --------------------------------------------------------------------------------------
def exit_status_of_refusal(code: int, dsn: str) -> int:
    """The sysexits status for a refusal: 4xx 75, 5.7.x 77, 5.1.0 64, 5.1.x/5.6.x 65, else 69."""
    if code < 500:
        return os.EX_TEMPFAIL
    if dsn.startswith("5.7."):
        return os.EX_NOPERM
    if dsn == "5.1.0":
        return os.EX_USAGE
    if dsn.startswith(("5.1.", "5.6.", "5.5.4")):
        return os.EX_DATAERR
    return os.EX_UNAVAILABLE


def postdrop_path(settings: SendmailSettings) -> str:
    return os.path.join(settings.socket_directory, POSTDROP_SOCKET)


def enqueue(opts: Options, settings: SendmailSettings, stdin: BinaryIO) -> str:
    """Read, check and submit the message; its queue ID, or SendmailExit."""
    from sdmail.core.mail_stream import (  # noqa: PLC0415 (not for the exec'ing modes)
        SubmitRecipient,
        SubmitRequest,
    )

    sender = None if opts.sender is None else envelope_sender(opts.sender, opts.warnings)
    recipients = command_line_recipients(opts.recipients)
    if not recipients and not opts.extract_recipients:
        fatal(
            os.EX_USAGE,
            "Recipient addresses must be specified on the command line or via the -t option",
        )
    full_name = opts.full_name if opts.full_name is not None else os.environ.get("NAME") or None
    # -bv collects no message (Postfix's): the report needs only what cleanup adds.
    content = (
        b""
        if opts.verify
        else read_message(
            stdin,
            dot_ends_input=opts.dot_ends_input,
            fix_line_endings=settings.sendmail_fix_line_endings,
        )
    )
    req = SubmitRequest(
        sender=sender,
        recipients=tuple(SubmitRecipient(r, notify=opts.notify.value) for r in recipients),
        full_name=full_name,
        extract_recipients=opts.extract_recipients,
        ret=opts.ret,
        envid=opts.envid,
        body_type=opts.body_type,
        attributes={"rewrite_context": "remote"} if opts.gateway else {},
        trace_flags=trace_flags(opts),
    )
    return submit_to_postdrop(settings, req, content)


def trace_flags(opts: Options) -> int:
    """-bv verifies, a single -v records the first attempt (more -v only log more)."""
    if opts.verify:
        return int(TraceFlag.VERIFY)
    return int(TraceFlag.RECORD) if opts.verbose == 1 else 0


def report_recipient(opts: Options) -> str:
    """Who the delivery status report goes to, as Postfix's sendmail names it."""
    if opts.sender is not None:
        return envelope_sender(opts.sender, [])
    import pwd  # noqa: PLC0415 (only the reporting modes need it)

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def submit_to_postdrop(settings: SendmailSettings, req: object, content: bytes) -> str:
    """Hand one message to postdrop; its queue ID, or SendmailExit with the right status."""
    from sdmail.core.ipc import ProtocolError  # noqa: PLC0415
    from sdmail.core.mail_stream import SubmitError, SubmitRequest, submit  # noqa: PLC0415

    assert isinstance(req, SubmitRequest)
    path = postdrop_path(settings)
    try:
        return submit(path, req, content, timeout=settings.ipc_timeout)
    except SubmitError as refusal:
        fatal(exit_status_of_refusal(refusal.code, refusal.dsn), refusal.text)
    except ProtocolError as exc:
        fatal(os.EX_TEMPFAIL, f"{path}: {exc}")
    except OSError as exc:
        fatal(
            os.EX_TEMPFAIL,
            f"cannot reach the postdrop service at {path}: {exc.strerror or exc}"
            " (is sdmail-postdrop.socket running?)",
        )


# --------------------------------------------------------------------------------------
# The modes that run another program
# --------------------------------------------------------------------------------------
def run_program(module: str, args: Sequence[str], verbose: int) -> NoReturn:
    """Replace this process with `python3 -m sdmail.MODULE ARGS` (Postfix: mail_run_replace)."""
    argv = [sys.executable, "-m", f"sdmail.{module}", *(["-v"] * verbose), *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)  # noqa: S606 (our own argument list, no shell)
    except OSError as exc:
        fatal(os.EX_UNAVAILABLE, f"cannot execute {' '.join(argv)}: {exc.strerror or exc}")


def requires_no_recipient(opts: Options, what: str) -> None:
    if opts.recipients:
        fatal(os.EX_USAGE, f"{what} requires no recipient")


def newaliases(opts: Options) -> int:
    requires_no_recipient(opts, "alias initialization mode")
    settings = sendmail_settings(opts)
    tables = [t for item in settings.alias_database for t in split_list(item)]
    if not tables:
        return os.EX_OK
    run_program("postalias", tables, opts.verbose)


def start_mail_system(opts: Options) -> NoReturn:
    requires_no_recipient(opts, "daemon mode")
    try:
        os.execvp("systemctl", ["systemctl", "start", "sdmail.service"])  # noqa: S606
    except OSError as exc:
        fatal(os.EX_UNAVAILABLE, f"cannot execute systemctl start sdmail.service: {exc.strerror}")


# --------------------------------------------------------------------------------------
# sendmail -bs: SMTP on stdin and stdout
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmtpSettings:
    """The main.cf parameters of the -bs dialogue (smtpd's, as Postfix runs smtpd for it)."""

    myhostname: str
    smtpd_banner: str
    message_size_limit: int
    smtpd_recipient_limit: int
    smtpd_hard_error_limit: int
    disable_vrfy_command: bool
    smtputf8_enable: bool
    line_length_limit: int


class Reply:
    """Postfix's replies in the -bs dialogue (reference §5.2, §5.3)."""

    OK = "250 2.0.0 Ok"
    MAIL_OK = "250 2.1.0 Ok"
    RCPT_OK = "250 2.1.5 Ok"
    DATA = "354 End data with <CR><LF>.<CR><LF>"
    BYE = "221 2.0.0 Bye"
    NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
    NEED_MAIL = "503 5.5.1 Error: need MAIL command"
    NEED_RCPT = "503 5.5.1 Error: need RCPT command"
    MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM:<address>"
    RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO:<address>"
    BAD_SENDER = "501 5.1.7 Bad sender address syntax"
    BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
    UNKNOWN = "500 5.5.2 Error: command not recognized"
    BAD_SYNTAX = "500 5.5.2 Error: bad syntax"
    TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
    TOO_BIG = "552 5.3.4 Error: message file too big"
    SIZE_EXCEEDED = "552 5.3.4 Message size exceeds fixed limit"
    VRFY_DISABLED = "502 5.5.1 VRFY command is disabled"
    NEEDS_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    WRITE_ERROR = "451 4.3.0 Error: queue file write error"


class StandaloneSmtp:
    """One SMTP session of `sendmail -bs`: commands from a stream, replies to another.

    Relay and access controls do not apply (Postfix runs them only for mail_owner); each
    message goes to postdrop, which knows the user from the kernel and checks MAIL FROM
    against local_login_sender_maps.  Commands are answered in order, so pipelining
    clients are served; long text lines in DATA stay whole.
    """

    def __init__(self, settings: SendmailSettings, smtp: SmtpSettings) -> None:
        self.settings = settings
        self.smtp = smtp
        self.errors = 0
        self._out: BinaryIO | None = None
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[tuple[str, Notify, str | None]] = []
        self.mail_params: dict[str, str] = {}

    # -- the conversation ---------------------------------------------------------------
    def serve(self, stdin: BinaryIO, stdout: BinaryIO) -> int:
        """Talk until QUIT or end of input; the exit status (0)."""
        self._out = stdout
        self.reply(f"220 {self.smtp.smtpd_banner}")
        while True:
            line = self._read_command(stdin)
            if line is None:
                return os.EX_OK
            verb, _, arg = line.partition(" ")
            handler = getattr(self, f"smtp_{verb.upper()}", None) if verb.isalpha() else None
            if not line.strip():
                self.error(Reply.BAD_SYNTAX)
            elif handler is None:
                self.error(Reply.UNKNOWN)
            elif handler(arg.strip(), stdin) is False:
                return os.EX_OK
            if self.errors >= self.smtp.smtpd_hard_error_limit:
                self.reply(f"421 4.7.0 {self.smtp.myhostname} Error: too many errors")
                return os.EX_OK

    def _read_command(self, stdin: BinaryIO) -> str | None:
        limit = self.smtp.line_length_limit
        raw = stdin.readline(limit + 1)
        if not raw:
            return None
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stdin.readline(limit + 1)
            self.error(f"500 5.5.2 {self.smtp.myhostname} Error: command too long")
            return ""
        return raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")

    def reply(self, text: str) -> None:
        assert self._out is not None
        self._out.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
        self._out.flush()

    def error(self, text: str) -> None:
        self.errors += 1
        self.reply(text)

    # -- the verbs (each returns False to end the session) ---------------------------------
    def smtp_HELO(self, arg: str, _stdin: BinaryIO) -> None:
        if not arg:
            self.error("501 Syntax: HELO hostname")
            return
        self._reset()
        self.reply(f"250 {self.smtp.myhostname}")

    def smtp_EHLO(self, arg: str, _stdin: BinaryIO) -> None:
        if not arg:
            self.error("501 Syntax: EHLO hostname")
            return
        self._reset()
        limit = self.smtp.message_size_limit
        lines = [self.smtp.myhostname, "PIPELINING", f"SIZE {limit}" if limit else "SIZE"]
        if not self.smtp.disable_vrfy_command:
            lines.append("VRFY")
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.smtp.smtputf8_enable:
            lines.append("SMTPUTF8")
        for line in lines[:-1]:
            self.reply(f"250-{line}")
        self.reply(f"250 {lines[-1]}")

    def smtp_MAIL(self, arg: str, _stdin: BinaryIO) -> None:
        if self.sender is not None:
            self.error(Reply.NESTED_MAIL)
            return
        path, params = split_command_argument(arg, "FROM:")
        if path is None:
            self.error(Reply.MAIL_SYNTAX)
            return
        problem = self._mail_parameters(params)
        if problem is not None:
            self.error(problem)
            return
        sender = parse_smtp_path(path)
        if sender is None:
            self.error(Reply.BAD_SENDER)
            return
        if not sender.isascii() and "SMTPUTF8" not in self.mail_params:
            self.error(Reply.NEEDS_SMTPUTF8)
            return
        self.sender = sender
        self.reply(Reply.MAIL_OK)

    def _mail_parameters(self, params: list[str]) -> str | None:
        """Check MAIL FROM's ESMTP parameters into self.mail_params; the error reply or None."""
        found: dict[str, str] = {}
        for param in params:
            name, _, value = param.partition("=")
            key = name.upper()
            if key == "SIZE":
                if not value.isdigit():
                    return "501 5.5.4 Bad message size syntax"
                limit = self.smtp.message_size_limit
                if limit and int(value) > limit:
                    return Reply.SIZE_EXCEEDED
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    return "501 5.5.4 Unsupported BODY parameter value"
                found["BODY"] = value.upper()
            elif key == "SMTPUTF8" and self.smtp.smtputf8_enable and not value:
                found["SMTPUTF8"] = ""
            elif key == "RET":
                if value.upper() not in ("FULL", "HDRS"):
                    return "501 5.5.4 Bad RET parameter syntax"
                found["RET"] = value.upper()
            elif key == "ENVID":
                envid = xtext_decode(value)
                if envid is None or not envid or len(envid) > 100:
                    return "501 5.5.4 Bad ENVID parameter syntax"
                found["ENVID"] = envid
            else:
                return f"555 5.5.4 Unsupported option: {param}"
        self.mail_params = found
        return None

    def smtp_RCPT(self, arg: str, _stdin: BinaryIO) -> None:
        if self.sender is None:
            self.error(Reply.NEED_MAIL)
            return
        path, params = split_command_argument(arg, "TO:")
        if path is None:
            self.error(Reply.RCPT_SYNTAX)
            return
        notify, orcpt = Notify(0), None
        for param in params:
            name, _, value = param.partition("=")
            if name.upper() == "NOTIFY":
                flags = dsn_notify(value) if "," in value or value else None
                if flags is None or any(" " in w for w in value.split(",")):
                    self.error("501 5.5.4 Bad NOTIFY parameter syntax")
                    return
                notify = flags
            elif name.upper() == "ORCPT":
                orcpt = decoded_orcpt(value)
                if orcpt is None:
                    self.error("501 5.5.4 Bad ORCPT parameter syntax")
                    return
            else:
                self.error(f"555 5.5.4 Unsupported option: {param}")
                return
        recipient = parse_smtp_path(path)
        if not recipient:
            self.error(Reply.BAD_RECIPIENT)
            return
        if not recipient.isascii() and "SMTPUTF8" not in self.mail_params:
            self.error(Reply.NEEDS_SMTPUTF8)
            return
        if len(self.recipients) >= self.smtp.smtpd_recipient_limit:
            self.error(Reply.TOO_MANY_RECIPIENTS)
            return
        self.recipients.append((recipient, notify, orcpt))
        self.reply(Reply.RCPT_OK)

    def smtp_DATA(self, arg: str, stdin: BinaryIO) -> bool | None:
        if arg:
            self.error("501 5.5.4 Syntax: DATA")
            return None
        if self.sender is None or not self.recipients:
            self.error(Reply.NEED_RCPT)
            return None
        self.reply(Reply.DATA)
        ended, content = self._read_data(stdin)
        if not ended:
            return False  # the input ended inside DATA: nothing is queued
        if content is None:
            self.error(Reply.TOO_BIG)
        else:
            self.reply(self._submit(content))
        self._reset()
        return None

    def _read_data(self, stdin: BinaryIO) -> tuple[bool, bytes | None]:
        """(whether the line `.` came, the message before it: dot-unstuffed, CRLF as LF;
        None when over message_size_limit, the rest read and dropped)."""
        limit = self.smtp.message_size_limit
        lines: list[bytes] = []
        size = 0
        for raw in iter(stdin.readline, b""):
            line = raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")
            if line == b".":
                return True, None if limit and size > limit else b"".join(lines)
            if line.startswith(b"."):
                line = line[1:]
            size += len(line) + 1
            if not limit or size <= limit:
                lines.append(line + b"\n" if raw.endswith(b"\n") else line)
        return False, None

    def _submit(self, content: bytes) -> str:
        from sdmail.core.ipc import ProtocolError  # noqa: PLC0415
        from sdmail.core.mail_stream import (  # noqa: PLC0415
            SubmitError,
            SubmitRecipient,
            SubmitRequest,
            submit,
        )

        assert self.sender is not None
        req = SubmitRequest(
            sender=self.sender,
            recipients=tuple(
                SubmitRecipient(address, orcpt=orcpt, notify=notify.value)
                for address, notify, orcpt in self.recipients
            ),
            ret=self.mail_params.get("RET"),
            envid=self.mail_params.get("ENVID"),
            body_type=self.mail_params.get("BODY"),
            smtputf8="SMTPUTF8" in self.mail_params,
        )
        try:
            queue_id = submit(
                postdrop_path(self.settings), req, content, timeout=self.settings.ipc_timeout
            )
        except SubmitError as refusal:
            return f"{refusal.code} {refusal.dsn} {refusal.text}"
        except (ProtocolError, OSError):
            return Reply.WRITE_ERROR
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def smtp_RSET(self, arg: str, _stdin: BinaryIO) -> None:
        if arg:
            self.error("501 5.5.4 Syntax: RSET")
            return
        self._reset()
        self.reply(Reply.OK)

    def smtp_NOOP(self, _arg: str, _stdin: BinaryIO) -> None:
        self.reply(Reply.OK)

    def smtp_VRFY(self, arg: str, _stdin: BinaryIO) -> None:
        if self.smtp.disable_vrfy_command:
            self.error(Reply.VRFY_DISABLED)
        elif not arg:
            self.error("501 5.5.4 Syntax: VRFY address")
        elif parse_smtp_path(arg) is None:
            self.error(Reply.BAD_RECIPIENT)
        else:
            self.reply(f"252 2.0.0 {arg}")

    def smtp_HELP(self, _arg: str, _stdin: BinaryIO) -> None:
        self.reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT")

    def smtp_QUIT(self, _arg: str, _stdin: BinaryIO) -> bool:
        self.reply(Reply.BYE)
        return False


def split_command_argument(arg: str, keyword: str) -> tuple[str | None, list[str]]:
    """`FROM:<a@b> SIZE=10` -> ("<a@b>", ["SIZE=10"]); (None, []) when KEYWORD is missing.

    The path ends at the `>` that closes it (a quoted local part may hold spaces and `>`),
    or at the first space when it has no angle brackets."""
    if arg[: len(keyword)].upper() != keyword:
        return None, []
    rest = arg[len(keyword) :].lstrip(" ")
    if not rest:
        return None, []
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            return rest, []  # the address parser names the problem
        path, params = rest[: end + 1], rest[end + 1 :]
        if params and not params.startswith(" "):
            return None, []
    else:
        path, _, params = rest.partition(" ")
    return path, params.split()


def _closing_bracket(text: str) -> int:
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def parse_smtp_path(path: str) -> str | None:
    """The internal form of an RFC 5321 path, or None when it does not parse."""
    from sdmail.core.address import AddressError, parse_path  # noqa: PLC0415

    try:
        return parse_path(path)
    except AddressError:
        return None


def xtext_decode(text: str) -> str | None:
    """RFC 3461 xtext (`+2B` is `+`); None when malformed."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "+":
            digits = text[index + 1 : index + 3]
            if len(digits) != 2 or not all(c in "0123456789ABCDEF" for c in digits):
                return None
            out.append(chr(int(digits, 16)))
            index += 3
            continue
        if not ("!" <= char <= "~") or char == "=":
            return None
        out.append(char)
        index += 1
    return "".join(out)


def decoded_orcpt(value: str) -> str | None:
    """ORCPT=rfc822;xtext as `rfc822;address`; None when malformed."""
    address_type, semicolon, encoded = value.partition(";")
    decoded = xtext_decode(encoded) if semicolon and address_type else None
    if not decoded:
        return None
    return f"{address_type.lower()};{decoded}"


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def program_name(argv0: str) -> str:
    """mailq and newaliases by their name; anything else is sendmail."""
    name = os.path.basename(argv0)
    return name if name in (MAILQ, NEWALIASES) else SENDMAIL


def run(opts: Options, reporter: Reporter, stdin: BinaryIO, stdout: BinaryIO) -> int:
    if opts.queue_interval is not None and opts.mode != DAEMON:
        return os.EX_OK  # -q30m: queue runs are qmgr's business
    if opts.mode == ENQUEUE:
        if opts.site_to_flush is not None:
            requires_no_recipient(opts, "flush site")
            run_program("postqueue", ["-s", opts.site_to_flush], opts.verbose)
        if opts.id_to_flush is not None:
            requires_no_recipient(opts, "flush queue_id")
            run_program("postqueue", ["-i", opts.id_to_flush], opts.verbose)
        if opts.verp:
            reporter.warning("-XV: VERP is not available yet; sending with one envelope sender")
        enqueue(opts, sendmail_settings(opts), stdin)
        if trace_flags(opts):
            stdout.write(
                f"Mail Delivery Status Report will be mailed to <{report_recipient(opts)}>.\n".encode(
                    "utf-8", "surrogateescape"
                )
            )
            stdout.flush()
        return os.EX_OK
    if opts.mode == MAILQ_MODE:
        requires_no_recipient(opts, "display queue mode")
        configuration_directory(opts)
        run_program("postqueue", ["-p"], opts.verbose)
    if opts.mode == FLUSHQ:
        requires_no_recipient(opts, "flush queue mode")
        configuration_directory(opts)
        run_program("postqueue", ["-f"], opts.verbose)
    if opts.mode == NEWALIAS:
        return newaliases(opts)
    if opts.mode == DAEMON:
        start_mail_system(opts)
    if opts.mode == SMTP:
        requires_no_recipient(opts, "stand-alone mode")
        settings, smtp_settings = load_settings(opts, SendmailSettings, SmtpSettings)
        assert isinstance(settings, SendmailSettings)
        assert isinstance(smtp_settings, SmtpSettings)
        return StandaloneSmtp(settings, smtp_settings).serve(stdin, stdout)
    return os.EX_OK  # -bh, -bH: no host status database


def main(argv: Sequence[str] | None = None, *, program: str | None = None) -> int:
    """sendmail's entry point; PROGRAM (default: the name it was run as) picks the mode."""
    if program is None:
        program = program_name(sys.argv[0])
    args = sys.argv[1:] if argv is None else list(argv)
    reporter = Reporter(program)
    try:
        opts = parse_command_line(args, program)
        for warning in opts.warnings:
            reporter.warning(warning)
        opts.warnings.clear()
        status = run(opts, reporter, sys.stdin.buffer, sys.stdout.buffer)
        for warning in opts.warnings:
            reporter.warning(warning)
        return status
    except SendmailExit as stop:
        if stop.text:
            reporter.fatal(stop.text)
        return stop.status
    except KeyboardInterrupt:
        reporter.fatal("interrupted")
        return os.EX_TEMPFAIL
    except Exception as exc:  # a bug must not lose the caller's mail silently: try later
        reporter.fatal(f"internal error: {type(exc).__name__}: {exc}")
        reporter.traceback(exc)
        return os.EX_TEMPFAIL


def mailq_main(argv: Sequence[str] | None = None) -> int:
    return main(argv, program=MAILQ)


def newaliases_main(argv: Sequence[str] | None = None) -> int:
    return main(argv, program=NEWALIASES)


if __name__ == "__main__":
    sys.exit(main())
