"""postqueue: the queue listing (mailq) and flush requests, in Postfix's exact formats.

USAGE
    postqueue [-v] [-c DIR] -p          the listing mailq prints (also `sendmail -bp`)
    postqueue [-v] [-c DIR] -j          the same as JSON Lines, one object per message
    postqueue [-v] [-c DIR] -f          flush: ask qmgr to retry every deferred message now
    postqueue [-v] [-c DIR] -i QUEUE_ID deliver one deferred message now
    postqueue [-v] [-c DIR] -s SITE     deliver the deferred mail for SITE now (fast flush)

WHAT IT DOES.  -p and -j ask the showq service (`$socket_directory/showq`, any user may
connect) for the queue as a stream of entries (core/showq_proto) and print them as
Postfix's postqueue does: the long-queue-ID layout (header `-Queue ID-        --Size--
---Arrival Time---- --Sender/Recipient------`: the columns of Postfix's long IDs under
the header text of its short ones, which is what admins' scripts look for), one `%-17s %8ld %19.19s %s` row per
message with `*` active, `!` on hold and `#` forced to expire after the ID, the
recipients below with their delay reason right-aligned to column 78 above the first
recipient it applies to, `(reason unavailable)` when a recipient without reason follows
one with a reason, an empty line between messages, and `-- N Kbytes in M Request(s).`),
or exactly `Mail queue is empty`.  The null sender shows as `$empty_address_recipient`;
addresses are quoted as RFC 5321 wants them and every character that is not printable
is shown as `?`.  -j prints Postfix's keys in Postfix's order (queue_name, queue_id,
arrival_time, message_size, forced_expire, sender, recipients: address, orig_address
when it differs from the address, delay_reason when there is one).

When nothing answers at the showq socket, root reads the queue itself with the same
entry reader the service uses (a warning says so), and any other user gets
`postqueue: fatal: Queue report unavailable - mail system is down` (exit 69).

-f sends qmgr's flush trigger (core/trigger FLUSH_QUEUE: forget dead destinations,
ignore retry times, scan deferred and incoming) to `$socket_directory/qmgr`; when
nobody listens: `Cannot flush mail queue - mail system is down` (exit 69).  pickup has
no trigger socket (it watches maildrop/ itself), so there is nothing else to wake.

-s SITE and -i QUEUE_ID ask the fast-flush service (`$socket_directory/flush`, core/flush_proto,
sdmail/flush): -s makes the deferred mail logged for SITE due now, -i the deferred message
QUEUE_ID, and the service wakes qmgr.  A SITE outside `fast_flush_domains` gets Postfix's
`Flush service is not configured for destination "SITE"` (exit 69); a QUEUE_ID that is not in
the deferred queue (nor being delivered) gets `Cannot flush queue ID - no deferred message:
"ID"` (exit 66: Postfix says nothing and exits 0, which hides a typo); a flush service that
does not answer, `Cannot flush mail queue - mail system is down` (exit 69).  A site must be a
host name and a queue ID a long queue ID (`Cannot flush mail queue - invalid destination` /
`Cannot flush queue ID - invalid name`, exit 64), checked before anything is asked.

PERMISSIONS.  The user is checked against authorized_mailq_users (-p, -j) and
authorized_flush_users (-f, -i, -s), root and mail_owner always allowed: `User
NAME(UID) is not allowed to view the mail queue` / `... to flush the mail queue`, exit
77.  The showq and flush services and qmgr check their caller again from SO_PEERCRED; this
check only gives the answer before any connection.

Exit status: 0 done; 64 usage, an invalid queue ID or site; 66 no such deferred message;
69 mail system down or site not eligible; 70 a malformed answer from showq; 77 not allowed;
78 bad main.cf.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sdmail.core import flush_proto
from sdmail.core.address import (
    AddressError,
    quote_address,
    split_address,
)
from sdmail.core.flush_proto import FlushReply, FlushStatus
from sdmail.core.records import QueueName
from sdmail.core.showq_proto import (
    QueueEntry,
    ShowqProtocolError,
    ShowqRefused,
    ShowqUnavailable,
    SkipHandler,
    request_listing,
    scan_queue,
)
from sdmail.core.skeleton import (
    ExitCode,
    Fatal,
    ToolContext,
    UsageError,
    option_parser,
    run_tool,
)
from sdmail.core.spool import valid_queue_id
from sdmail.core.trigger import FLUSH_QUEUE, trigger
from sdmail.core.user_acl import exempt_uids, refused_user

PROGRAM = "postqueue"
USAGE = (
    "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"
)
SHOWQ_SOCKET = "showq"
QMGR_SOCKET = "qmgr"

# Postfix's layout for long queue IDs (showq_compat.c).
HEADER = (
    f"{'-Queue ID-':<17} {'--Size--':>8} {'---Arrival Time----':<19} --Sender/Recipient------\n"
)
EMPTY_QUEUE = "Mail queue is empty\n"
REASON_COLUMN = 76
_UNAVAILABLE = "Queue report unavailable - mail system is down"
_FLUSH_DOWN = "Cannot flush mail queue - mail system is down"
_SHOWN_NAME_LIMIT = 100


@dataclass(frozen=True)
class PostqueueSettings:
    queue_directory: str
    socket_directory: str
    authorized_mailq_users: tuple[str, ...]
    authorized_flush_users: tuple[str, ...]
    empty_address_recipient: str
    mail_owner: str
    mail_name: str
    ipc_timeout: int


# --------------------------------------------------------------------------------------
# What the listing shows
# --------------------------------------------------------------------------------------
def printable(text: str) -> str:
    """TEXT with every character that is not printable (controls, undecodable bytes) as `?`."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else "?" for char in text)


