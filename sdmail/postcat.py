"""postcat: show a queue file in human-readable form, in Postfix's layout.

USAGE
    postcat [-behorv] [-c DIR] [file...]          queue files by path (stdin when none)
    postcat [-behorv] [-c DIR] -q queue_id...     queue files looked up in the queue

WHAT IT DOES.  For each file, as Postfix's postcat: with -e (envelope) a line
`*** ENVELOPE RECORDS deferred/QUEUEID ***` (the queue and ID with -q, the path as
given, or `stdin`), then `message_size:` with Postfix's six columns (content size,
offset of the content, recipients, 0, content size, SMTPUTF8), then one `label: value`
line per envelope record in file order: `message_arrival_time:` (asctime, local time),
`warning_message_time:`, `sender_fullname:`, `sender:`, `dsn_return_flags:`,
`dsn_envelope_id:`, `named_attribute: name=value` (`create_time:` as a date),
`original_recipient:`, `dsn_original_recipient:`, `dsn_notify_flags:`, `recipient:`
and `done_recipient:`; then `*** MESSAGE CONTENTS ... ***`, the message as stored, and
`*** HEADER EXTRACTED ... ***` and `*** MESSAGE FILE END ... ***`.  -h shows the
header lines only, -b the body only (from the empty line that ends the header), -e
the envelope only; they combine, and none means all three.  -o puts each record's
file offset before it (`%9d `; content lines get the offset where they lie).  -v
also shows the records that are otherwise left out (the format version, the content
record, an unset delay warning time) and logs more.  -q takes queue IDs and finds
each in maildrop, incoming, active, deferred, hold or corrupt; -r is accepted for
Postfix's sake (sdmail's files have no pointer records to follow).  Characters that
are not printable in envelope values are shown as `?`; the content is shown as it is.

BAD INPUT.  A file that is cut short or corrupt gives `postcat: warning: NAME: input is
not a valid queue file: offset N: why` (core/qfile's reason) after what could still be
read of it is shown, and exit status 1.  A queue ID that is not one is `postcat: fatal:
bad mail queue ID: ...`; one that is in no queue `postcat: fatal: open queue file ID:
no such queue file`; a path that cannot be opened `postcat: fatal: open PATH: why`.

Exit status: 0 when every file was whole; 1 otherwise; 64 usage; 78 main.cf (read only
with -q, for queue_directory).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from sdmail.core import qfile
from sdmail.core.skeleton import Fatal, ToolContext, option_parser, run_tool
from sdmail.core.spool import NoSuchQueueFile, Spool, SpoolError, valid_queue_id
from sdmail.manpages import add_help_option

PROGRAM = "postcat"
USAGE = (
    "postcat [-b (body text)] [-c config_dir] [-e (envelope records)] [-h (header text)]"
    " [-o (offsets)] [-q (access queue)] [-v] [file(s)...]"
)
EXIT_FAILURE = 1

# Postfix's record names (rec_type_name) for the records sdmail's queue files hold.
LABELS = {
    qfile.REC_ARRIVAL: "message_arrival_time",
    qfile.REC_WARNING: "warning_message_time",
    qfile.REC_FULLNAME: "sender_fullname",
    qfile.REC_SENDER: "sender",
    qfile.REC_DSN_RET: "dsn_return_flags",
    qfile.REC_DSN_ENVID: "dsn_envelope_id",
    qfile.REC_ATTRIBUTE: "named_attribute",
    qfile.REC_ORIG_RCPT: "original_recipient",
    qfile.REC_DSN_ORCPT: "dsn_original_recipient",
    qfile.REC_DSN_NOTIFY: "dsn_notify_flags",
    qfile.REC_RECIPIENT: "recipient",
    qfile.REC_DONE: "done_recipient",
}
# Records of sdmail's own format, shown with -v only.
VERBOSE_LABELS = {qfile.REC_VERSION: "queue_file_version", qfile.REC_CONTENT: "content_size"}
_CREATE_TIME = "create_time"
# A record header is a type byte and a length of at most this many base-128 digits.
_HEADER_READ = 1 + 10
_COPY_CHUNK = 1 << 20


class Options:
    """What to show, from the command line."""

    def __init__(self, envelope: bool, header: bool, body: bool, offsets: bool, verbose: bool):
        if not (envelope or header or body):
            envelope = header = body = True
        self.envelope, self.header, self.body = envelope, header, body
        self.offsets, self.verbose = offsets, verbose


@dataclass(frozen=True)
class RawRecord:
    """Where one record lies in the file: its type, its header and its data."""

    offset: int
    rec_type: int
    data_offset: int
    length: int


def walk_records(fd: int, size: int) -> tuple[list[RawRecord], str | None]:
    """The records of the file, as far as their framing holds, and why it stops early.

    Display only: whether a file is a queue file is core/qfile's verdict (read_envelope);
    this walk goes on past what qfile refuses (order, missing records) so that postcat
    can show what a damaged file still holds.
    """
    records: list[RawRecord] = []
    pos = 0
    while pos < size:
        head = os.pread(fd, _HEADER_READ, pos)
        length, shift = 0, 0
        for index in range(1, len(head)):
            length |= (head[index] & 0x7F) << shift
            shift += 7
            if not head[index] & 0x80:
                data_offset = pos + 1 + index
                break
        else:
            return records, f"offset {pos}: record header cut short"
        if data_offset + length > size:
            return records, f"offset {pos}: record runs past the end of the file"
        records.append(RawRecord(pos, head[0], data_offset, length))
        pos = data_offset + length
        if head[0] == qfile.REC_END:
            break
    return records, None


def printable(data: bytes) -> str:
    """DATA as text, each character that is not printable shown as `?`."""
    text = data.decode("utf-8", "surrogateescape")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else "?" for char in text)


def _asctime(seconds: int) -> str:
    return time.asctime(time.localtime(seconds))


def envelope_line(rec_type: int, data: bytes, verbose: bool) -> str | None:
    """The `label: value` line of one envelope record, or None when it is not shown."""
    if rec_type in VERBOSE_LABELS:
        return f"{VERBOSE_LABELS[rec_type]}: {printable(data)}" if verbose else None
    label = LABELS.get(rec_type)
    if label is None:
        return f"unknown_record_type_{rec_type}: {printable(data)}"
    text = printable(data)
    if rec_type == qfile.REC_ARRIVAL:
        seconds = text.split(" ", 1)[0]
        return f"{label}: {_asctime(int(seconds)) if seconds.isdigit() else text}"
    if rec_type == qfile.REC_WARNING:
        when = text.strip()
        if when.isdigit() and int(when) > 0:
            return f"{label}: {_asctime(int(when))}"
        return f"{label}: {when}" if verbose else None
    if rec_type == qfile.REC_ATTRIBUTE:
        name, _, value = text.partition("=")
        if name == _CREATE_TIME and value.isdigit():
            return f"{_CREATE_TIME}: {_asctime(int(value))}"
    return f"{label}: {text}"


# --------------------------------------------------------------------------------------
# The content
# --------------------------------------------------------------------------------------
class ContentMap:
    """Where each octet of the content lies in the file (the segments, in order)."""

    def __init__(self, segments: Iterable[tuple[int, int]]) -> None:
        self.starts: list[int] = []  # content position of each segment
        self.offsets: list[int] = []  # file offset of each segment's data
        self.size = 0
        for file_offset, length in segments:
            self.starts.append(self.size)
            self.offsets.append(file_offset)
            self.size += length

    def file_offset(self, position: int) -> int:
        index = max(0, bisect.bisect_right(self.starts, position) - 1)
        return self.offsets[index] + position - self.starts[index] if self.starts else 0


class ContentPrinter:
    """Writes the header and/or body of a content fed in chunks, with offsets for -o."""

    def __init__(
        self,
        out: BinaryIO,
        header_end: int,
        options: Options,
        file_offset: Callable[[int], int],
    ) -> None:
        self.out = out
        self.header_end = header_end
        self.options = options
        self.file_offset = file_offset
        self.position = 0
        self.carry = b""
        self.carry_start = 0
        self.last_written = b"\n"

    def _shown(self, position: int) -> bool:
        return self.options.header if position < self.header_end else self.options.body

    def _write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.last_written = data[-1:]

    def feed(self, chunk: bytes) -> None:
        start, self.position = self.position, self.position + len(chunk)
        if not self.options.offsets:
            split = min(max(self.header_end - start, 0), len(chunk))
            if self.options.header:
                self._write(chunk[:split])
            if self.options.body:
                self._write(chunk[split:])
            return
        data = self.carry + chunk
        line_start, begin = self.carry_start, 0
        while (end := data.find(b"\n", begin)) >= 0:
            self._line(line_start, data[begin : end + 1])
            line_start += end + 1 - begin
            begin = end + 1
        self.carry, self.carry_start = data[begin:], line_start

    def _line(self, position: int, line: bytes) -> None:
        if self._shown(position):
            self._write(f"{self.file_offset(position):9d} ".encode("ascii") + line)

    def finish(self) -> None:
        if self.carry:
            self._line(self.carry_start, self.carry)
            self.carry = b""
        if self.last_written != b"\n":
            self._write(b"\n")


def _header_end(read_at: Callable[[int, int], bytes], body_offset: int) -> int:
    """Where the header ends: before the empty line that starts the body (Postfix's -b
    shows that line), or at BODY_OFFSET when there is none."""
    ends_with_newline = body_offset >= 1 and read_at(body_offset - 1, 1) == b"\n"
    if ends_with_newline and (body_offset == 1 or read_at(body_offset - 2, 1) == b"\n"):
        return body_offset - 1
    return body_offset


# --------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------
class FileView:
    """One queue file on an open, seekable descriptor, shown as postcat shows it."""

    def __init__(self, fd: int, label: str, options: Options, out: BinaryIO) -> None:
        self.fd = fd
        self.label = label
        self.options = options
        self.out = out

    def _print(self, text: str, offset: int | None = None) -> None:
        lead = f"{offset:9d} " if self.options.offsets and offset is not None else ""
        self.out.write((lead + text + "\n").encode("utf-8", "surrogateescape"))

    def _read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def show(self) -> str | None:
        """Print the file; return why it is not a valid queue file, or None."""
        size = os.fstat(self.fd).st_size
        try:
            parsed: qfile.QueueFile | None = qfile.read_envelope(self.fd)
            problem = None
        except qfile.CorruptQueueFile as exc:
            parsed, problem = None, str(exc)
        records, framing_problem = walk_records(self.fd, size)
        if not records or records[0].rec_type != qfile.REC_VERSION:
            return problem or framing_problem or "no records"  # nothing in it is ours to show
        segments = [(r.data_offset, r.length) for r in records if r.rec_type == qfile.REC_SEGMENT]
        content = ContentMap(segments)
        if self.options.envelope:
            self._print(f"*** ENVELOPE RECORDS {self.label} ***")
            if parsed is not None:
                self._message_size(parsed, records)
        state = "envelope"
        for record in records:
            if record.rec_type == qfile.REC_SEGMENT:
                if state == "envelope":
                    self._marker("MESSAGE CONTENTS", record.offset)
                    self._content(parsed, content)
                    state = "content"
                continue
            if record.rec_type in (qfile.REC_CONTENT, qfile.REC_END) and state != "extracted":
                if state == "envelope":
                    self._marker("MESSAGE CONTENTS", record.offset)
                self._marker("HEADER EXTRACTED", record.offset)
                state = "extracted"
            if record.rec_type == qfile.REC_END:
                self._marker("MESSAGE FILE END", record.offset)
                continue
            if self.options.envelope:
                line = envelope_line(record.rec_type, self._data(record), self.options.verbose)
                if line is not None:
                    self._print(line, record.offset)
        return problem or framing_problem

    def _data(self, record: RawRecord) -> bytes:
        return self._read(record.data_offset, record.length)

    def _marker(self, what: str, offset: int) -> None:
        if self.options.envelope:
            self._print(f"*** {what} {self.label} ***", offset)

    def _message_size(self, parsed: qfile.QueueFile, records: list[RawRecord]) -> None:
        first = parsed.segments[0].offset if parsed.segments else 0
        columns = (
            parsed.content_size,
            first,
            len(parsed.envelope.recipients),
            0,
            parsed.content_size,
            int(parsed.envelope.smtputf8),
        )
        where = next((r.offset for r in records if r.rec_type == qfile.REC_CONTENT), None)
        self._print("message_size: " + " ".join(f"{c:15d}" for c in columns), where)

    def _content(self, parsed: qfile.QueueFile | None, content: ContentMap) -> None:
        if not (self.options.header or self.options.body):
            return
        if parsed is not None:
            chunks: Iterator[bytes] = qfile.iter_content(self.fd, parsed)
            read_at = self._content_reader(content)
            header_end = _header_end(read_at, parsed.body_offset)
        else:
            # A damaged file: what its whole segments hold, split at the first empty line.
            salvaged = b"".join(
                self._read(offset, length)
                for offset, length in zip(content.offsets, _lengths(content), strict=True)
            )
            chunks = iter([salvaged])
            found = salvaged.find(b"\n\n")
            header_end = len(salvaged) if found < 0 else found + 1
        printer = ContentPrinter(self.out, header_end, self.options, content.file_offset)
        for chunk in chunks:
            printer.feed(chunk)
        printer.finish()

    def _content_reader(self, content: ContentMap) -> Callable[[int, int], bytes]:
        def read_at(position: int, length: int) -> bytes:
            return self._read(content.file_offset(position), length)

        return read_at


def _lengths(content: ContentMap) -> list[int]:
    ends = [*content.starts[1:], content.size]
    return [end - start for start, end in zip(content.starts, ends, strict=True)]


# --------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def seekable(fd: int) -> Iterator[int]:
    """FD itself when it is a regular file, else a memory file holding all it gives."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        yield fd
        return
    copy = os.memfd_create("postcat", os.MFD_CLOEXEC)
    try:
        while chunk := os.read(fd, _COPY_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(copy, view) :]
        yield copy
    finally:
        os.close(copy)


