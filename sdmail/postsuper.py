"""postsuper: the superintendent of the mail queue — delete, hold, release, requeue, expire.

USAGE
    postsuper [-psSv] [-c DIR] [-d ID] [-e ID] [-f ID] [-h ID] [-H ID] [-r ID] [queue...]

WHAT IT DOES, as Postfix's postsuper (root only).  Each of -d, -e, -f, -h, -H and -r
takes a queue ID, `ALL` (upper case, every message in the queues) or `-` (queue IDs
from standard input, one a line); each may be given several times.  The queue names
after the options limit where messages are looked for; without them:

    -d ID   delete the message and its bounce/defer/trace logs     maildrop incoming active
                                                                   deferred hold
    -r ID   requeue: move it to maildrop/, where pickup and cleanup
            make a new queue file of it (rewriting and virtual
            aliases applied again; the old ID is the maildrop name) incoming active deferred hold
    -h ID   put it on hold: it is not delivered and does not expire incoming active deferred
    -H ID   release it from hold into deferred/                     hold
    -e ID   force it to expire: qmgr returns it to the sender at its
            next delivery attempt (the owner-execute bit of the file's
            mode, as Postfix's MAIL_QUEUE_STAT_EXPIRE; mailq shows `#`;
            the file's time is set to now so the attempt is due)    incoming active deferred hold
    -f ID   as -e, and release it from hold                         incoming active deferred hold
    -s, -S  check and repair the queue's structure (see below)
    -p      remove temporary files left by crashes (older than a day)

With no option postsuper does -s -p on every queue.  Each message acted on gives a
line on stderr and in the journal, `postsuper: QUEUEID: removed` (`requeued`, `placed
on hold`, `released from hold`, `expired`), and at the end a count, `postsuper:
Deleted: 3 messages` (`Requeued:`, `Placed on hold:`, `Released from hold:`,
`Force-expired:`; `1 message` in the singular).  After a hold, release or expiry qmgr
is woken (`$socket_directory/qmgr`, W and D).

LOCKS.  Queue files change only through core/spool.  Before it changes a message,
postsuper takes the file's exclusive lock without waiting (core/spool.lock_exclusive):
a message a delivery agent is working on (it holds the shared lock) is left alone with
`postsuper: warning: QUEUEID: skipped, still being delivered`, so a message is never
deleted under an agent's feet; try again when the delivery is done.

STRUCTURE (-s).  Missing queue directories are made, and a directory with the wrong mode
or owner fixed (0700, `mail_owner` when that user exists).  In each queue: symbolic
links, FIFOs, sockets, devices and empty directories are removed; a queue file of the
wrong owner or mode is fixed; a file whose name is not a queue ID and is more than a
day old (younger ones may be a temporary file being written) is renamed to a queue ID
made from its time and inode, in its queue when it is a whole queue file, in corrupt/
when it is not; a queue file that is cut short or corrupt is moved to corrupt/ with
`saving corrupt file "ID" from queue "Q" to queue "corrupt"`.  A file with several
links is reported and left alone.

BAD INPUT.  A queue ID that is not one (`/`, `..`, a path) is `postsuper: fatal:
invalid mail queue id: ...` before anything changes, whether from the command line or
from stdin (blank lines are skipped); an unknown queue name is `postsuper: fatal:
invalid directory name: ...`.  A well-formed ID that is in none of the queues gives
`postsuper: warning: QUEUEID: no such message in hold, incoming, ...` and the others are
still done.  A user other than root gets `postsuper: fatal: use of this command is
reserved for the superuser` and nothing changes.

Exit status: 0 when everything asked was done; 1 when a message was not found, was
locked or could not be changed, and for the fatal errors above; 64 usage; 78 main.cf.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import pwd
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdmail.core import bounce_log, qfile
from sdmail.core.log import msg_info
from sdmail.core.records import ALL_QUEUES, LOG_QUEUES, MESSAGE_QUEUES, QueueName
from sdmail.core.skeleton import Fatal, ToolContext, option_parser, run_tool
from sdmail.core.spool import (
    QUEUE_DIRECTORY_MODE,
    QUEUE_FILE_MODE,
    NoSuchQueueFile,
    QueueFileHandle,
    QueueFileLocked,
    Spool,
    SpoolError,
    lock_exclusive,
    make_queue_id,
    unlock,
    valid_queue_id,
)
from sdmail.core.trigger import SCAN_DEFERRED, WAKEUP, trigger
from sdmail.manpages import add_help_option

PROGRAM = "postsuper"
USAGE = (
    "postsuper [-psSv] [-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)]"
    " [-f queue_id (expire and release)] [-h queue_id (hold)] [-H queue_id (un-hold)]"
    " [-r queue_id (requeue)] [queue...]"
)
EXIT_FAILURE = 1  # what Postfix's msg_fatal() exits with
ALL = "ALL"
FROM_STDIN = "-"
QMGR_SOCKET = "qmgr"

# Postfix's postsuper.c MAX_TEMP_AGE: a temporary file this old is a crash's leftover.
MAX_TEMP_AGE = 24 * 3600
# The forced-expire flag: the owner-execute bit of a queue file (core/showq_proto reads it).
FORCED_EXPIRE_BIT = stat.S_IXUSR

HOLD, DEFERRED, MAILDROP = QueueName.HOLD, QueueName.DEFERRED, QueueName.MAILDROP
# Postfix's default_queues and default_hold_queues, in its search order.
_MAIL_QUEUES = (MAILDROP, QueueName.INCOMING, QueueName.ACTIVE, DEFERRED, HOLD)
_HOLD_FROM = (QueueName.INCOMING, QueueName.ACTIVE, DEFERRED)


class Action(enum.Enum):
    """The per-message operations, in the order Postfix's postsuper runs them."""

    DELETE = "d"
    REQUEUE = "r"
    HOLD = "h"
    RELEASE = "H"
    EXPIRE = "e"
    EXPIRE_RELEASE = "f"