def display_address(address: str) -> str:
    """An internal address as mailq shows it: RFC-quoted, non-printables as `?`."""
    try:
        quoted = quote_address(address)
    except AddressError:
        # Controls in the local part: quote it, as Postfix's quote_822_local does.
        local, domain = split_address(address)
        escaped = local.replace("\\", "\\\\").replace('"', '\\"')
        quoted = f'"{escaped}"@{domain}' if "@" in address else f'"{escaped}"'
    return printable(quoted)


def display_sender(sender: str, empty_address: str) -> str:
    return display_address(sender) if sender else display_address(empty_address)


def _id_with_status(entry: QueueEntry) -> str:
    marks = {QueueName.ACTIVE.value: "*", QueueName.HOLD.value: "!"}.get(entry.queue_name, "")
    return entry.queue_id + marks + ("#" if entry.forced_expire else "")


def _reason_line(reason: str) -> str:
    shown = reason or "reason unavailable"
    padding = max(0, REASON_COLUMN - len(shown.encode("utf-8")))
    return f"{'':{padding}}({shown})\n"


def message_lines(entry: QueueEntry, empty_address: str) -> Iterator[str]:
    """The lines of one message in `postqueue -p`: its row, then reasons and recipients."""
    arrival = time.asctime(time.localtime(entry.arrival_time))[:19]
    sender = display_sender(entry.sender, empty_address)
    yield f"{printable(_id_with_status(entry)):<17} {entry.message_size:>8} {arrival:>19} {sender}\n"
    shown_reason = ""
    for recipient in entry.recipients:
        reason = printable(recipient.delay_reason or "")
        if reason != shown_reason:
            shown_reason = reason
            yield _reason_line(reason)
        yield f"{'':17} {'':8} {'':19} {display_address(recipient.address)}\n"


def mailq_lines(entries: Iterable[QueueEntry], empty_address: str) -> Iterator[str]:
    """`postqueue -p`, line by line, as entries arrive."""
    count = 0
    total_size = 0
    for entry in entries:
        yield "\n" if count else HEADER
        yield from message_lines(entry, empty_address)
        count += 1
        total_size += entry.message_size
    if count == 0:
        yield EMPTY_QUEUE
    else:
        plural = "" if count == 1 else "s"
        yield f"\n-- {total_size // 1024} Kbytes in {count} Request{plural}.\n"


