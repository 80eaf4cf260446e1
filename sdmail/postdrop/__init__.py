"""postdrop: the door of local submission, from `sendmail` to one file in `maildrop/`.

WHAT IT DOES, in the order mail flows.  `sendmail` (any user) connects to the
postdrop socket (`$socket_directory/postdrop`, `sdmail-postdrop.socket`, mode
0666) and sends one frame (core/ipc): a `core.mail_stream.SubmitRequest` header
and the message content as payload.  postdrop learns WHO submits from the kernel
(SO_PEERCRED: the uid; the login name from the password file), never from the
request, and then, as Postfix's postdrop does:

  1. refuses a user not in `authorized_submit_users` (`User NAME(UID) is not
     allowed to submit mail`; a uid without a password entry is `unknown`);
  2. decides the envelope sender: the request's `sender`, or the login name when
     it is None (Postfix's sendmail sends the login name; cleanup completes it
     with @$myorigin); no login name and no sender is refused;
  3. checks that sender against `local_login_sender_maps` (Postfix 3.6): the
     tables are searched by login name (`uid:N` without a password entry) and give
     sender patterns: `*` any, `<>` the null sender, `@domain` any address in that
     domain, else the address itself, compared without case and without its
     extension (`recipient_delimiter`);
  4. validates the sender and recipients (internal form, core/address): a bad one
     is refused with 5.1.7 (sender) or 5.1.3 (recipient); a message without
     recipients is refused 5.1.0 with Postfix's sendmail texts (`Recipient
     addresses must be specified on the command line or via the -t option`, or
     with -t and no To:/Cc:/Bcc: address in the header `No recipient addresses
     found in message header`); content over `message_size_limit` is refused
     552 5.3.4;
  5. writes ONE file into `maildrop/` with core/spool (temporary name, fsync,
     rename, directory fsync) and only then answers `accepted(queue_id)`.  A full
     disk or any write error answers 451 4.3.0 and leaves nothing in maildrop/.

THE MAILDROP FILE (what pickup reads; core/qfile's format, the queue ID is the
file name):
  - `Envelope.sender`: the envelope sender in internal form ("" = null sender),
    as the user gave it with -f or their login name, not yet rewritten;
  - `Envelope.recipients`: the command-line recipients (internal form), each
    with the DSN NOTIFY flags of `sendmail -N` and an ORCPT when one was given;
  - `arrival_sec`/`arrival_usec`: when postdrop accepted the message;
  - `sender_fullname`: `sendmail -F`, else $NAME, else the GECOS name of the
    submitting user (None when there is none);
  - `ret`, `envid`, `body_type`, `smtputf8`: `sendmail -R`, `-V`, `-B`, SMTPUTF8;
  - `client.rewrite_context`: `local`, or `remote` for `sendmail -G`;
    `client.log_message_origin` is `local`;
  - `attributes`: `("uid", "1000")` always — the submitter's uid as the kernel
    reported it (pickup logs `uid=1000`, cleanup writes `from userid 1000`); and
    `("extract_recipients", "yes")` for `sendmail -t` (cleanup takes recipients
    from To:, Cc:, Bcc: and drops Bcc:); no other attribute is written.

OWNS the files in `maildrop/` (it is their only writer) and the decision whether a
local user's message is queued.  MUST NOT touch any other queue directory, and
never reads back what it wrote: pickup owns the files once they are renamed.

UNITS AND PRIVILEGES: `sdmail-postdrop.service` runs as `sdmail` with the socket
from `sdmail-postdrop.socket` (FileDescriptorName=postdrop); `maildrop/` is mode
0700 and each file 0600, so no user can read, replace or remove another's
submission.  The socket is not part of `sdmail.service`: mail submitted while
sdmail is stopped waits in maildrop/.  It serves many connections in one
process and exits after `max_idle` seconds without one (not after `max_use`:
unlike a Postfix daemon it has no per-use state, and exiting would only cost
the next sendmail a start-up).

HOSTILE INPUT: any local user can connect and send any bytes: frames are read
with a header limit and the payload is counted before it is stored (content over
the limit is read and thrown away, then refused); every address is parsed
again; nothing in the request names a path or the user.  Content is stored as it
came (NUL bytes, 8-bit headers, long lines): cleanup repairs content, postdrop
only carries it.
"""
