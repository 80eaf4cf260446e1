"""postcat (sdmail/postcat.py): Postfix's layout on queue files made through core/spool and the
cleanup library, against golden files in tests/data/postcat/ (times in UTC, the queue ID as
QUEUEID); damaged files, bad queue IDs and paths.  Regenerate a golden file by deleting it
and running the test once with SDMAIL_WRITE_GOLDEN=1, then read the diff."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.cleanup.api import Cleanup, Origin, Submission
from sdmail.core import qfile
from sdmail.core.config import load_config
from sdmail.core.records import (
    ClientInfo,
    DsnRet,
    Envelope,
    Notify,
    QueueName,
    Recipient,
    RewriteContext,
)
from sdmail.core.spool import Spool
from sdmail.postcat import FileView, Options, main

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "postcat"
T = 1_764_021_061  # Mon Nov 24 21:51:01 2025 UTC

ENVELOPE = Envelope(
    sender="ann@example.org",
    recipients=(
        Recipient("bob@example.net", orig_address="Bob@Example.NET", notify=Notify.FAILURE),
        Recipient("carol@example.net", orcpt="rfc822;carol@example.net", done=True),
    ),
    arrival_sec=T,
    arrival_usec=5,
    delay_warning_time=T + 4 * 3600,
    sender_fullname="Ann Example",
    ret=DsnRet.HDRS,
    envid="ENV-1",
    client=ClientInfo(
        log_client_name="localhost",
        log_client_address="127.0.0.1",
        log_client_port=51234,
        log_protocol_name="ESMTP",
        rewrite_context=RewriteContext.REMOTE,
    ),
    attributes=(("create_time", str(T)),),
)
CONTENT = (
    b"Received: from localhost (localhost [127.0.0.1])\n"
    b"\tby mail.example.test (sdmail) with ESMTP id 4jZMhz4LYyzJqxx\n"
    b"Subject: a test\n"
    b"From: Ann Example <ann@example.org>\n"
    b"\n"
    b"First line of the body.\n"
    b"From here on, the second.\n"
    b"No newline at the end"
)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[tuple[Path, Spool]]:
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path}/q\nmyhostname = mail.example.test\n"
    )
    (tmp_path / "q").mkdir()
    with Spool(tmp_path / "q") as spool:
        spool.create_directories()
        yield tmp_path, spool


def postcat(config_dir: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run main() in-process; (status, stdout, stderr)."""
    out, err = io.BytesIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    wrapper = sys.stdout = io.TextIOWrapper(out)
    sys.stderr = err
    try:
        status = main(["-c", str(config_dir), *args])
    finally:
        wrapper.flush()
        sys.stdin, sys.stdout, sys.stderr = saved
    text = out.getvalue().decode("utf-8", "surrogateescape")
    wrapper.detach()
    return status, text, err.getvalue()


def golden(name: str, text: str) -> str:
    path = GOLDEN / name
    if os.environ.get("SDMAIL_WRITE_GOLDEN") and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path.read_text()


@pytest.fixture
def stdin_fd(monkeypatch):
    """Make sys.stdin a real file holding the given bytes (postcat reads stdin's descriptor)."""

    opened = []

    def give(data: bytes) -> None:
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        opened.append(os.fdopen(read, "r"))
        monkeypatch.setattr(sys, "stdin", opened[-1])

    yield give
    for stream in opened:
        stream.close()


# --------------------------------------------------------------------------------------
# Golden files
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("all", []),
        ("envelope", ["-e"]),
        ("header", ["-h"]),
        ("body", ["-b"]),
        ("content", ["-bh"]),
        ("offsets_verbose", ["-o", "-v"]),
    ],
)
def test_a_queue_file_shown_by_queue_id_matches_its_golden_file(queue, name, flags):
    config_dir, spool = queue
    queue_id = spool.create("deferred", ENVELOPE, CONTENT).queue_id
    status, out, err = postcat(config_dir, *flags, "-q", queue_id)
    assert (status, err) == (0, "")
    assert out.replace(queue_id, "QUEUEID") == golden(
        f"{name}.golden", out.replace(queue_id, "QUEUEID")
    )


