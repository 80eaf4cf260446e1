"""The units on a booted systemd: socket activation, bursts, restarts, verification."""

from __future__ import annotations

import secrets

SMTP_SEND = """
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 25, timeout=30) as client:
    client.ehlo()
    client.mail("sender@example.org")
    client.rcpt(sys.argv[1])
    code, reply = client.data(sys.argv[2].encode())
    print(reply.decode().rsplit(" ", 1)[-1])
"""

CONNECTION_BURST = """
import socket, sys, time
count = int(sys.argv[1])
start = time.monotonic()
open_sockets = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", 25), timeout=30)
    open_sockets.append(s)
greeted = sum(1 for s in open_sockets if s.recv(3) == b"220")
for s in open_sockets:
    s.close()
print(greeted, round(time.monotonic() - start, 2))
"""


def marker() -> str:
    return "sys-" + secrets.token_hex(6)


def failed_units(box) -> list[str]:
    out = box.run(
        "systemctl", "list-units", "--state=failed", "--plain", "--no-legend", "sdmail*"
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_smtpd_socket_listens_with_no_smtpd_running_and_a_connection_starts_it(box, user):
    box.run("systemctl", "stop", "sdmail-smtpd.service")
    assert box.run("systemctl", "is-active", "sdmail-smtpd.socket").stdout.strip() == "active"
    assert (
        box.run("systemctl", "is-active", "sdmail-smtpd.service", check=False).stdout.strip()
        != "active"
    )
    text = marker()
    box.run("python3", "-c", SMTP_SEND, f"{user}@localhost", f"Subject: {text}\r\n\r\n{text}\r\n")
    assert box.run("systemctl", "is-active", "sdmail-smtpd.service").stdout.strip() == "active"
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 30)


def test_every_unit_verifies(box):
    units = box.run("bash", "-c", "ls /lib/systemd/system/sdmail*").stdout.split()
    result = box.run("systemd-analyze", "verify", *units, check=False)
    assert result.returncode == 0, result.stderr
    assert "sdmail" not in result.stderr, result.stderr


def test_two_hundred_sendmail_calls_fail_no_unit_and_all_arrive(box, user):
    text = marker()
    box.run(
        "bash",
        "-c",
        f"for i in $(seq 1 200); do printf 'Subject: b\\n\\n{text}-%s\\n' $i | sendmail {user}; done",
        timeout=600,
    )
    assert box.wait_for(f"[ $(grep -c '^{text}-' /var/mail/{user}) = 200 ]", 180), box.run(
        "bash", "-c", f"grep -c '^{text}-' /var/mail/{user}; mailq | tail -1", check=False
    ).stdout
    assert failed_units(box) == []


def test_five_hundred_smtp_connections_at_once_fail_no_unit(box):
    out = box.run("python3", "-c", CONNECTION_BURST, "500", timeout=300).stdout.split()
    assert int(out[0]) == 500, out
    assert failed_units(box) == []
    assert box.run("systemctl", "is-active", "sdmail-smtpd.socket").stdout.strip() == "active"


def test_qmgr_killed_five_times_in_a_minute_comes_back(box, user):
    for _ in range(5):
        assert box.wait_for("systemctl is-active sdmail-qmgr.service", 30)
        box.run("systemctl", "kill", "--signal=KILL", "sdmail-qmgr.service", check=False)
    assert box.wait_for("systemctl is-active sdmail-qmgr.service", 30)
    assert failed_units(box) == []
    text = marker()
    box.run("sendmail", user, input=f"Subject: {text}\n\n{text}\n")
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 60)


def test_a_part_that_could_not_start_comes_back_with_the_fixed_configuration(box, user):
    """qmgr restarted on a broken main.cf exits 78 and stays down; fixing main.cf and
    reloading sdmail brings it back, and mail flows."""
    box.run("cp", "/etc/sdmail/main.cf", "/var/tmp/main.cf.good")
    try:
        box.run("bash", "-c", "echo 'qmgr_message_active_limit = none' >> /etc/sdmail/main.cf")
        box.run("systemctl", "restart", "sdmail-qmgr.service", check=False)
        assert box.wait_for("systemctl is-failed sdmail-qmgr.service", 30)
        status = box.run(
            "systemctl", "status", "--no-pager", "-l", "sdmail-qmgr", check=False
        ).stdout
        assert "qmgr_message_active_limit" in status
    finally:
        box.run("cp", "/var/tmp/main.cf.good", "/etc/sdmail/main.cf")
    box.run("systemctl", "reload", "sdmail")
    assert box.wait_for("systemctl is-active sdmail-qmgr.service", 30)
    text = marker()
    box.run("sendmail", user, input=f"Subject: {text}\n\n{text}\n")
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 60)


def test_qmgr_journal_tells_the_queue_part_of_a_message(box, user):
    """The queue manager's own lines (from=, removed); the delivery line is the agent's,
    as Postfix's local(8) logs it."""
    text = marker()
    queue_id = box.run(
        "python3", "-c", SMTP_SEND, f"{user}@localhost", f"Subject: {text}\r\n\r\n{text}\r\n"
    ).stdout.strip()
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 30)
    assert box.wait_for(
        f"journalctl --no-pager -u sdmail-qmgr | grep -q '{queue_id}: from=<sender@example.org>, size='",
        15,
    )
    assert box.wait_for(f"journalctl --no-pager -u sdmail-qmgr | grep -q '{queue_id}: removed'", 15)
    assert box.wait_for(
        f"journalctl --no-pager -u sdmail-local | grep -q '{queue_id}: to=<{user}@localhost>.*status=sent'",
        15,
    )
