"""discard: delivery that throws mail away and says it was sent (Postfix's discard(8)).

WHAT IT DOES: qmgr hands it the recipients routed to the `discard` transport (a
transport_maps entry such as `spam.example discard:silently dropped`) over
`$socket_directory/discard`. Every recipient is logged `status=sent` with `relay=none` and
the next hop as the reason (`discarded` when the next hop is empty), marked done in the
queue file by the agent skeleton, and reported sent to qmgr; nothing is delivered
anywhere. A next hop that starts with an enhanced status code (`2.0.0 text`) gives that
code; a code of another class than 2 is ignored with a warning, as Postfix ignores it.

OWNS: nothing but that decision. MUST NOT: deliver, write anything but the done marks (the
skeleton's), or act as any user.

UNITS AND PRIVILEGES: `sdmail-discard.socket` (`/run/sdmail/discard`, SocketUser=sdmail,
SocketMode=0600, FileDescriptorName=discard) starts `sdmail-discard.service`, which runs as
`sdmail` with no capabilities: it reads the queue file and flips done marks, both the
mail_owner's. The caller must be root or mail_owner (SO_PEERCRED, in the skeleton).

HOSTILE INPUT: none of its own; the next hop comes from the administrator's tables through
qmgr, and is only logged (the log line prints control characters as `?`).
"""
