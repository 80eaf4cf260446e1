"""What the smtp agent reports for the sender: a `sendmail -bv` probe asks the server
about each recipient (MAIL, RCPT) and ends with RSET, never sending the message; a
NOTIFY=SUCCESS recipient is traced as `relayed` unless the server took the DSN request.

The test plays qmgr (tests/peers/qmgr_side.py) against the real `python3 -m sdmail.smtp`
and a scriptable SMTP server on loopback.
"""

from __future__ import annotations

import dataclasses

import pytest

from sdmail.core import bounce_log
from sdmail.core.records import Notify, QueueName, Recipient, TraceFlag
from tests.peers.qmgr_side import ask, done_marks, log_lines, queue_message
from tests.peers.smtp_sink import SmtpSink


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_probe_asks_about_each_recipient_and_sends_nothing(mailsys, pipelining) -> None:
    ehlo = ("PIPELINING", "8BITMIME") if pipelining else ("8BITMIME",)
    rcpt = {
        "gone@example.test": "550 5.1.1 <gone@example.test>: User unknown",
        "busy@example.test": "451 4.3.0 <busy@example.test>: try again later",
    }
    with SmtpSink(rcpt=rcpt, ehlo=ehlo) as sink:
        mailsys.write_main_cf()
        mailsys.start("smtp", sockets=("smtp", "relay"), mode=0o666)
        queued = queue_message(
            mailsys,
            ["bob@example.test", "gone@example.test", "busy@example.test"],
            nexthop=f"[127.0.0.1]:{sink.port}",
            envelope_changes={"trace_flags": int(TraceFlag.VERIFY)},
        )
        request = dataclasses.replace(queued, trace_flags=int(TraceFlag.VERIFY))
        result = ask(mailsys, request)
        verbs = [command.split(" ", 1)[0].upper() for command in sink.commands]
    assert [(r.status, r.dsn) for r in result.recipients] == [
        ("sent", "2.1.5"),  # the RCPT reply
        ("bounced", "5.1.1"),
        ("deferred", "4.3.0"),
    ]
    assert "DATA" not in verbs and "BDAT" not in verbs
    # (the connection may stay open for the next request: QUIT comes when it is closed)
    assert verbs[verbs.index("MAIL") :][:5] == ["MAIL", "RCPT", "RCPT", "RCPT", "RSET"]
    assert sink.messages == []
    # A probe finishes every recipient: qmgr reports the answers and removes the file.
    assert done_marks(mailsys, request.queue_id) == [True, True, True]
    lines = "\n".join(log_lines(mailsys, "smtp", request.queue_id))
    assert "to=<bob@example.test>" in lines and "status=deliverable" in lines
    assert "status=undeliverable" in lines


@pytest.mark.parametrize("server_takes_dsn", [True, False])
def test_notify_success_is_left_to_a_server_that_takes_dsn(mailsys, server_takes_dsn) -> None:
    ehlo = ("PIPELINING", "8BITMIME", "DSN") if server_takes_dsn else ("PIPELINING", "8BITMIME")
    with SmtpSink(ehlo=ehlo) as sink:
        mailsys.write_main_cf()
        mailsys.start("smtp", sockets=("smtp", "relay"), mode=0o666)
        request = queue_message(
            mailsys,
            [Recipient("bob@example.test", notify=Notify.SUCCESS), "carol@example.test"],
            nexthop=f"[127.0.0.1]:{sink.port}",
        )
        result = ask(mailsys, request)
        rcpt_lines = list(sink.messages[0].rcpt_to)
    assert [r.status for r in result.recipients] == ["sent", "sent"]
    traced = bounce_log.read(mailsys.queue_dir, QueueName.TRACE, request.queue_id)
    if server_takes_dsn:
        assert "NOTIFY=SUCCESS" in rcpt_lines[0]
        assert traced == []
    else:
        assert [(r.address, r.action) for r in traced] == [("bob@example.test", "relayed")]
