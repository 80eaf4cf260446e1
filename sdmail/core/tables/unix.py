"""unix: tables, the system's user and group databases (Postfix's dict_unix).

`unix:passwd.byname` answers a login name with its passwd(5) entry, and
`unix:group.byname` a group name with its group(5) entry, in the form Postfix
returns them:

    root      ->  root:x:0:0:root:/root:/bin/bash     name:passwd:uid:gid:gecos:home:shell
    daemon    ->  daemon:x:1:                         name:passwd:gid:member,member,...

The entries come from the C library (getpwnam, getgrnam), so they are what NSS
serves, not only /etc/passwd.  A name the database does not know is "not
found".  Keys are folded to lower case unless the table is opened with
fold_keys=False (postmap -f), as Postfix's dict_unix does under
DICT_FLAG_FOLD_FIX, which its daemons and postmap set: the lookup of `Root`
finds root, as local_recipient_maps must for `Root@localhost`.  Names are
otherwise matched as the database matches them (exactly).  These are fixed
tables that cannot list themselves.

Failure modes: opening raises TableError `unknown table: unix:NAME` for a name
other than passwd.byname and group.byname.  A lookup raises TableError only when
the database cannot be read at all: when a name is not found and the entry for
id 0 is not found either (Postfix's sanity check, made until the database has
answered once).  A key
the C library cannot take (a NUL, text that is not UTF-8) is not found.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable

from sdmail.core.tables.table import Table, TableError


def passwd_entry(name: str) -> str | None:
    """The passwd(5) line for login NAME, or None."""
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError, UnicodeError):
        return None
    return ":".join(
        [
            entry.pw_name,
            entry.pw_passwd,
            str(entry.pw_uid),
            str(entry.pw_gid),
            entry.pw_gecos,
            entry.pw_dir,
            entry.pw_shell,
        ]
    )


def group_entry(name: str) -> str | None:
    """The group(5) line for group NAME, or None."""
    try:
        entry = grp.getgrnam(name)
    except (KeyError, ValueError, UnicodeError):
        return None
    return f"{entry.gr_name}:{entry.gr_passwd}:{entry.gr_gid}:{','.join(entry.gr_mem)}"


def _passwd_readable() -> bool:
    try:
        pwd.getpwuid(0)
    except KeyError:
        return False
    return True


def _group_readable() -> bool:
    try:
        grp.getgrgid(0)
    except KeyError:
        return False
    return True


# name -> (lookup, database check, what the check failing means)
_DATABASES: dict[str, tuple[Callable[[str], str | None], Callable[[], bool], str]] = {
    "passwd.byname": (passwd_entry, _passwd_readable, "password"),
    "group.byname": (group_entry, _group_readable, "group"),
}


class UnixTable(Table):
    """The passwd or group database, one entry per name."""

    def __init__(self, spec: str, name: str, *, fold_keys: bool = True) -> None:
        super().__init__(spec)
        database = _DATABASES.get(name)
        if database is None:
            raise TableError(f"unknown table: unix:{name}")
        self._find, self._readable, self._what = database
        self._fold_keys = fold_keys
        self._database_seen = False

    def lookup(self, key: str) -> str | None:
        value = self._find(key.lower() if self._fold_keys else key)
        if value is None and not self._database_seen and not self._readable():
            # A database that cannot be read must defer the mail, never bounce it.
            raise TableError(f"table {self.spec}: cannot access UNIX {self._what} database")
        self._database_seen = True
        return value


def open_unix(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `unix:passwd.byname` and `unix:group.byname`."""
    return UnixTable(spec, name, fold_keys=fold_keys)
