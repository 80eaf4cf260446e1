"""bounce: the notices that tell a sender what became of a message (Postfix's bounce(8)).

A LIBRARY, run inside qmgr: when every recipient of a message in the active queue
has a result and `bounce/QUEUEID` holds failures, qmgr calls
`notify.Notifier.send_non_delivery`, which builds an RFC 3464 non-delivery notice
(`notice.non_delivery_notice`: a multipart/report with the text for people, a
message/delivery-status part and the original or its headers) and queues it
through the cleanup library with the null sender.

OWNS the shape and text of notices, and the decision who gets one (not the null
sender; not a recipient whose DSN NOTIFY leaves out FAILURE).  It reads the
bounce log (core/bounce_log) and the message's queue file (core/spool, read
only) and removes the bounce log once the notice is queued; it never moves or
changes a queue file.  The per-message logs themselves are written by qmgr.

Not done yet: delay notices (delay_warning_time), success reports (DSN
NOTIFY=SUCCESS), postmaster copies (notify_classes bounce, 2bounce),
message/global types for SMTPUTF8 originals, bounce_template_file.

HOSTILE INPUT: reason texts from remote servers and addresses from anywhere end
up in the notice; control characters are shown as `?` and long lines folded, so
none of them can add a header or a MIME part.
"""
