"""The type:name registry and open_table (sdmail/core/tables/__init__.py)."""

from __future__ import annotations

import pytest

from sdmail.core.tables import TABLE_TYPES, open_table, split_spec
from sdmail.core.tables.hash import write_table
from sdmail.core.tables.table import TableError


def test_registry_lists_the_types_postconf_m_prints():
    assert sorted(TABLE_TYPES) == [
        "cidr",
        "hash",
        "inline",
        "pcre",
        "proxy",
        "regexp",
        "static",
        "texthash",
        "unix",
    ]


def test_unknown_type_is_a_clear_error():
    with pytest.raises(TableError) as caught:
        open_table("foo:/etc/x")
    assert str(caught.value) == "unsupported dictionary type: foo"


@pytest.mark.parametrize("spec", ["/etc/aliases", ":/etc/aliases", ""])
def test_spec_without_type_is_a_clear_error(spec):
    with pytest.raises(TableError, match='need "type:name" form'):
        open_table(spec)


def test_name_keeps_its_own_colons():
    assert split_spec("inline:{ a=b:c }") == ("inline", "{ a=b:c }")


def test_each_type_opens_from_its_spec(tmp_path):
    source = tmp_path / "map"
    source.write_text("key value\n")
    write_table(str(source), [("key", "value")], mode=0o644)
    (tmp_path / "map.re").write_text("/^k/ value\n")
    for spec in [
        f"hash:{source}",
        f"texthash:{source}",
        "inline:{ key=value }",
        "static:value",
        f"regexp:{tmp_path / 'map.re'}",
        f"pcre:{tmp_path / 'map.re'}",
        f"proxy:hash:{source}",
    ]:
        with open_table(spec) as table:
            assert table.spec == spec
            assert table.lookup("KEY") == "value", spec


def test_fixed_and_pattern_tables_say_which_they_are():
    assert open_table("static:x").fixed
    assert open_table("inline:{a=b}").fixed
    assert not open_table("regexp:{ {/a/ b} }").fixed


def test_pattern_tables_cannot_list_themselves():
    with pytest.raises(TableError, match="sequence operation is not supported"):
        list(open_table("pcre:{ {/a/ b} }").items())