def test_a_truncated_file_shows_what_it_can_warns_and_fails(queue, stdin_fd, capsys):
    config_dir, _ = queue
    data = qfile.encode(ENVELOPE, CONTENT)
    orcpt = b"rfc822;carol@example.net"
    cut = data.index(orcpt) + 2  # in the ORCPT record of the second recipient
    stdin_fd(data[:cut])
    status = main(["-c", str(config_dir)])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == golden("truncated.golden", captured.out)
    assert captured.err == (
        "postcat: warning: stdin: input is not a valid queue file:"
        f" offset {data.index(orcpt) - 2}: record length {len(orcpt)} runs past the end of the file\n"
    )


def test_a_file_cleanup_wrote_matches_its_golden_file_once_times_are_masked(queue):
    config_dir, spool = queue
    cleanup = Cleanup(load_config(config_dir), spool)
    accepted = cleanup.submit(
        Submission(
            sender="ann@example.org",
            recipients=(Recipient("bob@example.net"),),
            origin=Origin.LOCAL,
            uid=1000,
            full_name="Ann Example",
            arrival=T,
        ),
        b"Subject: hello\n\nbody line\n",
    )
    status, out, err = postcat(config_dir, "-q", accepted.queue_id)
    assert (status, err) == (0, "")
    masked = re.sub(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", out)
    masked = re.sub(r"<\d{14}\.", "<STAMP.", masked).replace(accepted.queue_id, "QUEUEID")
    assert masked == golden("cleanup.golden", masked)


# --------------------------------------------------------------------------------------
# Layout rules
# --------------------------------------------------------------------------------------
def test_offsets_point_at_the_bytes_of_each_record_and_line(queue):
    config_dir, spool = queue
    long_content = b"Subject: big\n\n" + b"".join(b"line %07d\n" % n for n in range(250_000))
    queue_id = spool.create("hold", ENVELOPE, long_content).queue_id  # three 1 MiB segments
    data = (spool.path / "hold" / queue_id).read_bytes()
    status, out, _ = postcat(config_dir, "-o", "-b", "-q", queue_id)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 250_001
    split = 0
    for line in lines[1:]:
        offset, text = int(line[:9]), line[10:].encode()
        assert data[offset : offset + 1] == text[:1]
        # A line may run on into the next 1 MiB segment, past a record header.
        split += data[offset : offset + len(text)] != text
    assert split <= 2


def test_the_content_is_shown_byte_for_byte(queue):
    _, spool = queue
    content = b"Subject: \xff\xfe raw\n\n" + bytes(range(256)).replace(b"\n", b"") + b"\n"
    queue_id = spool.create("incoming", ENVELOPE, content).queue_id
    out = io.BytesIO()
    with spool.open("incoming", queue_id) as handle:
        assert (
            FileView(handle.fd, "x", Options(False, True, True, False, False), out).show() is None
        )
    assert out.getvalue() == content


def test_envelope_values_with_control_characters_are_shown_with_question_marks(queue):
    config_dir, spool = queue
    envelope = Envelope(
        "a\x1bb@example.org", (Recipient("x\ry@example.net"),), sender_fullname="A\nB"
    )
    queue_id = spool.create("deferred", envelope, b"\n").queue_id
    _, out, _ = postcat(config_dir, "-e", "-q", queue_id)
    assert "sender: a?b@example.org\n" in out and "recipient: x?y@example.net\n" in out
    assert "sender_fullname: A?B\n" in out


def test_queue_ids_are_found_in_every_queue(queue):
    config_dir, spool = queue
    for name in (QueueName.MAILDROP, QueueName.ACTIVE, QueueName.HOLD, QueueName.CORRUPT):
        queue_id = spool.create(name, ENVELOPE, CONTENT).queue_id
        status, out, _ = postcat(config_dir, "-e", "-q", queue_id)
        assert status == 0 and out.startswith(f"*** ENVELOPE RECORDS {name}/{queue_id} ***\n")


def test_a_path_is_shown_under_the_name_given(queue):
    config_dir, spool = queue
    queue_id = spool.create("deferred", ENVELOPE, CONTENT).queue_id
    path = str(spool.path / "deferred" / queue_id)
    status, out, _ = postcat(config_dir, "-e", path)
    assert status == 0 and out.splitlines()[0] == f"*** ENVELOPE RECORDS {path} ***"


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../etc/shadow", "ABCDEF12345", "deferred/x", ""])
def test_a_bad_queue_id_is_fatal(queue, bad):
    config_dir, _ = queue
    assert postcat(config_dir, "-q", bad) == (1, "", f"postcat: fatal: bad mail queue ID: {bad}\n")


def test_a_queue_id_in_no_queue_is_fatal(queue):
    config_dir, _ = queue
    assert postcat(config_dir, "-q", "4jZMdX68HJzJDM0") == (
        1,
        "",
        "postcat: fatal: open queue file 4jZMdX68HJzJDM0: no such queue file\n",
    )


def test_a_path_that_cannot_be_opened_is_fatal(queue, tmp_path):
    config_dir, _ = queue
    assert postcat(config_dir, str(tmp_path / "nothing")) == (
        1,
        "",
        f"postcat: fatal: open {tmp_path}/nothing: No such file or directory\n",
    )


def test_a_file_that_is_no_queue_file_shows_nothing_and_fails(queue, tmp_path):
    config_dir, _ = queue
    (tmp_path / "text").write_text("hello world\n")
    status, out, err = postcat(config_dir, str(tmp_path / "text"))
    assert (status, out) == (1, "")
    assert err == (
        f"postcat: warning: {tmp_path}/text: input is not a valid queue file:"
        " offset 0: unknown record type 104\n"
    )


def test_a_missing_main_cf_matters_only_with_q(queue):
    config_dir, spool = queue
    queue_id = spool.create("deferred", ENVELOPE, CONTENT).queue_id
    (config_dir / "main.cf").unlink()
    assert postcat(config_dir, "-e", str(spool.path / "deferred" / queue_id))[0] == 0
    status, _, err = postcat(config_dir, "-q", queue_id)
    assert status == 78 and err.startswith("postcat: fatal: ") and err.count("\n") == 1


def test_every_cut_of_a_queue_file_is_shown_with_a_warning_never_a_traceback():
    data = qfile.encode(ENVELOPE, CONTENT)
    for cut in range(len(data)):
        fd = os.memfd_create("cut")
        os.write(fd, data[:cut])
        try:
            out = io.BytesIO()
            problem = FileView(fd, "x", Options(True, True, True, True, True), out).show()
        finally:
            os.close(fd)
        assert problem, cut


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_never_raise_and_only_queue_files_pass(data, offsets):
    fd = os.memfd_create("any")
    os.write(fd, data)
    try:
        problem = FileView(fd, "x", Options(True, True, True, offsets, True), io.BytesIO()).show()
    finally:
        os.close(fd)
    try:
        qfile.decode(data)
    except qfile.CorruptQueueFile:
        assert problem
    else:
        assert problem is None


def test_a_reader_that_goes_away_gets_no_traceback(queue):
    config_dir, spool = queue
    content = b"Subject: big\n\n" + b"x" * 200 + b"\n" * 100_000
    queue_id = spool.create("deferred", ENVELOPE, content).queue_id
    command = (
        f"{sys.executable} -m sdmail.postcat -c {config_dir} -q {queue_id} | head -c 10 >/dev/null"
    )
    result = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.stderr == b""
