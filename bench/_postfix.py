"""Postfix's own postmap, unpacked from Debian's package into a scratch directory, never installed.

`unpack_postfix(workdir)` finds Debian's postfix package (in apt's package
cache, else `apt-get download postfix` into WORKDIR), unpacks it there with
`dpkg-deb -x` (no maintainer scripts run, nothing outside WORKDIR changes),
and writes a config directory whose main.cf Postfix accepts. Its postmap then
runs with LD_LIBRARY_PATH pointing at the unpacked usr/lib/postfix (its
libpostfix-*.so) and `-c` that directory; the other libraries it needs
(libdb5.3, libicu72, ...) must already be on the machine.

Postfix's postmap refuses a main.cf that is empty here: `mail_owner` must name
an existing unprivileged user (the default, `postfix`, does not exist without
the package's scripts), `setgid_group` an existing group (default `postdrop`),
and `default_privs`, mail_owner and setgid_group must not share a user or a
group ID with one another. So main.cf names three such accounts picked from
this machine's passwd and group files.

Failure modes: `PostfixUnavailable`, whose text says which step failed and
why (no apt-get, no package, download refused, unpack failed, no accounts to
name, the unpacked postmap does not run), so the caller can print it.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _tables import Postmap

APT_ARCHIVES = Path("/var/cache/apt/archives")
_TIMEOUT = 180


class PostfixUnavailable(Exception):
    """Postfix's postmap cannot be made to run here; the text says why."""


@dataclass(frozen=True)
class Accounts:
    mail_owner: str
    default_privs: str
    setgid_group: str


def _run(command: Sequence[str], cwd: Path | None = None) -> str:
    """COMMAND's stdout; PostfixUnavailable naming the command if it is missing or fails."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise PostfixUnavailable(f"{command[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise PostfixUnavailable(f"{' '.join(command)}: no answer in {_TIMEOUT} s") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")]
        last = (errors or done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise PostfixUnavailable(f"{' '.join(command)}: exit {done.returncode}: {last}")
    return done.stdout


def find_package(workdir: Path) -> Path:
    """The postfix .deb for this machine: apt's cached copy, else one apt-get downloads."""
    arch = _run(["dpkg", "--print-architecture"]).strip()
    cached = sorted(APT_ARCHIVES.glob(f"postfix_*_{arch}.deb"), key=lambda p: p.stat().st_mtime)
    if cached:
        return cached[-1]
    download = workdir / "download"
    download.mkdir()
    _run(["apt-get", "download", "postfix"], cwd=download)
    debs = sorted(download.glob("postfix_*.deb"))
    if not debs:
        raise PostfixUnavailable("apt-get download postfix: exit 0 but no postfix_*.deb")
    return debs[0]


def pick_accounts() -> Accounts:
    """Two users and a group, none root, no two sharing an ID, for Postfix's main.cf."""
    users = sorted(
        (u for u in pwd.getpwall() if u.pw_uid != 0 and u.pw_gid != 0), key=lambda u: u.pw_uid
    )
    if not users:
        raise PostfixUnavailable("no unprivileged user to name as mail_owner")
    owner = users[0]
    others = [u for u in users if u.pw_uid != owner.pw_uid and u.pw_gid != owner.pw_gid]
    # nobody is Postfix's own default_privs; take it when it fits.
    others.sort(key=lambda u: u.pw_name != "nobody")
    if not others:
        raise PostfixUnavailable("no second unprivileged user to name as default_privs")
    privs = others[0]
    taken = {0, owner.pw_gid, privs.pw_gid}
    groups = sorted((g for g in grp.getgrall() if g.gr_gid not in taken), key=lambda g: g.gr_gid)
    if not groups:
        raise PostfixUnavailable("no group to name as setgid_group")
    return Accounts(owner.pw_name, privs.pw_name, groups[0].gr_name)


def write_main_cf(config_dir: Path, accounts: Accounts) -> None:
    config_dir.mkdir()
    (config_dir / "main.cf").write_text(
        "# Postfix refuses to run without existing accounts for these three.\n"
        f"mail_owner = {accounts.mail_owner}\n"
        f"default_privs = {accounts.default_privs}\n"
        f"setgid_group = {accounts.setgid_group}\n",
        encoding="ascii",
    )


def _check_runs(postmap: Postmap, workdir: Path) -> None:
    """Build and query a one-line table, so a postmap that cannot run says why up front."""
    source = workdir / "smoke"
    source.write_text("key value\n", encoding="ascii")
    build = [*postmap.argv, f"hash:{source}"]
    query = [*postmap.argv, "-q", "key", f"hash:{source}"]
    for args in (build, query):
        try:
            done = subprocess.run(
                args,
                capture_output=True,
                text=True,
                env=dict(postmap.env),
                timeout=_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixUnavailable(f"its postmap does not run: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise PostfixUnavailable(f"its postmap exits {done.returncode}: {last}")
    if done.stdout.strip() != "value":
        raise PostfixUnavailable(f"its postmap -q answered {done.stdout.strip()!r}, not 'value'")


def unpack_postfix(workdir: Path) -> tuple[Postmap, str]:
    """Postfix's postmap unpacked below WORKDIR (a new directory), and the package version."""
    workdir.mkdir()
    package = find_package(workdir)
    version = _run(["dpkg-deb", "-f", str(package), "Version"]).strip()
    root = workdir / "root"
    _run(["dpkg-deb", "-x", str(package), str(root)])
    binary = root / "usr" / "sbin" / "postmap"
    libraries = root / "usr" / "lib" / "postfix"
    if not binary.is_file():
        raise PostfixUnavailable(f"{package.name} holds no usr/sbin/postmap")
    config_dir = workdir / "etc"
    write_main_cf(config_dir, pick_accounts())
    search_path = [str(libraries), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(search_path))
    postmap = Postmap(f"Postfix {version} postmap", (str(binary), "-c", str(config_dir)), env)
    _check_runs(postmap, workdir)
    return postmap, version
