"""smtpd: mail from the network (Postfix's smtpd(8)), on aiosmtpd, started by systemd.

WHAT IT DOES, in the order mail flows: systemd passes the listening sockets
(`sdmail-smtpd.socket` port 25, `sdmail-submission.socket` port 587, each with its
`FileDescriptorName=`; Accept=no). One asyncio process serves every client of every
listener: it greets with `220 $smtpd_banner`, holds the dialogue (HELO/EHLO, MAIL, RCPT,
DATA, BDAT, RSET, NOOP, QUIT, VRFY, HELP; PIPELINING, SIZE, VRFY, ENHANCEDSTATUSCODES,
8BITMIME, DSN, SMTPUTF8, CHUNKING), applies Postfix's restrictions at each stage, hands each
message to the cleanup library (in a worker thread, so the event loop keeps serving), and
answers `250 2.0.0 Ok: queued as ID` once the queue file is durable; then it wakes qmgr.
It exits after `max_idle` seconds without a client, or after `max_use` connections as soon
as no session is left; it never stops accepting while it runs. Without LISTEN_FDS it
listens where `-l [NAME=]HOST:PORT` says (tests, running by hand).

STARTTLS (tls.py) is offered with smtpd_tls_security_level = may or encrypt when the
certificate and key load; encrypt refuses MAIL and VRFY before it. AUTH PLAIN and LOGIN
(sasl.py) are offered with smtpd_sasl_auth_enable = yes (after STARTTLS with
smtpd_tls_auth_only or encrypt) and checked by Dovecot's auth socket or a table of hashes
(passwords.py); a logged-in client passes permit_sasl_authenticated and meets
smtpd_sender_login_maps. DNS (core/dns.py's resolver, one per process, bridged to the worker
threads by dnsbl.py) serves the DNS blocklists and reject_unknown_*_domain. check_policy_service
(policy.py) asks policy servers over UNIX or TCP sockets, reusing their connections.

ROOMS: `session.py` (the dialogue, one method per verb returning a Reply), `checks.py`
(restrictions and recipient validation), `replies.py` (every reply text), `tls.py` (a
listener's TLS context and level), `sasl.py` (AUTH exchanges and backends), `passwords.py`
(SHA-crypt hashes), `dnsbl.py` (DNS from worker threads, and the DNS blocklists),
`policy.py` (policy delegation: the protocol and its connections), `listeners.py`
(per-listener configuration: `-o LISTENER/name=value`), `server.py` (the aiosmtpd subclass
and every override of aiosmtpd's internals, in one place).

OWNS the SMTP conversation and its decisions: who may relay, which recipients exist,
the limits of a session. It writes no file itself: the queue file is cleanup's (in
`incoming/`, through core/spool), the log lines go to the journal.

MUST NOT: relay for a client that is not trusted (mynetworks, SASL) to a
destination that is not ours; acknowledge a message before its queue file is durable;
queue anything of a message whose client vanished or that broke a limit; import another
component than the libraries it runs in-process (cleanup, trivial-rewrite).

UNITS AND PRIVILEGES: `sdmail-smtpd.service` runs as user `sdmail`, with the sockets of
its socket units; per-listener settings come as `-o submission/name=value` in the unit's
ExecStart (listeners.py).

HOSTILE INPUT: everything a client sends. Command lines of any length (cut at
line_length_limit, as Postfix does), NUL and 8-bit bytes, addresses in every relay
disguise, unknown ESMTP parameters, pipelining without PIPELINING, input before the
greeting, message content with bare CR/LF and lone dots (never an early end of DATA:
CVE-2024-27305), lines of megabytes (kept whole), connections that vanish or stall in
the middle of a message (nothing queued), thousands of recipients, many connections.
Each gets Postfix's reply with an enhanced status code; an error in one session never
ends the process.

HOSTILE PEERS: a policy server that is down, slow, hangs up or answers garbage costs a
session at most try_limit x (timeout + retry_delay) seconds and gives the default action.

ETRN (RFC 1985) asks the flush service (core/flush_proto) to deliver the mail deferred for
a site in fast_flush_domains, after HELO/EHLO, outside a mail transaction, past the waiting
client and HELO restrictions and smtpd_etrn_restrictions; Postfix's replies (250 Queuing
started, 459 <site>: service unavailable, 458 Unable to queue messages, 500/501 syntax).

NOT YET: a few Postfix restrictions (checks._NOT_YET: skipped with a warning),
and the key-exchange part of smtpd_tls_received_header's comment (Python's ssl does not
tell the key exchange or the server signature).
"""
