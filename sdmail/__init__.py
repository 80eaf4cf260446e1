"""sdmail: a mail transfer agent built like Postfix, with systemd as its master.

The package is laid out as Postfix's source tree is: `core/` is Postfix's
`global/` (everything every component shares, written once), and each
component (cleanup, trivial_rewrite, and later smtpd, pickup, qmgr, the
delivery agents) is a package of its own; the administrator's tools
(postconf, postmap, postalias, ...) are single modules at the top.
"""

__version__ = "0.1.0"
