"""pickup: locally submitted mail, from maildrop/ through cleanup into incoming/.

WHAT IT DOES, in the order mail flows (Postfix's pickup(8)): sendmail hands a
message to the postdrop service, which writes it as one queue file into
maildrop/ (maildrop.py says what that file holds). pickup reads each such file
without following links, turns it into a cleanup Submission (origin local, the
submitter's uid and full name, `-t`, the DSN fields), and submits it with the
cleanup library in-process (pickup runs as the mail owner, as cleanup does):
cleanup rewrites the sender and recipients, adds Received: `from userid N`,
Message-Id:, Date: and From:, and writes incoming/NEWID durably. Then pickup
logs `NEWID: uid=N from=<sender>`, removes the maildrop file and wakes qmgr
(`$socket_directory/qmgr`, W; a qmgr that does not answer only delays mail).
drain.py decides the fate of each file; service.py watches maildrop/ with
inotify, drains it, and decides when to exit.

OWNS reading and emptying maildrop/, and moving the files there it cannot use
to corrupt/. It writes incoming/ (and hold/) only through the cleanup library.

MUST NOT touch the other queues, nor bounce anything itself: mail cleanup
refuses for good (5xx) goes to corrupt/ with a warning until sdmail has a bounce
path for local mail (Postfix returns it to the sender).

UNITS AND PRIVILEGES: `sdmail-pickup.service` runs `python3 -m sdmail.pickup`
as the mail owner, started by `sdmail-pickup.path` (DirectoryNotEmpty on
maildrop/) and by a 60 s timer; StartLimitIntervalSec=0. No listening socket.
It exits after max_idle with maildrop/ empty.

HOSTILE INPUT: whatever is in maildrop/ — a file cut short by a crash, garbage,
a symbolic link, a FIFO, a directory, a hard link, a file of an unexpected owner
or mode. None of them can stop or hang pickup or make it spin: each is queued,
set aside in corrupt/ (or removed) with a warning, or left for a retry.
"""
