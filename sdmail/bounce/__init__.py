"""bounce: the notices that tell a sender what became of a message (Postfix's bounce(8)).

A LIBRARY, run inside qmgr: when every recipient of a message in the active queue
has a result, qmgr (qmgr/finish.py) calls `notify.Notifier`: `send_non_delivery`
when `bounce/QUEUEID` holds failures, `send_trace` when `trace/QUEUEID` holds
records (`sendmail -v`/`-bv` reports, DSN NOTIFY=SUCCESS notices), `send_delay`
when the message's delay warning time has come.  Each builds an RFC 3464
multipart/report (`notice.notice`: the text for people, a message/delivery-status
part, the original or its headers) and queues it through the cleanup library
with the null sender.  notify_classes `bounce`, `2bounce` and `delay` add the
postmaster's copies, sent from double_bounce_sender.

OWNS the shape and text of notices, and the decision who gets one (not the null
sender, whose failures only the 2bounce class reports; not a recipient whose DSN
NOTIFY leaves the event out).  It reads the status logs (core/bounce_log) and
the message's queue file (core/spool, read only) and removes the bounce and
trace logs once their notice is queued; it never moves or changes a queue file.
The per-message logs themselves are written by the delivery agents and qmgr
(core/bounce_log).

A NOTIFY=SUCCESS recipient handed to a next hop that offers DSN gets no success
notice from here: the request went on with the mail (RFC 3461), and the smtp
client's outcome says so (`agent.Outcome.dsn_passed`); to one that does not, the
notice says `relayed`.

An alias or .forward that sends copies on reports `expanded`, and its copies do not
ask for success notices again.  An SMTPUTF8 original gets RFC 6533's
message/global-delivery-status, message/global and message/global-headers parts,
as Postfix sends them.

Not done yet: bounce_template_file.

HOSTILE INPUT: reason texts from remote servers and addresses from anywhere end
up in the notice; control characters are shown as `?` and long lines folded, so
none of them can add a header or a MIME part.
"""
