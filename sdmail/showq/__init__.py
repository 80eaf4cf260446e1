"""showq: the queue listing for `mailq` and `postqueue -p/-j`, for any local user.

WHAT IT DOES.  Queue files are readable by sdmail alone, so a user's postqueue asks this
service.  For each connection on its socket it learns the caller's uid from the kernel
(SO_PEERCRED), checks it against `authorized_mailq_users` (root and `mail_owner` are
always allowed; a refused caller gets Postfix's `User NAME(UID) is not allowed to view
the mail queue`), then streams the queue as core/showq_proto entries: maildrop, active,
incoming, deferred, hold, one message at a time, read with core/showq_proto.scan_queue
(envelopes through core/qfile, delay reasons from the defer logs through
core/bounce_log).  A file it cannot read is skipped with a warning in the log, never
fatal.  `service` holds the accept loop.

OWNS nothing on disk: it reads the message queues and the defer logs and MUST NOT
write, move or lock anything in the queue.

UNITS AND PRIVILEGES.  `sdmail-showq.socket` (`$socket_directory/showq`,
FileDescriptorName=showq, mode 0666: any user may connect) starts
`sdmail-showq.service`, which runs as `sdmail` with the queue read-only.  One process
serves clients in threads (at most MAX_CLIENTS at once, so a client that never reads
cannot stop the others), exits after `max_idle` seconds without a client and after
`max_use` clients (as Postfix's showq), and systemd starts it again on the next
connection.

HOSTILE INPUT.  Any local user can connect and send anything: the request is one frame
with a bounded header and no payload, anything else is answered with nothing; the
caller's identity never comes from the request; a client that stalls is dropped after
`ipc_timeout`.  Queue files and defer logs are parsed by the core codecs, which refuse
what they cannot read.
"""