@dataclass(frozen=True)
class _Kind:
    default_queues: tuple[QueueName, ...]
    never_from: frozenset[QueueName]
    summary: str  # the count line's label


_KINDS = {
    Action.DELETE: _Kind(_MAIL_QUEUES, frozenset(), "Deleted"),
    Action.REQUEUE: _Kind(_MAIL_QUEUES, frozenset({MAILDROP, QueueName.CORRUPT}), "Requeued"),
    Action.HOLD: _Kind(_HOLD_FROM, frozenset({MAILDROP, HOLD}), "Placed on hold"),
    Action.RELEASE: _Kind((HOLD,), frozenset(set(MESSAGE_QUEUES) - {HOLD}), "Released from hold"),
    Action.EXPIRE: _Kind(_MAIL_QUEUES, frozenset({MAILDROP, QueueName.CORRUPT}), "Force-expired"),
    Action.EXPIRE_RELEASE: _Kind(
        _MAIL_QUEUES, frozenset({MAILDROP, QueueName.CORRUPT}), "Force-expired"
    ),
}
_REPORT_ORDER = ("Requeued", "Deleted", "Placed on hold", "Released from hold", "Force-expired")


@dataclass(frozen=True)
class PostsuperSettings:
    queue_directory: str
    socket_directory: str
    mail_owner: str


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    incomplete: bool = False
    moved_for_qmgr: bool = False

    def add(self, label: str) -> None:
        self.counts[label] = self.counts.get(label, 0) + 1


def plural(count: int, word: str) -> str:
    """`1 message`, `3 messages`: Postfix's count lines."""
    return f"{count} {word}{'' if count == 1 else 's'}"


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------
def _queue_names(names: Sequence[str]) -> tuple[QueueName, ...] | None:
    """The queues named after the options; None when none were named."""
    if not names:
        return None
    queues = []
    for name in names:
        try:
            queues.append(QueueName(name))
        except ValueError:
            raise Fatal(f"invalid directory name: {_shown(name)}", EXIT_FAILURE) from None
    return tuple(queues)


def _shown(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text)


