"""flush: the fast-flush service, for ETRN, `postqueue -s site` and `postqueue -i queue_id`.

WHAT IT DOES.  Postfix's flush(8).  For each destination that `fast_flush_domains`
(default `$relay_domains`) makes eligible it keeps a log of the queue IDs of mail
deferred for it (logs.py, in `$queue_directory/flush/`).  qmgr sends `add SITE ID`
whenever it writes a deferral for a recipient in SITE (core/flush_proto, without
waiting).  `send_site` (smtpd's ETRN, postqueue -s, sendmail -qR) makes every
message in SITE's log that is still deferred due now and truncates the log;
`send_file` (postqueue -i, sendmail -qI) does the same for one queue ID; then qmgr's
trigger socket gets `F` (forget dead destinations: the site is up again) and `D`
(scan deferred/).  A site that is not eligible gets `deny`: Postfix's `Flush service
is not configured for destination` and ETRN's 459.  `refresh` (postqueue -f, and the
service itself at start and every 1000 s) sends logs not read for
fast_flush_refresh_time and removes empty ones older than fast_flush_purge_time.

OWNS `$queue_directory/flush/` (the one writer).  In the message queues it changes
only the time stamps of files in deferred/ (qmgr reads them as "not before"); it
never moves, rewrites or locks a queue file, so qmgr stays the one mover.

UNITS AND PRIVILEGES.  `sdmail-flush.socket` (`$socket_directory/flush`,
FileDescriptorName=flush, mode 0666: postqueue runs as any user) starts
`sdmail-flush.service` as `sdmail`, with only flush/ and deferred/ writable.  The
caller's uid comes from the kernel (SO_PEERCRED): `send_site`, `send_file` and
`refresh` are for callers authorized_flush_users lets in (root and mail_owner
always), `add` for root and mail_owner alone.  `sdmail-flush.timer` starts the
service now and then for its housekeeping.  One process serves every client
(asyncio; file work in worker threads) and exits after `max_idle` seconds without one.

HOSTILE INPUT.  A request is one frame with a bounded header and no payload; a site
must be a valid host name and a queue ID a valid queue ID before either comes near a
path (a log's name keeps only letters and digits); a client that stalls is dropped
after `ipc_timeout`.
"""
