"""postlock: run a command while holding the lock local delivery takes on a mailbox.

USAGE
    postlock [-v] [-c DIR] [-l lock_style] file command...

WHAT IT DOES, as Postfix's postlock.  Opens FILE (an mbox; created with mode 0600 when
it does not exist, never through a symbolic link, refused when it is not a regular
file with one link), locks it exactly as local delivery does before it appends a
message (core/mailstore: the `FILE.lock` dot-lock and the fcntl lock that
`mailbox_delivery_lock` names, or -l's styles: `fcntl`, `dotlock`, `flock`, separated
by commas or spaces), runs COMMAND with its arguments directly (no shell) and waits for
it, then lets go of the locks.  A lock held by someone else is tried
`deliver_lock_attempts` times, `deliver_lock_delay` apart; a dot-lock older than
`stale_lock_time` is removed.  So a script that edits a mailbox under postlock never
sees half a message, and no message is appended while it works.

Exit status: the command's (1 when a signal ended it); 75 (EX_TEMPFAIL) when the
mailbox could not be opened or locked or the command could not be run, with
`postlock: fatal: ...`; 64 usage; 78 main.cf.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from sdmail.core import mailstore
from sdmail.core.config import split_list
from sdmail.core.skeleton import ExitCode, Fatal, ToolContext, UsageError, option_parser, run_tool
from sdmail.manpages import add_help_option

PROGRAM = "postlock"
USAGE = "postlock [-c config_dir] [-l lock_style] [-v] folder command..."
SIGNALLED = 1  # Postfix's exit status when the command did not exit by itself


@dataclass(frozen=True)
class PostlockSettings:
    mailbox_delivery_lock: tuple[str, ...]
    deliver_lock_attempts: int
    deliver_lock_delay: int
    stale_lock_time: int


def lock_policy(settings: PostlockSettings, styles: str | None) -> mailstore.LockPolicy:
    """The policy local delivery uses, with -l's STYLES instead when given; Fatal (75) for
    a style core/mailstore does not know."""
    words = split_list(styles) if styles is not None else list(settings.mailbox_delivery_lock)
    try:
        return mailstore.LockPolicy.from_styles(
            words,
            settings.deliver_lock_attempts,
            settings.deliver_lock_delay,
            settings.stale_lock_time,
        )
    except ValueError as exc:
        raise Fatal(str(exc), ExitCode.TEMPFAIL) from None


def run_command(command: Sequence[str]) -> int:
    """Run COMMAND and return its exit status (SIGNALLED when a signal ended it)."""
    try:
        status = subprocess.run(list(command), check=False).returncode
    except OSError as exc:
        raise Fatal(f"execvp {command[0]}: {exc.strerror}", ExitCode.TEMPFAIL) from None
    return SIGNALLED if status < 0 else status


def postlock(ctx: ToolContext[PostlockSettings]) -> int:
    options = ctx.options
    if not options.command:
        raise UsageError(f"a command to run is required; usage: {USAGE}")
    policy = lock_policy(ctx.settings, options.lock_style)
    try:
        with mailstore.locked_mbox(options.file, policy):
            return run_command(options.command)
    except mailstore.MailstoreError as exc:
        raise Fatal(exc.message, ExitCode.TEMPFAIL) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "lock a mailbox and run a command")
    parser.usage = USAGE
    parser.add_argument("-l", dest="lock_style", metavar="lock_style")
    parser.add_argument("file")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    add_help_option(parser, __doc__)
    return run_tool(
        PROGRAM,
        argv,
        postlock,
        settings=PostlockSettings,
        parser=parser,
        unexpected_exit=ExitCode.TEMPFAIL,
    )


if __name__ == "__main__":
    sys.exit(main())
