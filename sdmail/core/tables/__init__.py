"""Lookup tables in Postfix's `type:name` notation: the registry of types and `open_table`.

OWNS the list of table types sdmail knows (`postconf -m` prints it) and the one
way to open a table from its spec, as it is written in main.cf:

    hash:/etc/aliases          compiled by postmap/postalias into /etc/aliases.db
    texthash:/etc/aliases      the source file read directly, no postmap
    inline:{ k=v, { k2 = v with spaces } }
    static:value               static:{ value with spaces }
    regexp:/etc/sdmail/x.re    POSIX regular expressions
    pcre:/etc/sdmail/x.pcre    Perl-compatible regular expressions
    cidr:/etc/sdmail/x.cidr    IP address and network/prefix patterns
    unix:passwd.byname         the user database (also unix:group.byname)
    proxy:unix:passwd.byname   the named table, opened directly (sdmail has no proxymap)

Each type lives in its own module; the pattern syntax regexp and pcre share
lives in `patterns`, the source text syntax in `source`, alias files in
`aliases`, and the search order over a list of tables in `addr_find`.
`proxy:` is opened here, because it opens its inner table through this
registry.

Failure modes: `open_table` raises TableError `unsupported dictionary type:
foo` for an unknown type, `need "type:name" form: text` for a spec without a
type, `table proxy:proxy:...` for a proxy of a proxy, and whatever the type's
opener raises (a missing file, a syntax error with file and line).  Every table
error is a TableError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from sdmail.core.tables.cidr import open_cidr
from sdmail.core.tables.hash import open_hash
from sdmail.core.tables.inline import open_inline
from sdmail.core.tables.pcre import open_pcre
from sdmail.core.tables.proxy import PROXY_TYPE, ProxyTable, check_inner_spec
from sdmail.core.tables.regexp import open_regexp
from sdmail.core.tables.static import open_static
from sdmail.core.tables.table import Table, TableError
from sdmail.core.tables.texthash import open_texthash
from sdmail.core.tables.unix import open_unix

#: An opener takes (spec, name, fold_keys) and returns the open table.
Opener = Callable[[str, str, bool], Table]


def _open_proxy(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `proxy:TYPE:NAME`: TYPE:NAME itself, under SPEC."""
    check_inner_spec(spec, name)
    return ProxyTable(spec, open_table(name, fold_keys=fold_keys))


TABLE_TYPES: Mapping[str, Opener] = MappingProxyType(
    {
        "cidr": open_cidr,
        "hash": open_hash,
        "inline": open_inline,
        "pcre": open_pcre,
        PROXY_TYPE: _open_proxy,
        "regexp": open_regexp,
        "static": open_static,
        "texthash": open_texthash,
        "unix": open_unix,
    }
)

#: The types postmap and postalias can build (the others are read as written).
BUILDABLE_TYPES = frozenset({"hash"})

__all__ = ["BUILDABLE_TYPES", "TABLE_TYPES", "Table", "TableError", "open_table", "split_spec"]


def split_spec(spec: str) -> tuple[str, str]:
    """`type:name` as (type, name); the name may itself hold colons."""
    table_type, colon, name = spec.partition(":")
    if not colon or not table_type:
        raise TableError(f'need "type:name" form: {spec}')
    return table_type, name


def open_table(spec: str, *, fold_keys: bool = True) -> Table:
    """The table SPEC (`type:name`) opened for lookups.

    FOLD_KEYS=False (postmap -f) looks keys up as given in fixed tables.
    """
    table_type, name = split_spec(spec)
    opener = TABLE_TYPES.get(table_type)
    if opener is None:
        raise TableError(f"unsupported dictionary type: {table_type}")
    return opener(spec, name, fold_keys)
