"""Which local users may use a public service: Postfix's user_acl for authorized_*_users.

`authorized_mailq_users`, `authorized_flush_users` and `authorized_submit_users`
are lists of login names, `/file` names and `type:table` lookups (a
core/match_list `StringList`).  The caller's uid comes from the kernel
(SO_PEERCRED at a service, getuid() in a tool); this module turns it into the
login name the list is matched against.  As in Postfix, a uid without a passwd
entry is matched as `unknown` (so `!unknown` can block such accounts and
`static:anyone` still lets them in), a list that starts with `static:` lets
everyone in without a lookup, and the callers exempt root and `mail_owner`
(`exempt_uids`).

Failure modes: `refused_user` raises MatchListError for a list that cannot be
built (a missing /file, a table that cannot be opened); a table that fails
during the lookup raises its TableError.  Neither is ever "allowed".
"""

from __future__ import annotations

import pwd
from collections.abc import Iterable

from sdmail.core.config import split_list
from sdmail.core.match_list import StringList, TableOpener

UNKNOWN_USER = "unknown"
_STATIC_PREFIX = "static:"


def login_name(uid: int) -> str:
    """The login name of UID, or `unknown` when the passwd database has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return UNKNOWN_USER


def uid_of(user: str) -> int | None:
    """The uid of the login name USER (mail_owner), or None when there is no such user."""
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def exempt_uids(mail_owner: str) -> frozenset[int]:
    """The uids an ACL never refuses: root, and mail_owner when that user exists."""
    owner = uid_of(mail_owner)
    return frozenset({0} if owner is None else {0, owner})


def refused_user(
    acl: str | Iterable[str],
    uid: int,
    *,
    parameter: str,
    exempt: frozenset[int] = frozenset({0}),
    table_opener: TableOpener | None = None,
) -> str | None:
    """None when UID may use the service ACL guards; else the name to show in the refusal
    (`User NAME(UID) is not allowed to ...`).  PARAMETER names the list in errors."""
    if uid in exempt:
        return None
    items = split_list(acl) if isinstance(acl, str) else list(acl)
    if items and items[0].startswith(_STATIC_PREFIX):
        return None  # Postfix's shortcut: a static: table answers every name
    name = login_name(uid)
    if StringList(items, table_opener, name=parameter).matches(name):
        return None
    return name
