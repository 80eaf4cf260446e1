"""`python3 -m sdmail.lmtp`: the smtp delivery agent (sdmail/smtp/) in LMTP mode, as Postfix's
lmtp is its smtp program under another name: LHLO, one reply per recipient after DATA,
`lmtp_*` parameters, next hops `unix:/path` and `inet:host:port`."""
