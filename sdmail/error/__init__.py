"""error: delivery that bounces every recipient, or as `retry` defers it (Postfix's error(8)).

WHAT IT DOES: qmgr hands it the recipients routed to the `error` transport (a
transport_maps entry such as `old.example error:5.1.1 mailbox moved`) or to the `retry`
transport (`busy.example retry:4.4.5 try again tomorrow`), the next hop being the reason.
Run as `error` it bounces each recipient with that reason, run as `retry` it defers each;
`relay=none` in the log, done marks for the bounced (the skeleton's). A reason that starts
with an enhanced status code uses it (`5.1.1 mailbox moved` -> dsn=5.1.1, `mailbox
moved`); otherwise the code is 5.0.0 (error) or 4.0.0 (retry); a code of the wrong class
is ignored with a warning, as Postfix's bounce_append/defer_append ignore it.

Which one a process is comes from its service name, `-n error` (the default) or `-n
retry`, as Postfix's error program tells its two master.cf services apart; any other name
is a usage error.

OWNS: nothing but that decision. MUST NOT: deliver, write anything but the done marks, or
act as any user.

UNITS AND PRIVILEGES: `sdmail-error.socket` (`/run/sdmail/error`, FileDescriptorName=error)
starts `sdmail-error.service` (`python3 -m sdmail.error -n error`), and
`sdmail-retry.socket` (`/run/sdmail/retry`, FileDescriptorName=retry) starts
`sdmail-retry.service` (`python3 -m sdmail.error -n retry`); both SocketUser=sdmail,
SocketMode=0600, and the services run as `sdmail` with no capabilities. The caller must be
root or mail_owner (SO_PEERCRED, in the skeleton).

HOSTILE INPUT: none of its own; the reason comes from the administrator's tables through
qmgr, and is only logged and returned (the log line prints control characters as `?`).
"""
