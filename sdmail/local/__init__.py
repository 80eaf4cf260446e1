"""local: final delivery to this machine's users (Postfix's local(8)).

WHAT IT DOES, in the order mail flows: qmgr hands it one recipient per request
(local_destination_recipient_limit = 1) over `$socket_directory/local`. For each, it
checks for a forwarding loop (`Delivered-To:`), looks the local part up in alias_maps
(`user+ext`, then `user`), else reads the user's `~/.forward`, else writes the mailbox:
mailbox_command, `$home/$home_mailbox` (Maildir when it ends in `/`), or the mbox file
`$mail_spool_directory/USER`. Alias and .forward targets may be addresses (forwarded as a
new message through the cleanup service), `|command`, `/file` and `:include:/file`.
Mailboxes get `Return-Path:`, `X-Original-To:` and `Delivered-To:` on top. An unknown user
bounces (`5.1.1 unknown user: "name"`); a mailbox that cannot be written is deferred.
Rooms: `recipient` (the order of things and the expansion of targets), `destinations`
(mbox, Maildir, command), `dotforward` (forward_path, reading users' files), `forward`
(re-submission), `service` (main).

OWNS: the decision where a local recipient's mail goes, and the writes into users'
mailboxes and files. MUST NOT: touch the queue beyond what the agent skeleton does (read
the message, flip done marks under a shared lock), write into `incoming/` (forwarded
mail goes through the cleanup service), or act as a user in the serving process.

UNITS AND PRIVILEGES: `sdmail-local.socket` (`/run/sdmail/local`, SocketUser=sdmail,
mode 0600, FileDescriptorName=local) starts `sdmail-local.service`, which runs as root
because it must become any user: every read or write of a user's files, every command,
happens in a child forked for it that has dropped to that user (or default_privs, or the
owner of an alias file that root does not own) with setgroups, setgid and setuid.
Commands and files never run as root. The caller must be root or mail_owner (SO_PEERCRED).

HOSTILE INPUT: message content and headers (any bytes; only `Delivered-To:` is read),
recipient extensions and sender addresses (filtered through command_expansion_filter
before they reach a command's environment or a forward_path), users' `.forward` and
`:include:` files (read as their reader, at most 1 MiB, bad lines skipped with a
warning), mailbox paths that are symbolic links, FIFOs or hard links (refused, deferred).
"""
