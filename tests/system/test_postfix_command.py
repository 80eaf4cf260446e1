"""`postfix stop|start|status|abort|flush` and fast flush on the installed package's real units.

The mail that waits is real: an alias pipes it to a command that exits 75 (EX_TEMPFAIL,
so local delivery defers it) while /etc/sdmail/flush-test-down exists.  The flag is
removed, and only a flush (minimal_backoff_time is an hour here) delivers it.  Every
test leaves the system running, as the session's other system tests expect it.
"""

from __future__ import annotations

import re
import secrets

import pytest

FLAG = "/etc/sdmail/flush-test-down"
SCRIPT = "/usr/local/bin/sdmail-flush-test"
RELAY = "relay.test"
NOT_RUNNING = "postfix: the sdmail mail system is not running\n"


@pytest.fixture
def deferring(box):
    """An alias `flushtest` whose command defers while FLAG exists; main.cf for fast flush."""
    box.run("cp", "/etc/sdmail/main.cf", "/var/tmp/main.cf.before-flush")
    box.run("cp", "/etc/aliases", "/var/tmp/aliases.before-flush")
    box.run(
        "bash",
        "-c",
        f"printf '#!/bin/sh\\ncat >/dev/null\\n[ -e {FLAG} ] && exit 75\\nexit 0\\n' > {SCRIPT}"
        f" && chmod 755 {SCRIPT} && touch {FLAG} && chmod 644 {FLAG}"
        f" && echo 'flushtest: \"|{SCRIPT}\"' >> /etc/aliases && newaliases",
    )
    for setting in (
        "minimal_backoff_time=1h",
        "maximal_backoff_time=2h",
        "queue_run_delay=1h",
        f"relay_domains={RELAY}",
        f"transport_maps=inline:{{{RELAY}=local}}",
    ):
        box.run("postconf", "-e", setting)
    box.run("systemctl", "reload", "sdmail")
    try:
        yield box
    finally:
        box.run("rm", "-f", FLAG, SCRIPT)
        box.run("cp", "/var/tmp/main.cf.before-flush", "/etc/sdmail/main.cf")
        box.run("cp", "/var/tmp/aliases.before-flush", "/etc/aliases")
        box.run("newaliases")
        ensure_running(box)
        box.run("postsuper", "-d", "ALL", check=False)


def ensure_running(box) -> None:
    if box.run("systemctl", "is-active", "sdmail", check=False).stdout.strip() != "active":
        box.run("systemctl", "start", "sdmail")
    box.run("systemctl", "reload", "sdmail", check=False)
    assert box.wait_for("systemctl is-active --quiet sdmail-qmgr.service", 60)


def postfix(box, *args: str):
    return box.run("postfix", *args, check=False)


def qmgr_pid(box) -> int:
    return int(box.run("systemctl", "show", "--property=MainPID", "--value", "sdmail-qmgr").stdout)


def queue_deferred_mail(box, recipient: str) -> str:
    """Send to RECIPIENT and wait until the message sits in deferred/; its queue ID."""
    text = "flush-" + secrets.token_hex(6)
    box.run("sendmail", recipient, input=f"Subject: {text}\n\n{text}\n")
    assert box.wait_for("ls /var/spool/sdmail/deferred | grep -q .", 60), journal(box)
    return box.run("ls", "/var/spool/sdmail/deferred").stdout.split()[0]


def sent(box, queue_id: str) -> bool:
    queue = "/var/spool/sdmail/deferred /var/spool/sdmail/active"
    return box.wait_for(
        f"journalctl --no-pager SDMAIL_QUEUE_ID={queue_id} | grep -q status=sent"
        f' && [ -z "$(find {queue} -type f)" ]',
        60,
    )


def journal(box) -> str:
    return box.run("journalctl", "--no-pager", "-n", "80", check=False).stdout


def test_status_stop_start_as_postfix_says_them(box):
    ensure_running(box)
    result = postfix(box, "status")
    assert (result.returncode, result.stderr) == (
        0,
        f"postfix: the sdmail mail system is running: PID: {qmgr_pid(box)}\n",
    )
    result = postfix(box, "start")
    assert (result.returncode, result.stderr) == (
        1,
        "postfix: fatal: the sdmail mail system is already running\n",
    )
    try:
        result = postfix(box, "stop")
        assert (result.returncode, result.stderr) == (
            0,
            "postfix: stopping the sdmail mail system\n",
        )
        for unit in ("sdmail", "sdmail-qmgr.service", "sdmail-showq.socket", "sdmail-flush.socket"):
            assert box.wait_for(f'[ "$(systemctl is-active {unit})" = inactive ]', 30), unit
        assert (postfix(box, "status").returncode, postfix(box, "status").stderr) == (
            1,
            NOT_RUNNING,
        )
        result = postfix(box, "stop")
        assert (result.returncode, result.stderr) == (
            1,
            "postfix: fatal: the sdmail mail system is not running\n",
        )
        result = postfix(box, "start")
        assert (result.returncode, result.stderr) == (
            0,
            "postfix: starting the sdmail mail system\n",
        )
        assert box.wait_for("systemctl is-active --quiet sdmail-qmgr.service", 60)
        assert postfix(box, "status").stderr == (
            f"postfix: the sdmail mail system is running: PID: {qmgr_pid(box)}\n"
        )
    finally:
        ensure_running(box)


