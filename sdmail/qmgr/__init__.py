"""qmgr: the queue manager, the one long-lived process of the mail system (Postfix's qmgr(8)).

WHAT IT DOES, in the order mail flows: it recovers what a crash left in active/
(back to incoming/); watches incoming/ and deferred/ (inotify, the trigger
socket, timers); takes ready files into active/ within qmgr_message_active_limit
(intake.py); resolves each recipient to a transport and next hop with
trivial-rewrite; queues one delivery request per (transport, next hop) and
batch of recipients, and hands them out with per-destination concurrency and
round robin (schedule.py) to the agents' sockets (dispatch.py); writes what the
agents answer into the defer and bounce logs (message.py); and when a message
has no recipient left waiting, expires it, sends its non-delivery notice
(sdmail/bounce), defers it with backoff or removes it (finish.py).  service.py
ties these together in one asyncio loop; scan.py, watch.py and triggers.py are
its wake-ups.

OWNS the moves between incoming/, active/ and deferred/ (and into corrupt/ for
a file it cannot read), the time stamps of deferred files (their retry time),
the defer/ and bounce/ logs, and the decision when a message is retried,
bounced, expired or removed.  The exclusive lock it takes on a file it reads
is what keeps it away from a file an agent of an earlier qmgr still works on.

MUST NOT: deliver (agents do; qmgr never writes a done mark except for
recipients it settles itself: double-bounce discards, the error transport,
expiry), write incoming/ (only cleanup does: notices go through the cleanup
library), or trust a queue file (a bad one goes to corrupt/, and the daemon
goes on).

UNITS AND PRIVILEGES: `sdmail-qmgr.service`, Type=notify, as user `sdmail`;
its public trigger socket `$socket_directory/qmgr` comes from
`sdmail-qmgr.socket` (FileDescriptorName=qmgr).  `python3 -m sdmail.qmgr`.

HOSTILE INPUT: trigger bytes from any local user (flush requests are checked
against authorized_flush_users by SO_PEERCRED; wake-ups are harmless), and
queue files and agent answers, which are parsed by the core codecs and never
trusted to name a path.
"""
