"""texthash: tables (sdmail/core/tables/texthash.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sdmail.core.tables import open_table
from sdmail.core.tables.table import TableError

GOLDEN = Path(__file__).parents[3] / "data" / "tables"


def test_golden_virtual_source_is_served_directly():
    table = open_table(f"texthash:{GOLDEN / 'virtual.in'}")
    expected = dict(line.split("\t") for line in (GOLDEN / "virtual.ref").read_text().splitlines())
    assert dict(table.items()) == expected
    assert table.lookup("POSTMASTER@example.com") == "admin@example.net"
    assert table.lookup("nobody@example.com") is None


def test_duplicate_is_logged_and_first_kept(tmp_path, caplog):
    source = tmp_path / "t"
    source.write_text("a 1\nA 2\n")
    with caplog.at_level(logging.WARNING):
        table = open_table(f"texthash:{source}")
    assert table.lookup("a") == "1"
    assert f'{source}, line 2: duplicate entry: "a"' in caplog.text


def test_no_change_detection_after_open(tmp_path):
    source = tmp_path / "t"
    source.write_text("a 1\n")
    table = open_table(f"texthash:{source}")
    source.write_text("a 2\n")
    assert table.lookup("a") == "1"
    assert open_table(f"texthash:{source}").lookup("a") == "2"


def test_fold_keys_off_looks_up_exact_case(tmp_path):
    source = tmp_path / "t"
    source.write_text("Mixed 1\n")
    assert open_table(f"texthash:{source}", fold_keys=False).lookup("Mixed") == "1"
    assert open_table(f"texthash:{source}", fold_keys=False).lookup("mixed") is None


def test_syntax_error_names_file_and_line(tmp_path):
    source = tmp_path / "t"
    source.write_text("a 1\nb\n")
    with pytest.raises(TableError, match=rf"^{source}, line 2: expected format"):
        open_table(f"texthash:{source}")


def test_missing_file_is_an_open_error(tmp_path):
    with pytest.raises(TableError, match="No such file or directory"):
        open_table(f"texthash:{tmp_path / 'none'}")