@contextlib.contextmanager
def open_path(path: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise Fatal(f"open {path}: {exc.strerror}", EXIT_FAILURE) from None
    try:
        with seekable(fd) as usable:
            yield usable
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_queue_file(spool: Spool, queue_id: str) -> Iterator[tuple[int, str]]:
    """The queue file QUEUE_ID wherever it is, and its `queue/ID` label."""
    if not valid_queue_id(queue_id):
        raise Fatal(f"bad mail queue ID: {printable(queue_id.encode())}", EXIT_FAILURE)
    handle = None
    try:
        for _attempt in range(2):  # qmgr may move it between the look and the open
            queue = spool.find(queue_id)
            if queue is None:
                break
            try:
                handle = spool.open(queue, queue_id)
                break
            except NoSuchQueueFile:
                continue
    except SpoolError as exc:
        raise Fatal(f"open queue file {queue_id}: {exc}", EXIT_FAILURE) from None
    if handle is None:
        raise Fatal(f"open queue file {queue_id}: no such queue file", EXIT_FAILURE)
    with handle:
        yield handle.fileno(), str(handle)


@dataclass(frozen=True)
class PostcatSettings:
    queue_directory: str


def postcat(ctx: ToolContext[PostcatSettings]) -> int:
    opts = ctx.options
    options = Options(opts.envelope, opts.header, opts.body, opts.offsets, opts.verbose > 0)
    out = sys.stdout.buffer
    damaged = False

    def show(fd: int, label: str) -> None:
        nonlocal damaged
        problem = FileView(fd, label, options, out).show()
        out.flush()
        if problem is not None:
            ctx.logger.warning("%s: input is not a valid queue file: %s", label, problem)
            damaged = True

    try:
        if not opts.files:
            with seekable(sys.stdin.fileno()) as fd:
                show(fd, "stdin")
        elif opts.queue:
            with Spool(ctx.settings.queue_directory) as spool:
                for queue_id in opts.files:
                    with open_queue_file(spool, queue_id) as (fd, label):
                        show(fd, label)
        else:
            for path in opts.files:
                with open_path(path) as fd:
                    show(fd, path)
    except BrokenPipeError:
        # The reader went away (postcat | head): nothing more to say to it.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as exc:
        raise Fatal(f"read error: {exc.strerror or exc}", EXIT_FAILURE) from None
    return EXIT_FAILURE if damaged else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "show queue file contents", common=False)
    parser.usage = USAGE
    parser.add_argument("-b", dest="body", action="store_true")
    parser.add_argument("-c", dest="config_dir", metavar="DIR")
    parser.add_argument("-e", dest="envelope", action="store_true")
    parser.add_argument("-h", dest="header", action="store_true")
    parser.add_argument("-o", dest="offsets", action="store_true")
    parser.add_argument("-q", dest="queue", action="store_true")
    parser.add_argument("-r", dest="raw", action="store_true")
    parser.add_argument("-v", dest="verbose", action="count", default=0)
    parser.add_argument("files", nargs="*", metavar="file")
    add_help_option(parser, __doc__)
    return run_tool(
        PROGRAM,
        argv,
        postcat,
        settings=PostcatSettings,
        parser=parser,
        needs_config=False,
        unexpected_exit=EXIT_FAILURE,
    )


if __name__ == "__main__":
    sys.exit(main())
