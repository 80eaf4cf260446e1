"""unix:passwd.byname and unix:group.byname (sdmail/core/tables/unix.py), on this machine's
own user and group databases."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.tables import open_table
from sdmail.core.tables.table import TableError


def file_entries(path: str) -> dict[str, str]:
    """name -> the whole line, from /etc/passwd or /etc/group."""
    lines = Path(path).read_text().splitlines()
    return {line.split(":", 1)[0]: line for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("name", ["root", "daemon"])
def test_passwd_lookup_answers_the_passwd_line(name):
    table = open_table("unix:passwd.byname")
    assert table.lookup(name) == file_entries("/etc/passwd")[name]


def test_root_entry_has_postfix_field_order():
    name, password, uid, gid, _gecos, home, _shell = (
        open_table("unix:passwd.byname").lookup("root").split(":")
    )
    assert (name, password, uid, gid, home) == ("root", "x", "0", "0", "/root")


@pytest.mark.parametrize("name", ["root", "daemon"])
def test_group_lookup_answers_the_group_line(name):
    table = open_table("unix:group.byname")
    assert table.lookup(name) == file_entries("/etc/group")[name]


def test_group_members_are_joined_with_commas_as_in_etc_group():
    table = open_table("unix:group.byname")
    with_members = {n: line for n, line in file_entries("/etc/group").items() if line[-1] != ":"}
    for name, line in with_members.items():
        assert table.lookup(name) == line


@pytest.mark.parametrize("spec", ["unix:passwd.byname", "unix:group.byname"])
def test_unknown_names_are_not_found(spec):
    table = open_table(spec)
    assert table.lookup("no-such-name-sdmail-test") is None
    assert table.lookup("") is None


@pytest.mark.parametrize("spec", ["unix:passwd.byname", "unix:group.byname"])
def test_keys_are_folded_like_other_fixed_tables(spec):
    assert open_table(spec).lookup("ROOT") == open_table(spec).lookup("root")


@pytest.mark.parametrize("spec", ["unix:passwd.byname", "unix:group.byname"])
def test_postmap_f_looks_names_up_exactly(spec):
    table = open_table(spec, fold_keys=False)
    assert table.lookup("Root") is None
    assert table.lookup("root") is not None


@given(st.text(max_size=40))
def test_any_key_is_found_or_not_found_without_an_error(key):
    for spec in ("unix:passwd.byname", "unix:group.byname"):
        value = open_table(spec).lookup(key)
        assert value is None or value.split(":", 1)[0] == key.lower()


def test_unknown_unix_table_is_a_clear_error():
    with pytest.raises(TableError) as caught:
        open_table("unix:shadow.byname")
    assert str(caught.value) == "unknown table: unix:shadow.byname"


def test_unix_tables_are_fixed_and_cannot_list_themselves():
    table = open_table("unix:passwd.byname")
    assert table.fixed
    with pytest.raises(TableError, match="sequence operation is not supported"):
        list(table.items())


def test_unreadable_database_is_an_error_not_a_miss(monkeypatch):
    # The C library is the door here: make it answer nothing, as a broken NSS would.
    def nothing(_key: object) -> pwd.struct_passwd:
        raise KeyError("no database")

    table = open_table("unix:passwd.byname")
    monkeypatch.setattr(pwd, "getpwnam", nothing)
    monkeypatch.setattr(pwd, "getpwuid", nothing)
    with pytest.raises(TableError, match="cannot access UNIX password database"):
        table.lookup("root")


def test_a_missing_name_after_the_database_answered_is_just_not_found(monkeypatch):
    table = open_table("unix:passwd.byname")
    assert table.lookup("root") is not None
    monkeypatch.setattr(pwd, "getpwuid", lambda _uid: (_ for _ in ()).throw(KeyError(0)))
    assert table.lookup("no-such-name-sdmail-test") is None


def test_postmap_q_finds_a_user(run_postmap):
    done = run_postmap("-q", "daemon", "unix:passwd.byname")
    assert (done.returncode, done.stdout) == (0, file_entries("/etc/passwd")["daemon"] + "\n")