def read_queue_ids(lines: Iterable[bytes]) -> list[str]:
    """The queue IDs of stdin's lines (blank lines skipped), not yet validated."""
    ids = []
    for raw in lines:
        line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
        if line.strip():
            ids.append(line)
    return ids


def _requests(ctx: ToolContext[PostsuperSettings]) -> dict[Action, list[str]]:
    """Action -> its queue IDs (or [ALL]); every ID checked before anything changes."""
    stdin_ids: list[str] | None = None
    requests: dict[Action, list[str]] = {}
    for action in Action:
        given = getattr(ctx.options, f"ids_{action.name.lower()}") or []
        ids: list[str] = []
        for item in given:
            if item == FROM_STDIN:
                if stdin_ids is None:  # stdin is read once, by the first `-`
                    stdin_ids = read_queue_ids(sys.stdin.buffer)
                    ids += stdin_ids
            else:
                ids.append(item)
        if ALL in ids and len(ids) > 1:
            ctx.logger.warning(
                'option "-%s ALL" will ignore other command line queue IDs', action.value
            )
            ids = [ALL]
        for queue_id in ids:
            if queue_id != ALL and not valid_queue_id(queue_id):
                raise Fatal(f"invalid mail queue id: {_shown(queue_id)}", EXIT_FAILURE)
        if given:
            requests[action] = ids
    return requests


