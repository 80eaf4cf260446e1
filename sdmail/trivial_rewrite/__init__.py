"""trivial-rewrite, as a library: what an address means and where it goes.

Postfix runs trivial-rewrite as a daemon that cleanup, smtpd and qmgr ask; sdmail
links it into them instead (no hand-off on the hot path).  It owns three decisions
and nothing on disk:

- `rewrite`: an address in standard `user@domain` form (source routes, bang paths,
  the percent hack, $myorigin and $mydomain appended), in local or remote context;
- `resolve`: an address's class (local, virtual alias, virtual mailbox, relay,
  default), its transport and next hop, the final recipient, and the ROUTED and
  ERROR flags that relay control relies on;
- `interfaces`: which IP addresses are this machine's, for `user@[ip]` mail.

It reads main.cf only through settings bound from a Config, and tables only
through sdmail.core.tables; it never touches the queue.
"""
