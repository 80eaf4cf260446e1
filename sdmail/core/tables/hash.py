"""hash: tables, the compiled tables postmap and postalias build (`NAME.db`).

OWNS the on-disk format of `NAME.db` and every write of it.  The file is an
SQLite database (the stdlib `sqlite3` module, in Debian's python3): a `map`
table of (key, value) text rows with the key as primary key, and a `meta` row
naming the format.  A `.db` is never modified in place: a build, an
incremental add (-i) or a delete (-d) writes a complete new file under a
temporary name in the same directory, fsyncs it, renames it over `NAME.db` and
fsyncs the directory, with termination signals held off meanwhile (Postfix
postpones them too).  So a reader sees the old table or the new one, never a
half-built one, and a build that fails leaves the old table in place.
Writers that read-modify-write (-i, -d) hold an exclusive flock on the current
`NAME.db` so two of them do not lose each other's change.

Readers open the file read-only and immutable (`file:...?mode=ro&immutable=1`):
no locks and no journal, which is safe exactly because the file never changes.
A long-running reader compares the device, inode, mtime and size of `NAME.db`
at most once per `recheck_interval` seconds and reopens a rebuilt table; until
the new one opens it keeps answering from the old one.

Failure modes: TableError `open database PATH: <reason>` for a missing,
unreadable or foreign `.db` (an old Berkeley DB file from Postfix says
`file is not a database`); `lookup` raises TableError only if the file cannot be
read (`read database PATH: ...`).  Writes raise TableError for any OS or SQLite
error and remove their temporary file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from sdmail.core.tables.table import Table, TableError

SUFFIX = ".db"
FORMAT = "sdmail-hash 1"
DEFAULT_RECHECK_INTERVAL = 1.0
# Signals that would kill a build between "temporary file written" and "renamed".
_HELD_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM}
_LOOKUP = "SELECT value FROM map WHERE key = ?"

log = logging.getLogger(__name__)

FileIdentity = tuple[int, int, int, int]


def db_path(name: str | Path) -> Path:
    """The compiled file of table NAME: NAME.db (Postfix's name)."""
    return Path(f"{name}{SUFFIX}")


def _identity(status: os.stat_result) -> FileIdentity:
    return (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """An immutable read-only connection to PATH, its format checked."""
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise TableError(f"open database {path}: {exc}") from exc
    try:
        row = connection.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
    except sqlite3.Error as exc:
        connection.close()
        reason = "not an sdmail hash table" if "no such table" in str(exc) else str(exc)
        raise TableError(f"open database {path}: {reason}") from exc
    if row is None or row[0] != FORMAT:
        connection.close()
        raise TableError(f"open database {path}: unsupported format {row and row[0]!r}")
    return connection


class HashTable(Table):
    """A compiled table, reopened when `NAME.db` is replaced."""

    def __init__(
        self,
        spec: str,
        name: str,
        *,
        fold_keys: bool = True,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
    ) -> None:
        super().__init__(spec)
        self.name = name
        self.path = db_path(name)
        self._fold_keys = fold_keys
        self._recheck_interval = recheck_interval
        self._lock = threading.Lock()
        self._connection, self._identity = self._open()
        self._next_check = time.monotonic() + recheck_interval
        self._warn_if_older_than_source()

    def _open(self) -> tuple[sqlite3.Connection, FileIdentity]:
        # The identity is taken before the open: if the file is replaced in between,
        # the next check sees a new identity and opens again, which is harmless.
        try:
            identity = _identity(os.stat(self.path))
        except OSError as exc:
            raise TableError(f"open database {self.path}: {exc.strerror}") from exc
        return _connect_read_only(self.path), identity

    def _warn_if_older_than_source(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self.name).st_mtime_ns > os.stat(self.path).st_mtime_ns:
                log.warning("database %s is older than source file %s", self.path, self.name)

    def _reopen_if_replaced(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._recheck_interval
        try:
            identity = _identity(os.stat(self.path))
        except OSError:
            return  # keep answering from the table we have
        if identity == self._identity:
            return
        try:
            connection, identity = self._open()
        except TableError as exc:
            log.warning("%s; still using the previous table", exc)
            return
        old, self._connection, self._identity = self._connection, connection, identity
        old.close()

    def lookup(self, key: str) -> str | None:
        if self._fold_keys:
            key = key.lower()
        with self._lock:
            self._reopen_if_replaced()
            try:
                row = self._connection.execute(_LOOKUP, (key,)).fetchone()
            except UnicodeEncodeError:
                return None  # a key that is not text (surrogates) is in no table
            except sqlite3.Error as exc:
                raise TableError(f"read database {self.path}: {exc}") from exc
        return None if row is None else str(row[0])

    def items(self) -> Iterator[tuple[str, str]]:
        with self._lock:
            try:
                rows = self._connection.execute("SELECT key, value FROM map").fetchall()
            except sqlite3.Error as exc:
                raise TableError(f"read database {self.path}: {exc}") from exc
        return iter([(str(key), str(value)) for key, value in rows])

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def read_entries(name: str | Path) -> dict[str, str]:
    """Everything in `NAME.db` as a dict (for -i and -d); {} when there is no `.db`."""
    path = db_path(name)
    if not path.exists():
        return {}
    connection = _connect_read_only(path)
    try:
        return {str(key): str(value) for key, value in connection.execute("SELECT * FROM map")}
    except sqlite3.Error as exc:
        raise TableError(f"read database {path}: {exc}") from exc
    finally:
        connection.close()


@contextlib.contextmanager
def update_lock(name: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the current `NAME.db` (nothing when there is none).

    The lock is on the file itself, so after a rename the next writer finds the
    inode it locked is no longer `NAME.db` and locks the new one instead.
    """
    path = db_path(name)
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            yield
            return
        except OSError as exc:
            raise TableError(f"open database {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            locked = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (
                locked.st_dev,
                locked.st_ino,
            ):
                yield
                return
        finally:
            os.close(fd)


def _write_sqlite(path: str, entries: Iterable[tuple[str, str]]) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # No journal and no sync: the file is fsynced and renamed into place only
        # when complete, so SQLite's own crash safety would be paid for twice.
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        connection.execute(
            "CREATE TABLE map (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID"
        )
        connection.execute("BEGIN")
        connection.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        connection.executemany("INSERT INTO map VALUES (?, ?)", sorted(entries))
        connection.execute("COMMIT")
    finally:
        connection.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table(
    name: str | Path,
    entries: Iterable[tuple[str, str]],
    *,
    mode: int,
    owner: tuple[int, int] | None = None,
) -> Path:
    """Replace `NAME.db` atomically with a table of ENTRIES (unique keys); returns its path.

    MODE is the new file's permission bits; OWNER (uid, gid) is applied when given
    (only root may give it away).
    """
    path = db_path(name)
    directory = path.parent
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise TableError(f"open {directory}/{path.name}: {exc.strerror}") from exc
        try:
            _write_sqlite(temporary, entries)
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fsync(fd)
            os.rename(temporary, path)
            _fsync_directory(directory)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(exc, OSError):
                raise TableError(f"write {path}: {exc.strerror}") from exc
            if isinstance(exc, sqlite3.Error):
                raise TableError(f"write {path}: {exc}") from exc
            raise
        finally:
            os.close(fd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return path


def open_hash(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `hash:NAME`."""
    return HashTable(spec, name, fold_keys=fold_keys)
