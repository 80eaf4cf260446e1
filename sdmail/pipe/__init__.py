"""pipe: delivery to a command the administrator defines (Postfix's pipe(8)).

WHAT IT DOES, in the order mail flows: qmgr sends the recipients routed to a pipe
transport NAME (by transport_maps, mailbox_transport, virtual_transport, ...) to
`$socket_directory/NAME`, where `python3 -m sdmail.pipe -n NAME` serves them. For each
request it reads NAME's definition, checks it, and runs its command once, as the
definition's `user=`, with the message on stdin and `$name` macros expanded into its
arguments without a shell; the command's exit status says sent, deferred or bounced for
every recipient of the request (see `service` for the order of checks, `macros` for the
arguments, `content` for what stdin holds, `definition` for the file).

WHERE A TRANSPORT IS DEFINED: sdmail has no master.cf. A pipe transport is one file,
`$config_directory/pipe.d/NAME.conf` (`/etc/sdmail/pipe.d/NAME.conf`), holding exactly the
attributes that follow `pipe` in Postfix's master.cf entry:

    # master.cf:  maildrop  unix  -  n  n  -  -  pipe
    #               flags=DRhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
    # becomes /etc/sdmail/pipe.d/maildrop.conf:
    flags=DRhu user=vmail
    argv=/usr/bin/maildrop -d ${recipient}

The file is read at every delivery, never copied into queued mail: mail deferred by a
mistake in it (4.3.5, with a warning naming file and line) goes out once the file is
fixed, with no restart. Per-transport limits stay in main.cf under Postfix's names:
`NAME_destination_recipient_limit = 1` (needed by the `D` and `O` flags),
`NAME_destination_concurrency_limit`, `NAME_time_limit` (else command_time_limit).

THE ADMINISTRATOR'S STEPS for a new transport NAME:

    1. write /etc/sdmail/pipe.d/NAME.conf (above);
    2. systemctl enable --now sdmail-pipe@NAME.socket
       (the template socket listens on /run/sdmail/NAME and starts sdmail-pipe@NAME.service,
       which runs `python3 -m sdmail.pipe -n NAME`);
    3. route mail to it in main.cf: `transport_maps = hash:/etc/sdmail/transport` with
       `example.com NAME:` (then postmap), or `mailbox_transport = NAME`, and for D/O
       flags `NAME_destination_recipient_limit = 1`; then `systemctl reload sdmail`.
    A command that needs more than the unit allows (a path to write, a network family) is
    given it with `systemctl edit sdmail-pipe@NAME.service`.

OWNS: pipe transport definitions, the expansion of a command's arguments, the shape of the
message on its stdin, and running it as `user=`. MUST NOT: run a command as root, as the
mail_owner or with group 0 (refused), pass anything through a shell, touch the queue
beyond what the agent skeleton does, or act as a user in the serving process.

UNITS AND PRIVILEGES: `sdmail-pipe@.socket` (ListenStream=/run/sdmail/%i,
FileDescriptorName=%i, SocketUser=sdmail, SocketMode=0600) and `sdmail-pipe@.service`
(ExecStart=/usr/bin/python3 -m sdmail.pipe -n %i). The service starts as root, because it
must become `user=` (CAP_SETUID, CAP_SETGID) and read and mark the mail_owner's queue file
(CAP_DAC_OVERRIDE); the command runs only in a child that dropped to `user=` for good
(setgroups, setgid, setuid), in its own session, killed with it at the time limit. The
caller must be root or mail_owner (SO_PEERCRED).

HOSTILE INPUT: addresses and client data in macros (substituted as single arguments,
never re-parsed, never given to a shell; a NUL refuses the delivery), message content
(only `Delivered-To:` is read, for the `D` loop check), command output (at most 2 KiB
kept; control characters made printable before it reaches a log line or a notice), and
the definition file (read at most 64 KiB, every problem reported with its line).
"""
