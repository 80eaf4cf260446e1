"""The smtp and lmtp delivery agents: one client, two modes (Postfix's smtp/ and lmtp).

In the order mail flows: qmgr sends a delivery request for a group of recipients with one
transport and next hop to `$socket_directory/smtp` (or `relay`, or `lmtp`); service.py
takes it and runs the agent skeleton (sdmail/agent.py) around delivery.py, which parses the
next hop (nexthop.py), finds the servers (servers.py, with core/dns.py), connects
(session.py), converses (protocol.py: EHLO/LHLO, STARTTLS with tls.py and, for DANE-TA,
chain.py's path validation, MAIL/RCPT/DATA with content.py and downgrade.py, replies
parsed by reply.py) and keeps clean connections for the next message to a busy
destination (cache.py). settings.py binds the `smtp_*` or `lmtp_*` parameters as one
ClientSettings.

OWNS: outgoing SMTP and LMTP connections, DNS look-ups for mail routing, the per-recipient
verdicts of remote servers. MUST NOT: touch queue files other than through the agent
skeleton (shared lock, done marks), write status logs, act as a user.

Units: sdmail-smtp.socket (FileDescriptorName=smtp) and sdmail-relay.socket
(FileDescriptorName=relay) feed sdmail-smtp.service (`python3 -m sdmail.smtp`),
sdmail-lmtp.socket feeds sdmail-lmtp.service (`python3 -m sdmail.lmtp`); User=sdmail, no
capabilities, network and the queue only. Hostile input: everything a remote server sends
(replies, EHLO keywords, certificates), DNS answers, next hops from tables.
"""
