"""proxy: tables, which answer from the table they name (`proxy:TYPE:NAME`).

Postfix reaches the inner table through its proxymap daemon, for two reasons:
a chrooted daemon cannot open files outside the chroot, and a daemon that runs
as the unprivileged mail owner cannot read a table only root may read; it also
shares one open table between many processes.  sdmail has no proxymap and no
chroot: a component opens the inner table itself, directly.  That is enough
where it reads the table with enough privilege, or where the table is readable
by the component's user (`unix:passwd.byname` is, through NSS, for everyone;
a `hash:` map that `postmap` built from a world-readable source is too).  A
table that only root may read stays unreadable to a component running as
`sdmail`, and opening it fails with the file named, as any table would.  So
the default `local_recipient_maps = proxy:unix:passwd.byname $alias_maps` works
as written, and a main.cf copied from Postfix keeps its `proxy:` prefixes.

Postfix's `proxy_read_maps` (which tables proxymap agrees to open) has nothing
to guard here: no other process opens the table on a caller's behalf.

The proxy table keeps the inner table's answers, kind (fixed or pattern) and
listing; only its spec, in messages and in `Found.table`, is the whole
`proxy:TYPE:NAME`.

Failure modes: TableError `need "proxy:type:name" form` for a name without a
type, TableError for `proxy:proxy:...` (a proxy of a proxy), and whatever
opening the inner table raises (see `open_table`).
"""

from __future__ import annotations

from collections.abc import Iterator

from sdmail.core.tables.table import Table, TableError

PROXY_TYPE = "proxy"


def check_inner_spec(spec: str, inner_spec: str) -> None:
    """Refuse a proxy without an inner `type:name`, or whose inner table is a proxy."""
    inner_type, colon, _ = inner_spec.partition(":")
    if not colon or not inner_type:
        raise TableError(f'need "{PROXY_TYPE}:type:name" form: {spec}')
    if inner_type == PROXY_TYPE:
        raise TableError(f'table {spec}: a "{PROXY_TYPE}:" table cannot name another one')


class ProxyTable(Table):
    """The inner table, under the proxy's name."""

    def __init__(self, spec: str, inner: Table) -> None:
        super().__init__(spec)
        self.inner = inner
        self.fixed = inner.fixed

    def lookup(self, key: str) -> str | None:
        return self.inner.lookup(key)

    def items(self) -> Iterator[tuple[str, str]]:
        return self.inner.items()

    def close(self) -> None:
        self.inner.close()
