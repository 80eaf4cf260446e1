"""virtual: final delivery to mailboxes of virtual domains (Postfix's virtual(8)).

WHAT IT DOES, in the order mail flows: trivial-rewrite routes a recipient of
`virtual_mailbox_domains` to `virtual_transport` (`virtual`); qmgr hands the agent a
request over `$socket_directory/virtual`. For each recipient, its address folded to lower
case:

1. A `Delivered-To:` header naming it bounces it: `5.4.6 mail forwarding loop for ADDRESS`.
2. `virtual_mailbox_maps` is searched for `user+ext@domain`, `user@domain`, then
   `@domain` (the extension is never copied into the result). Not found: the recipient
   bounces with `5.1.1 unknown user: "ADDRESS"`.
3. `virtual_uid_maps` and `virtual_gid_maps` are searched with the same keys (`static:5000`
   is the usual table); the uid must be at least `virtual_minimum_uid` and the gid above
   0. A missing or bad owner defers the recipient (`4.3.5 mail system configuration
   error`, with a warning that names recipient, value and table).
4. The mailbox is `$virtual_mailbox_base/RESULT`: a Maildir when RESULT ends in `/`, an
   mbox file otherwise. A child forked for the recipient drops to uid:gid (setgroups,
   setgid, setuid; agent.run_as) and writes it with core/mailstore exactly as local does:
   mbox under the `virtual_mailbox_lock` locks with a `From ` line, `Return-Path:`,
   `X-Original-To:`, `Delivered-To:`, `>From ` quoting and an empty line after; Maildir
   with the three headers, through tmp/ and new/. The success texts are Postfix's:
   `delivered to mailbox`, `delivered to maildir`.

Sizes: `virtual_mailbox_limit` caps an mbox file, and each Maildir message file; passing
it bounces (`5.2.2`), as does a full disk quota. Every other write failure defers
(4.2.0; 4.3.0 for a full or read-only file system, whose text names the unit drop-in).

THE MAILBOX STAYS UNDER THE BASE: `virtual_mailbox_base` must be an absolute path without
`..`; a table result with a `..` component is refused (a configuration error, deferred).
The child opens the base and every directory below it on the way to the mailbox one at a
time without following symbolic links (O_NOFOLLOW | O_DIRECTORY, each relative to the
one before), and hands core/mailstore the mailbox as a name inside the last directory it
holds open (`/proc/self/fd/N/NAME`), so no link, and no directory renamed meanwhile, can
lead the write elsewhere. Directories a Maildir needs are created on the way (mode 0700,
as the mailbox owner); an mbox's directory must exist, as with Postfix.

Rooms: `settings` (the parameters), `maps` (the three lookups and the mailbox path
rules), `mailbox` (what the child does as the mailbox owner), `service` (the order of
things and main).

OWNS: the decision where a virtual recipient's mail goes, and the writes into virtual
mailboxes. MUST NOT: touch the queue beyond what the agent skeleton does, act as a user in
the serving process, or write anywhere but below `virtual_mailbox_base`.

UNITS AND PRIVILEGES: `sdmail-virtual.socket` (`/run/sdmail/virtual`, SocketUser=sdmail,
SocketMode=0600, FileDescriptorName=virtual) starts `sdmail-virtual.service`, which runs
as root because it must become each mailbox owner (CAP_SETUID, CAP_SETGID), read the
mail_owner's queue file and flip its done marks (CAP_DAC_OVERRIDE); the mailbox writes
happen only in the dropped child. `ReadWritePaths=` must include `virtual_mailbox_base`
(ProtectSystem=strict elsewhere). The caller must be root or mail_owner (SO_PEERCRED).

HOSTILE INPUT: message content and headers (any bytes; only `Delivered-To:` is read),
recipient addresses (only lookup keys and log text; never part of a path), table values
(checked as above), mailbox trees owned by the mailbox owner (links, FIFOs, hard links
refused by the walk and by core/mailstore).
"""