# --------------------------------------------------------------------------------------
# Acting on messages
# --------------------------------------------------------------------------------------
class Superintendent:
    """Does postsuper's work on one spool and counts it."""

    def __init__(
        self, ctx: ToolContext[PostsuperSettings], spool: Spool, owner: pwd.struct_passwd | None
    ):
        self.ctx = ctx
        self.log = ctx.logger
        self.spool = spool
        self.owner = owner
        self.tally = _Tally()

    # -- by queue ID --
    def operate(self, action: Action, queue_id: str, queues: Sequence[QueueName]) -> None:
        """Do ACTION to QUEUE_ID, looked for in QUEUES (twice: qmgr may move it meanwhile)."""
        for _attempt in range(2):
            for queue in queues:
                outcome = self._operate_in(action, queue, queue_id)
                if outcome is not None:
                    return
        self.log.warning("%s: no such message in %s", queue_id, ", ".join(q.value for q in queues))
        self.tally.incomplete = True

    def _operate_in(self, action: Action, queue: QueueName, queue_id: str) -> bool | None:
        """True: done; False: found but not done (warned); None: not in QUEUE."""
        try:
            handle = self.spool.open(queue, queue_id)
        except NoSuchQueueFile:
            return None
        except SpoolError as exc:
            self.log.warning("%s", exc)
            self.tally.incomplete = True
            return False
        with handle:
            try:
                lock_exclusive(handle)
            except QueueFileLocked:
                self.log.warning("%s: skipped, still being delivered", queue_id)
                self.tally.incomplete = True
                return False
            try:
                self._apply(action, handle)
            except NoSuchQueueFile:
                return None  # moved on before we held the lock
            except (SpoolError, OSError) as exc:
                self.log.warning("%s: %s", queue_id, _reason(exc))
                self.tally.incomplete = True
                return False
        return True

    def _apply(self, action: Action, handle: QueueFileHandle) -> None:
        queue, queue_id = handle.queue, handle.queue_id
        if action is Action.DELETE:
            self.spool.remove(queue, queue_id)
            bounce_log.remove(self.spool.path, queue_id)
            msg_info(queue_id, "removed")
        elif action is Action.REQUEUE:
            # pickup makes a new queue file of it; a flag of the old one means nothing there.
            os.fchmod(handle.fileno(), QUEUE_FILE_MODE)
            os.utime(handle.fileno())
            unlock(handle)  # pickup sees it at once: it must not find it locked
            self.spool.move(queue_id, queue, MAILDROP)
            msg_info(queue_id, "requeued")
        elif action is Action.HOLD:
            self.spool.move(queue_id, queue, HOLD)
            msg_info(queue_id, "placed on hold")
            self.tally.moved_for_qmgr = True
        elif action is Action.RELEASE:
            # qmgr's inotify sees the file in deferred/ at once; locked, it would take it
            # for one an agent still delivers and put it aside for a minute.
            unlock(handle)
            self.spool.move(queue_id, queue, DEFERRED)
            msg_info(queue_id, "released from hold")
            self.tally.moved_for_qmgr = True
        else:
            self._expire(handle, release=action is Action.EXPIRE_RELEASE)
            return
        self.tally.add(_KINDS[action].summary)

    def _expire(self, handle: QueueFileHandle, *, release: bool) -> None:
        fd = handle.fileno()
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | FORCED_EXPIRE_BIT)
        os.utime(fd)  # due now: qmgr takes deferred mail whose time has come
        msg_info(handle.queue_id, "expired")
        self.tally.add(_KINDS[Action.EXPIRE].summary)
        self.tally.moved_for_qmgr = True
        if release and handle.queue == HOLD:
            unlock(handle)  # as for RELEASE: qmgr must not find it locked
            self.spool.move(handle.queue_id, HOLD, DEFERRED)
            msg_info(handle.queue_id, "released from hold")
            self.tally.add(_KINDS[Action.RELEASE].summary)

    # -- ALL --
    def operate_all(self, action: Action, queues: Sequence[QueueName]) -> None:
        """Do ACTION to every message in QUEUES (hold last: -f moves from it to deferred)."""
        for queue in sorted(queues, key=lambda q: q == HOLD):
            for queue_id in self.spool.list_queue(queue):
                self._operate_in(action, queue, queue_id)

    def report(self) -> None:
        for label in _REPORT_ORDER:
            count = self.tally.counts.get(label, 0)
            if count:
                self.log.info("%s: %s", label, plural(count, "message"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# --------------------------------------------------------------------------------------
# Structure check (-s) and purge (-p)
# --------------------------------------------------------------------------------------
_KIND_OF_FILE = (
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "device"),
    (stat.S_ISBLK, "device"),
    (stat.S_ISDIR, "directory"),
)


def _kind_of(mode: int) -> str:
    for test, name in _KIND_OF_FILE:
        if test(mode):
            return name
    return "file"


class StructureCheck:
    """postsuper -s: the queue directories and every name in them (see the docstring)."""

    def __init__(self, superintendent: Superintendent) -> None:
        self.sup = superintendent
        self.spool = superintendent.spool
        self.log = superintendent.log
        self.owner = superintendent.owner

    def run(self, queues: Sequence[QueueName]) -> None:
        self._directories(queues)
        for queue in queues:
            try:
                dir_fd = self._open_directory(queue)
            except OSError as exc:
                self.log.warning("%s: %s", self.spool.path / queue.value, _reason(exc))
                continue
            try:
                for name in sorted(os.listdir(dir_fd)):
                    self._entry(queue, dir_fd, name)
            finally:
                os.close(dir_fd)

    # -- directories --
    def _directories(self, queues: Sequence[QueueName]) -> None:
        for queue in self.spool.create_directories():
            self.log.warning("created missing queue directory %s", self.spool.path / queue.value)
        for queue in queues:
            path = self.spool.path / queue.value
            try:
                fd = self._open_directory(queue)
            except OSError as exc:
                self.log.warning("%s: %s; not repaired", path, _reason(exc))
                continue
            try:
                st = os.fstat(fd)
                if stat.S_IMODE(st.st_mode) != QUEUE_DIRECTORY_MODE:
                    os.fchmod(fd, QUEUE_DIRECTORY_MODE)
                    self.log.warning(
                        "%s: mode %04o, fixed to %04o",
                        path,
                        stat.S_IMODE(st.st_mode),
                        QUEUE_DIRECTORY_MODE,
                    )
                self._fix_owner(fd, st, str(path))
            finally:
                os.close(fd)

    def _open_directory(self, queue: QueueName) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(self.spool.path / queue.value, flags)

    def _fix_owner(self, fd: int, st: os.stat_result, where: str) -> None:
        if self.owner is None or (st.st_uid, st.st_gid) == (self.owner.pw_uid, self.owner.pw_gid):
            return
        os.fchown(fd, self.owner.pw_uid, self.owner.pw_gid)
        self.log.warning(
            "%s: owned by uid %d gid %d, fixed to %s",
            where,
            st.st_uid,
            st.st_gid,
            self.owner.pw_name,
        )

    # -- one name in a queue --
    def _entry(self, queue: QueueName, dir_fd: int, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # moved on meanwhile
        where = f"{queue}/{name}"
        if not stat.S_ISREG(st.st_mode):
            self._remove_stray(dir_fd, name, st, where)
        elif not valid_queue_id(name):
            self._misnamed(queue, dir_fd, name, st, where)
        elif queue in LOG_QUEUES:
            self._fix_log(dir_fd, name, st, where)
        else:
            self._queue_file(queue, name)

    def _remove_stray(self, dir_fd: int, name: str, st: os.stat_result, where: str) -> None:
        kind = _kind_of(st.st_mode)
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.log.warning("%s: stray %s, cannot remove: %s", where, kind, _reason(exc))
            self.sup.tally.incomplete = True
            return
        self.log.warning("%s: removed stray %s", where, kind)

    def _misnamed(
        self, queue: QueueName, dir_fd: int, name: str, st: os.stat_result, where: str
    ) -> None:
        if time.time() - st.st_mtime < MAX_TEMP_AGE:
            return  # maybe a temporary file being written right now
        if queue in LOG_QUEUES or queue == QueueName.CORRUPT:
            self.log.warning("bogus file name: %s", where)
            return
        seconds, nanoseconds = divmod(st.st_mtime_ns, 1_000_000_000)
        new_id = make_queue_id(seconds, nanoseconds // 1000, st.st_ino)
        problem = self._queue_file_problem(dir_fd, name)
        target = queue if problem is None else QueueName.CORRUPT
        try:
            target_fd = self._open_directory(target)
        except OSError as exc:
            self.log.warning("%s: misnamed, cannot open %s: %s", where, target, _reason(exc))
            return
        try:
            if _exists(new_id, target_fd):
                self.log.warning(
                    "%s: misnamed, and %s/%s exists; left alone", where, target, new_id
                )
                return
            os.rename(name, new_id, src_dir_fd=dir_fd, dst_dir_fd=target_fd)
        except OSError as exc:
            self.log.warning("%s: misnamed, cannot rename: %s", where, _reason(exc))
            return
        finally:
            os.close(target_fd)
        if problem is None:
            self.log.warning("%s: misnamed queue file, renamed to %s/%s", where, target, new_id)
        else:
            self.log.warning(
                "%s: misnamed and not a queue file (%s), moved to %s/%s",
                where,
                problem,
                target,
                new_id,
            )

    @staticmethod
    def _queue_file_problem(dir_fd: int, name: str) -> str | None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            return _reason(exc)
        try:
            qfile.read_envelope(fd)
        except qfile.CorruptQueueFile as exc:
            return str(exc)
        except OSError as exc:
            return _reason(exc)
        finally:
            os.close(fd)
        return None

    def _fix_log(self, dir_fd: int, name: str, st: os.stat_result, where: str) -> None:
        if self.owner is None:
            return
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(name, flags, dir_fd=dir_fd)
            try:
                self._fix_owner(fd, os.fstat(fd), where)
            finally:
                os.close(fd)

    def _queue_file(self, queue: QueueName, queue_id: str) -> None:
        try:
            handle = self.spool.open(queue, queue_id)
        except NoSuchQueueFile:
            return
        except SpoolError as exc:
            self.log.warning("%s; left alone", exc)
            self.sup.tally.incomplete = True
            return
        with handle:
            fd = handle.fileno()
            st = os.fstat(fd)
            self._fix_owner(fd, st, str(handle))
            mode = stat.S_IMODE(st.st_mode)
            wanted = QUEUE_FILE_MODE | (mode & FORCED_EXPIRE_BIT)
            if mode != wanted:
                os.fchmod(fd, wanted)
                self.log.warning("%s: mode %04o, fixed to %04o", handle, mode, wanted)
            if queue == QueueName.CORRUPT:
                return
            try:
                qfile.read_envelope(fd)
            except qfile.CorruptQueueFile as exc:
                self._quarantine(handle, str(exc))
            except OSError as exc:
                self.log.warning("%s: %s", handle, _reason(exc))

    def _quarantine(self, handle: QueueFileHandle, why: str) -> None:
        try:
            lock_exclusive(handle)
        except QueueFileLocked:
            self.log.warning("%s: corrupt (%s), but still being delivered", handle, why)
            self.sup.tally.incomplete = True
            return
        try:
            self.spool.quarantine(handle.queue_id, handle.queue)
        except SpoolError as exc:
            self.log.warning("%s: corrupt (%s), cannot move: %s", handle, why, exc)
            self.sup.tally.incomplete = True
            return
        self.log.warning(
            'saving corrupt file "%s" from queue "%s" to queue "%s": %s',
            handle.queue_id,
            handle.queue,
            QueueName.CORRUPT,
            why,
        )


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def purge(sup: Superintendent) -> None:
    """postsuper -p: temporary files older than MAX_TEMP_AGE."""
    for name in sup.spool.purge_temporary(MAX_TEMP_AGE):
        sup.log.info("%s: removed old temporary file", name)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def _owner(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def postsuper(ctx: ToolContext[PostsuperSettings]) -> int:
    if os.getuid() != 0:
        raise Fatal("use of this command is reserved for the superuser", EXIT_FAILURE)
    settings = ctx.settings
    named = _queue_names(ctx.options.queues)
    requests = _requests(ctx)
    structure = ctx.options.structure or not (requests or ctx.options.purge)
    purging = ctx.options.purge or not (requests or ctx.options.structure)
    if not Path(settings.queue_directory).is_dir():
        error = os.strerror(errno.ENOENT)
        raise Fatal(f"chdir {settings.queue_directory}: {error}", EXIT_FAILURE)
    with Spool(settings.queue_directory) as spool:
        sup = Superintendent(ctx, spool, _owner(settings.mail_owner))
        try:
            if purging:
                purge(sup)
            if structure:
                StructureCheck(sup).run(named or ALL_QUEUES)
            for action, ids in requests.items():
                kind = _KINDS[action]
                queues = [q for q in (named or kind.default_queues) if q not in kind.never_from]
                queues = [q for q in queues if q in MESSAGE_QUEUES]
                if not queues:
                    ctx.logger.warning(
                        "option -%s does not apply to queue %s",
                        action.value,
                        ", ".join(q.value for q in named or ()),
                    )
                    sup.tally.incomplete = True
                    continue
                if ids == [ALL]:
                    sup.operate_all(action, queues)
                else:
                    for queue_id in ids:
                        sup.operate(action, queue_id, queues)
        except SpoolError as exc:
            raise Fatal(str(exc), EXIT_FAILURE) from None
        finally:
            sup.report()
        if sup.tally.moved_for_qmgr:
            trigger(str(Path(settings.socket_directory) / QMGR_SOCKET), WAKEUP + SCAN_DEFERRED)
    return EXIT_FAILURE if sup.tally.incomplete else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = option_parser(PROGRAM, "queue maintenance (root only)")
    parser.usage = USAGE
    for action in Action:
        parser.add_argument(
            f"-{action.value}",
            dest=f"ids_{action.name.lower()}",
            metavar="queue_id",
            action="append",
        )
    parser.add_argument("-s", dest="structure", action="store_true")
    parser.add_argument("-S", dest="structure", action="store_true")
    parser.add_argument("-p", dest="purge", action="store_true")
    parser.add_argument("queues", nargs="*", metavar="queue")
    add_help_option(parser, __doc__)
    return run_tool(
        PROGRAM,
        argv,
        postsuper,
        settings=PostsuperSettings,
        parser=parser,
        needs_config=False,
        unexpected_exit=EXIT_FAILURE,
    )


if __name__ == "__main__":
    sys.exit(main())
