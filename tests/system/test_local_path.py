"""The installed package on a booted systemd: units, the local mail path, reload, restart, logs."""

from __future__ import annotations

import json
import secrets


def marker() -> str:
    return "sys-" + secrets.token_hex(6)


def send_as(box, sender: str, recipient: str, text: str) -> None:
    box.run("sendmail", recipient, user=sender, input=f"Subject: {text}\n\n{text}\n")


def test_sdmail_is_active_and_its_sockets_listen(box):
    assert box.run("systemctl", "is-active", "sdmail").stdout.strip() == "active"
    for unit in ("postdrop", "cleanup", "showq", "local", "qmgr"):
        state = box.run("systemctl", "is-active", f"sdmail-{unit}.socket", check=False)
        assert state.stdout.strip() == "active", unit
    assert box.run("systemctl", "is-active", "sdmail-pickup.path").stdout.strip() == "active"


def test_a_users_sendmail_reaches_another_users_mbox(box, user):
    sender = box.run(
        "bash", "-c", "id alice >/dev/null 2>&1 || useradd -m alice; echo alice"
    ).stdout.strip()
    text = marker()
    send_as(box, sender, user, text)
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 30), box.run(
        "journalctl", "--no-pager", "-n", "60", check=False
    ).stdout


def test_reload_switches_to_maildir_without_losing_mail(box, user):
    first, second = marker(), marker()
    send_as(box, "root", user, first)
    assert box.wait_for(f"grep -q {first} /var/mail/{user}", 30)
    box.run("postconf", "-e", "home_mailbox=Maildir/")
    try:
        box.run("systemctl", "reload", "sdmail")
        send_as(box, "root", user, second)
        assert box.wait_for(f"grep -rqs {second} /home/{user}/Maildir/new", 30)
    finally:
        box.run("postconf", "-X", "home_mailbox")
        box.run("systemctl", "reload", "sdmail")


def test_broken_main_cf_fails_the_reload_naming_file_and_line(box):
    box.run("cp", "/etc/sdmail/main.cf", "/var/tmp/main.cf.good")
    try:
        box.run("bash", "-c", "echo 'max_use = lots' >> /etc/sdmail/main.cf")
        assert box.run("systemctl", "reload", "sdmail", check=False).returncode != 0
        status = box.run("systemctl", "status", "--no-pager", "-l", "sdmail", check=False).stdout
        assert "main.cf, line" in status and "max_use" in status
    finally:
        box.run("cp", "/var/tmp/main.cf.good", "/etc/sdmail/main.cf")
        box.run("systemctl", "reload", "sdmail", check=False)
        box.run("systemctl", "reset-failed", "sdmail", check=False)


def test_mail_submitted_while_stopped_is_delivered_after_start(box, user):
    text = marker()
    box.run("systemctl", "stop", "sdmail")
    try:
        send_as(box, "root", user, text)
        assert box.run("bash", "-c", "ls /var/spool/sdmail/maildrop | wc -l").stdout.strip() != "0"
    finally:
        box.run("systemctl", "start", "sdmail")
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 60)


def test_killed_qmgr_is_restarted_and_mail_still_flows(box, user):
    box.run("systemctl", "kill", "--signal=KILL", "sdmail-qmgr.service", check=False)
    assert box.wait_for("systemctl is-active sdmail-qmgr.service", 30)
    text = marker()
    send_as(box, "root", user, text)
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 30)


def test_journal_has_the_delivery_line_and_follows_one_message_by_queue_id(box, user):
    text = marker()
    send_as(box, "root", user, text)
    assert box.wait_for(f"grep -q {text} /var/mail/{user}", 30)
    assert box.wait_for(
        f"journalctl --no-pager -u sdmail-local.service | grep -q 'to=<{user}@.*status=sent'", 15
    )
    raw = box.run(
        "journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=sdmail/pickup"
    ).stdout
    queue_id = json.loads(raw.splitlines()[-1])["SDMAIL_QUEUE_ID"]
    followed = box.run(
        "journalctl", "--no-pager", "-o", "json", f"SDMAIL_QUEUE_ID={queue_id}"
    ).stdout
    components = {json.loads(line).get("SDMAIL_COMPONENT") for line in followed.splitlines()}
    assert {"pickup", "qmgr", "local"} <= components, components


def test_reinstalling_over_a_running_system_keeps_queued_mail(box, user):
    """A message waiting in the queue (here: put on hold while qmgr was stopped) is still
    there after `apt-get install --reinstall` of the package over the running system."""
    held = marker()
    # Its trigger socket would start it again at the first wake-up: stop both.
    box.run("systemctl", "stop", "sdmail-qmgr.socket", "sdmail-qmgr.service", "sdmail-qmgr.timer")
    try:
        send_as(box, "root", user, held)
        assert box.wait_for("postqueue -j | grep -q incoming", 30)
        queue_id = json.loads(box.run("postqueue", "-j").stdout.splitlines()[0])["queue_id"]
        box.run("postsuper", "-h", queue_id)
        box.run(
            "bash",
            "-c",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall "
            "/var/tmp/sdbox-pkgs/sdmail_*.deb",
            timeout=600,
        )
        assert box.run("systemctl", "is-active", "sdmail").stdout.strip() == "active"
        assert f"{queue_id}!" in box.run("postqueue", "-p").stdout
    finally:
        box.run("systemctl", "start", "sdmail.service", "sdmail-qmgr.socket", "sdmail-qmgr.timer")
        box.run("systemctl", "start", "sdmail-qmgr.service", check=False)
    box.run("postsuper", "-H", queue_id)
    assert box.wait_for(f"grep -q {held} /var/mail/{user}", 60)
