"""static: tables (sdmail/core/tables/static.py)."""

from __future__ import annotations

import pytest

from sdmail.core.tables import open_table
from sdmail.core.tables.table import TableError


def test_every_key_finds_the_value():
    table = open_table("static:relay:[mail.example.com]:587")
    assert table.lookup("anything") == "relay:[mail.example.com]:587"
    assert table.lookup("") == "relay:[mail.example.com]:587"


def test_braced_value_holds_spaces():
    assert open_table("static:{ 550 go away }").lookup("x") == "550 go away"


def test_empty_static_answers_empty_string():
    assert open_table("static:").lookup("x") == ""


def test_unclosed_brace_is_an_error():
    with pytest.raises(TableError) as caught:
        open_table("static:{ oops")
    assert str(caught.value) == 'bad syntax: "static:{ oops"; need "static:{value}"'