def json_line(entry: QueueEntry, empty_address: str) -> str:
    """One message of `postqueue -j`: a JSON object with Postfix's keys, in its order."""
    recipients = []
    for recipient in entry.recipients:
        fields = {"address": display_address(recipient.address)}
        if recipient.orig_address and recipient.orig_address != recipient.address:
            fields["orig_address"] = display_address(recipient.orig_address)
        if recipient.delay_reason:
            fields["delay_reason"] = printable(recipient.delay_reason)
        recipients.append(fields)
    message = {
        "queue_name": printable(entry.queue_name),
        "queue_id": printable(entry.queue_id),
        "arrival_time": entry.arrival_time,
        "message_size": entry.message_size,
        "forced_expire": entry.forced_expire,
        "sender": display_sender(entry.sender, empty_address),
        "recipients": recipients,
    }
    return json.dumps(message, ensure_ascii=False) + "\n"


def json_lines(entries: Iterable[QueueEntry], empty_address: str) -> Iterator[str]:
    """`postqueue -j`, one line per message; nothing at all for an empty queue."""
    for entry in entries:
        yield json_line(entry, empty_address)


# --------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------
def _write_lines(lines: Iterable[str], out: BinaryIO) -> None:
    """Write LINES as they come; a reader that went away (`| head`) ends the listing quietly."""
    try:
        for line in lines:
            out.write(line.encode("utf-8", "surrogateescape"))
            out.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def _check_acl(settings: PostqueueSettings, acl: Sequence[str], parameter: str, what: str) -> None:
    uid = os.getuid()
    refused = refused_user(acl, uid, parameter=parameter, exempt=exempt_uids(settings.mail_owner))
    if refused is not None:
        raise Fatal(f"User {refused}({uid}) is not allowed to {what}", ExitCode.NOPERM)


def _entries_from_showq(ctx: ToolContext[PostqueueSettings]) -> Iterator[QueueEntry]:
    """The listing from the showq service, or read directly by root when showq is down."""
    settings = ctx.settings
    path = Path(settings.socket_directory) / SHOWQ_SOCKET
    try:
        listing = request_listing(path, timeout=settings.ipc_timeout)
    except ShowqRefused as exc:
        raise Fatal(str(exc), ExitCode.NOPERM) from None
    except ShowqProtocolError as exc:
        raise Fatal(str(exc), ExitCode.SOFTWARE) from None
    except ShowqUnavailable as exc:
        why = os.strerror(exc.errno) if exc.errno else "connection closed without an answer"
        connect = f"Connect to the {settings.mail_name} {SHOWQ_SOCKET} service: {why}"
        if exc.errno in (errno.EACCES, errno.EPERM):
            # Not "down": the user may not reach the socket.
            raise Fatal(connect, ExitCode.SOFTWARE) from None
        if os.geteuid() != 0:
            raise Fatal(_UNAVAILABLE, ExitCode.UNAVAILABLE) from None
        ctx.logger.warning("Mail system is down -- accessing queue directly (%s)", connect)
        yield from scan_queue(settings.queue_directory, _warn_skipped(ctx))
        return
    with listing:
        try:
            yield from listing
        except ShowqProtocolError as exc:
            raise Fatal(str(exc), ExitCode.SOFTWARE) from None
        except OSError as exc:
            raise Fatal(f"read from the {SHOWQ_SOCKET} service: {exc}", ExitCode.SOFTWARE) from None


def _warn_skipped(ctx: ToolContext[PostqueueSettings]) -> SkipHandler:
    def warn(_queue: QueueName, _queue_id: str, why: str) -> None:
        ctx.logger.warning("%s", why)

    return warn


def show_queue(ctx: ToolContext[PostqueueSettings], as_json: bool, out: BinaryIO) -> int:
    settings = ctx.settings
    _check_acl(
        settings, settings.authorized_mailq_users, "authorized_mailq_users", "view the mail queue"
    )
    entries = _entries_from_showq(ctx)
    empty = settings.empty_address_recipient
    _write_lines(json_lines(entries, empty) if as_json else mailq_lines(entries, empty), out)
    return ExitCode.OK


# --------------------------------------------------------------------------------------
# Flushing
# --------------------------------------------------------------------------------------
def _check_flush_acl(settings: PostqueueSettings) -> None:
    _check_acl(
        settings, settings.authorized_flush_users, "authorized_flush_users", "flush the mail queue"
    )


