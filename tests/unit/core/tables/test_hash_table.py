"""hash: tables, their atomic writes and their readers (sdmail/core/tables/hash.py)."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest

from sdmail.core.tables.hash import (
    HashTable,
    db_path,
    read_entries,
    update_lock,
    write_table,
)
from sdmail.core.tables.table import TableError


@pytest.fixture
def name(tmp_path):
    return str(tmp_path / "virtual")


def test_written_table_answers_its_keys_and_nothing_else(name):
    write_table(name, [("joe@example.com", "joe@example.net"), ("@x.org", "all@y")], mode=0o644)
    table = HashTable(f"hash:{name}", name)
    assert table.lookup("joe@example.com") == "joe@example.net"
    assert table.lookup("@x.org") == "all@y"
    assert table.lookup("jim@example.com") is None


def test_lookup_folds_the_key_unless_told_not_to(name):
    write_table(name, [("joe", "lower"), ("Jim", "mixed")], mode=0o644)
    folded = HashTable(f"hash:{name}", name)
    assert folded.lookup("JOE") == "lower"
    assert folded.lookup("Jim") is None
    exact = HashTable(f"hash:{name}", name, fold_keys=False)
    assert exact.lookup("Jim") == "mixed"
    assert exact.lookup("JOE") is None


def test_values_are_kept_as_written(name):
    write_table(name, [("k", '"|/usr/bin/x  -y", Joe@Example.COM')], mode=0o644)
    assert HashTable("hash:" + name, name).lookup("k") == '"|/usr/bin/x  -y", Joe@Example.COM'


def test_the_file_is_name_dot_db_with_the_mode_asked_for(name):
    path = write_table(name, [("a", "b")], mode=0o640)
    assert path == db_path(name)
    assert str(path) == name + ".db"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_items_lists_every_entry(name):
    write_table(name, [("b", "2"), ("a", "1")], mode=0o644)
    assert sorted(HashTable("hash:" + name, name).items()) == [("a", "1"), ("b", "2")]
    assert read_entries(name) == {"a": "1", "b": "2"}


def test_read_entries_of_a_missing_table_is_empty(name):
    assert read_entries(name) == {}


def test_missing_table_is_an_open_error(name):
    with pytest.raises(TableError) as caught:
        HashTable("hash:" + name, name)
    assert str(caught.value) == f"open database {name}.db: No such file or directory"


def test_berkeley_db_or_other_foreign_file_is_refused_clearly(name):
    with open(name + ".db", "wb") as foreign:
        foreign.write(b"\x00\x06\x15\x61" + b"\x00" * 4092)  # a Berkeley DB hash magic
    with pytest.raises(TableError, match=rf"open database {name}\.db: file is not a database"):
        HashTable("hash:" + name, name)


def test_sqlite_file_that_is_not_ours_is_refused(name):
    connection = sqlite3.connect(name + ".db")
    connection.execute("CREATE TABLE other (x)")
    connection.commit()
    connection.close()
    with pytest.raises(TableError, match="not an sdmail hash table"):
        HashTable("hash:" + name, name)


def test_failed_build_leaves_old_table_and_no_temporary_file(name, tmp_path):
    write_table(name, [("key", "old")], mode=0o644)

    def entries():
        yield ("key", "new")
        raise TableError("source broke halfway")

    with pytest.raises(TableError, match="source broke halfway"):
        write_table(name, entries(), mode=0o644)
    assert HashTable("hash:" + name, name).lookup("key") == "old"
    assert sorted(os.listdir(tmp_path)) == ["virtual.db"]


def test_unwritable_directory_is_a_table_error(tmp_path):
    with pytest.raises(TableError, match="No such file or directory"):
        write_table(str(tmp_path / "no" / "such" / "dir"), [("a", "b")], mode=0o644)


def test_open_reader_keeps_old_answers_until_recheck(name):
    write_table(name, [("key", "old")], mode=0o644)
    table = HashTable("hash:" + name, name, recheck_interval=3600)
    write_table(name, [("key", "new")], mode=0o644)
    assert table.lookup("key") == "old"


def test_open_reader_notices_a_rebuilt_table(name):
    write_table(name, [("key", "old"), ("gone", "x")], mode=0o644)
    table = HashTable("hash:" + name, name, recheck_interval=0)
    assert table.lookup("key") == "old"
    write_table(name, [("key", "new"), ("added", "y")], mode=0o644)
    assert table.lookup("key") == "new"
    assert table.lookup("added") == "y"
    assert table.lookup("gone") is None


def test_reader_keeps_serving_when_the_table_is_removed(name):
    write_table(name, [("key", "old")], mode=0o644)
    table = HashTable("hash:" + name, name, recheck_interval=0)
    os.unlink(name + ".db")
    assert table.lookup("key") == "old"


def test_reader_keeps_old_table_when_replacement_is_broken(name, caplog):
    write_table(name, [("key", "old")], mode=0o644)
    table = HashTable("hash:" + name, name, recheck_interval=0)
    broken = name + ".broken"
    with open(broken, "wb") as junk:
        junk.write(b"junk" * 1024)
    os.rename(broken, name + ".db")
    assert table.lookup("key") == "old"
    assert "still using the previous table" in caplog.text


def test_key_that_is_not_text_is_not_found(name):
    write_table(name, [("a", "b")], mode=0o644)
    assert HashTable("hash:" + name, name).lookup("bad\udcff") is None


def test_warns_when_source_is_newer_than_table(name, caplog):
    write_table(name, [("a", "b")], mode=0o644)
    with open(name, "w") as source:
        source.write("a b\n")
    later = os.stat(name + ".db").st_mtime_ns + 10**9
    os.utime(name, ns=(later, later))
    HashTable("hash:" + name, name)
    assert f"database {name}.db is older than source file {name}" in caplog.text


def test_update_lock_excludes_a_second_writer_until_released(name):
    write_table(name, [("a", "1")], mode=0o644)
    events: list[str] = []

    def second_writer():
        with update_lock(name):
            events.append("second")

    with update_lock(name):
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.3)  # the second writer is blocked in flock now
        events.append("first done")
    thread.join(5)
    assert events == ["first done", "second"]


def test_update_lock_follows_the_table_to_its_new_file(name):
    write_table(name, [("a", "1")], mode=0o644)
    events: list[str] = []

    def second_writer():
        with update_lock(name):
            events.append(read_entries(name)["a"])

    with update_lock(name):
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.2)
        write_table(name, [("a", "2")], mode=0o644)
    thread.join(5)
    assert events == ["2"]