def test_abort_kills_the_running_parts_and_stops_the_system(box):
    ensure_running(box)
    before = qmgr_pid(box)
    try:
        result = postfix(box, "abort")
        assert (result.returncode, result.stderr) == (
            0,
            "postfix: aborting the sdmail mail system\n",
        )
        assert box.run("systemctl", "is-active", "sdmail", check=False).stdout.strip() == "inactive"
        killed = box.run(
            "journalctl", "--no-pager", "-u", "sdmail-qmgr.service", "-n", "20", check=False
        ).stdout
        assert re.search(r"status=9/KILL|code=killed, status=9", killed), killed
        assert postfix(box, "status").returncode == 1
    finally:
        ensure_running(box)
    assert qmgr_pid(box) not in (0, before)


def test_postfix_flush_delivers_deferred_mail_now(deferring):
    box = deferring
    queue_id = queue_deferred_mail(box, "flushtest")
    box.run("rm", "-f", FLAG)
    result = postfix(box, "flush")
    assert (result.returncode, result.stderr) == (0, "")
    assert sent(box, queue_id), journal(box)


def test_postfix_flush_with_the_system_stopped_says_it_is_down(box):
    ensure_running(box)
    try:
        box.run("postfix", "stop")
        result = postfix(box, "flush")
        assert result.returncode == 69
        assert result.stderr == "postqueue: fatal: Cannot flush mail queue - mail system is down\n"
    finally:
        ensure_running(box)


def test_postqueue_s_runs_the_socket_activated_flush_unit(deferring, user):
    box = deferring
    queue_id = queue_deferred_mail(box, f"flushtest@{RELAY}")
    assert box.wait_for(f"grep -qx {queue_id} /var/spool/sdmail/flush/relay_test", 30), journal(box)
    box.run("rm", "-f", FLAG)
    result = box.run("postqueue", "-s", RELAY, user=user, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert sent(box, queue_id), journal(box)
    assert box.run("stat", "-c", "%U %a", "/var/spool/sdmail/flush/relay_test").stdout == (
        "sdmail 600\n"
    )
    refused = box.run("postqueue", "-s", "elsewhere.test", user=user, check=False)
    assert (refused.returncode, refused.stderr) == (
        69,
        'postqueue: fatal: Flush service is not configured for destination "elsewhere.test"\n',
    )


def test_etrn_on_port_25_runs_the_flush_unit(deferring):
    box = deferring
    queue_id = queue_deferred_mail(box, f"flushtest@{RELAY}")
    assert box.wait_for(f"grep -qx {queue_id} /var/spool/sdmail/flush/relay_test", 30), journal(box)
    box.run("rm", "-f", FLAG)
    client = (
        "import smtplib\n"
        "with smtplib.SMTP('127.0.0.1', 25) as c:\n"
        "    c.ehlo('client.example')\n"
        f"    print(*c.docmd('ETRN', '{RELAY}'))\n"
        "    print(*c.docmd('ETRN', 'elsewhere.test'))\n"
    )
    replies = box.run("python3", "-c", client).stdout
    assert replies == "250 b'Queuing started'\n459 b'<elsewhere.test>: service unavailable'\n"
    assert sent(box, queue_id), journal(box)


def test_postqueue_i_through_the_flush_unit(deferring):
    box = deferring
    queue_id = queue_deferred_mail(box, "flushtest")
    box.run("rm", "-f", FLAG)
    result = box.run("postqueue", "-i", queue_id, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert sent(box, queue_id), journal(box)


def test_the_flush_unit_is_sandboxed(box):
    exposure = box.run("systemd-analyze", "security", "sdmail-flush.service", check=False).stdout
    match = re.search(r"Overall exposure level for sdmail-flush.service: (\d+\.\d+)", exposure)
    assert match, exposure
    assert float(match.group(1)) <= 2.0, exposure
    socket_mode = box.run("stat", "-c", "%a", "/run/sdmail/flush").stdout.strip()
    assert socket_mode == "666"
