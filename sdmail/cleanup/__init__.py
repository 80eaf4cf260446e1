"""cleanup: the one gate into the queue (Postfix's cleanup(8)), as a library.

`api.Cleanup.submit()` takes a message from smtpd, pickup, a delivery agent that
re-submits, or sdmail's own notices, and either writes it durably into
`incoming/` and returns its queue ID, or refuses it with Postfix's reply.
The rooms: `content` (lines, header section, body, for any input), `headers`
(what cleanup adds or drops), `envelope` (canonical mapping, virtual aliases),
`api` (the order of it all, limits, the queue file).
"""