def _shown(text: str) -> str:
    more = "..." if len(text) > _SHOWN_NAME_LIMIT else ""
    return printable(text[:_SHOWN_NAME_LIMIT]) + more


def flush_queue(settings: PostqueueSettings) -> int:
    """-f: qmgr's flush trigger; EX_UNAVAILABLE when nobody listens."""
    _check_flush_acl(settings)
    if not trigger(str(Path(settings.socket_directory) / QMGR_SOCKET), FLUSH_QUEUE):
        raise Fatal(_FLUSH_DOWN, ExitCode.UNAVAILABLE)
    return ExitCode.OK


def _flush_outcome(reply: FlushReply, shown: str, not_found: str) -> int:
    """Postfix's words and exit status for the flush service's REPLY about SHOWN."""
    if reply.status is FlushStatus.OK:
        return ExitCode.OK
    if reply.status is FlushStatus.DENY:
        raise Fatal(
            f'Flush service is not configured for destination "{shown}"', ExitCode.UNAVAILABLE
        )
    if reply.status is FlushStatus.NOT_FOUND:
        raise Fatal(f'{not_found}: "{shown}"', ExitCode.NOINPUT)
    if reply.status is FlushStatus.BAD:
        raise Fatal(f'Invalid request: "{shown}"', ExitCode.USAGE)
    if reply.status is FlushStatus.REFUSED:
        raise Fatal(reply.text, ExitCode.NOPERM)
    raise Fatal(_FLUSH_DOWN, ExitCode.UNAVAILABLE)


def flush_site(settings: PostqueueSettings, site: str) -> int:
    """-s SITE: the flush service's send_site."""
    _check_flush_acl(settings)
    reply = flush_proto.send_site(settings.socket_directory, site, timeout=settings.ipc_timeout)
    return _flush_outcome(reply, _shown(site), "Cannot flush mail queue")


def flush_file(settings: PostqueueSettings, queue_id: str) -> int:
    """-i QUEUE_ID: the flush service's send_file."""
    _check_flush_acl(settings)
    reply = flush_proto.send_file(settings.socket_directory, queue_id, timeout=settings.ipc_timeout)
    return _flush_outcome(reply, _shown(queue_id), "Cannot flush queue ID - no deferred message")


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------
def _mode(options: object) -> str:
    chosen = [
        letter
        for letter, given in (
            ("f", getattr(options, "flush", False)),
            ("i", getattr(options, "queue_id", None) is not None),
            ("j", getattr(options, "json", False)),
            ("p", getattr(options, "listing", False)),
            ("s", getattr(options, "site", None) is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        raise UsageError(USAGE)
    return chosen[0]


def run(ctx: ToolContext[PostqueueSettings], out: BinaryIO) -> int:
    options = ctx.options
    mode = _mode(options)
    # Input is checked before anything is looked up or connected to, as in Postfix.
    if mode == "s" and not flush_proto.valid_site(options.site):
        raise Fatal(
            f'Cannot flush mail queue - invalid destination: "{_shown(options.site)}"',
            ExitCode.USAGE,
        )
    if mode == "i" and not valid_queue_id(options.queue_id):
        raise Fatal(
            f'Cannot flush queue ID - invalid name: "{_shown(options.queue_id)}"',
            ExitCode.USAGE,
        )
    if mode in ("p", "j"):
        return show_queue(ctx, mode == "j", out)
    if mode == "s":
        return flush_site(ctx.settings, options.site)
    if mode == "i":
        return flush_file(ctx.settings, options.queue_id)
    return flush_queue(ctx.settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "list the mail queue or ask for its delivery")
    parser.add_argument("-f", dest="flush", action="store_true")
    parser.add_argument("-i", dest="queue_id", metavar="queue_id")
    parser.add_argument("-j", dest="json", action="store_true")
    parser.add_argument("-p", dest="listing", action="store_true")
    parser.add_argument("-s", dest="site", metavar="site")

    def tool(ctx: ToolContext[PostqueueSettings]) -> int:
        return run(ctx, sys.stdout.buffer)

    return run_tool(PROGRAM, argv, tool, settings=PostqueueSettings, parser=parser)


if __name__ == "__main__":
    sys.exit(main())
