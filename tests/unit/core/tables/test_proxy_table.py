"""proxy:TYPE:NAME opens TYPE:NAME directly (sdmail/core/tables/proxy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmail.core.config import load_config
from sdmail.core.tables import open_table
from sdmail.core.tables.addr_find import LookupSettings, find_alias
from sdmail.core.tables.hash import write_table
from sdmail.core.tables.table import TableError

PLUS = LookupSettings(
    recipient_delimiter="+",
    owner_request_special=True,
    double_bounce_sender="double-bounce",
    propagate_unmatched_extensions=("canonical", "virtual"),
)


def root_line() -> str:
    lines = Path("/etc/passwd").read_text().splitlines()
    return next(line for line in lines if line.startswith("root:"))


def test_proxy_answers_what_the_inner_table_answers():
    table = open_table("proxy:unix:passwd.byname")
    assert table.lookup("root") == root_line()
    assert table.lookup("no-such-name-sdmail-test") is None


def test_proxy_keeps_its_whole_spec_and_the_inner_kind():
    table = open_table("proxy:unix:passwd.byname")
    assert table.spec == "proxy:unix:passwd.byname"
    assert table.fixed
    assert not open_table("proxy:regexp:{ {/^a/ b} }").fixed


def test_proxy_passes_fold_keys_on(tmp_path):
    source = tmp_path / "map"
    write_table(str(source), [("Key", "value")], mode=0o644)
    assert open_table(f"proxy:hash:{source}").lookup("KEY") is None
    assert open_table(f"proxy:hash:{source}", fold_keys=False).lookup("Key") == "value"


def test_proxy_lists_what_the_inner_table_lists(tmp_path):
    source = tmp_path / "map"
    write_table(str(source), [("a", "1"), ("b", "2")], mode=0o644)
    assert sorted(open_table(f"proxy:hash:{source}").items()) == [("a", "1"), ("b", "2")]


def test_proxy_of_a_proxy_is_an_error():
    with pytest.raises(TableError) as caught:
        open_table("proxy:proxy:unix:passwd.byname")
    assert "proxy:proxy:unix:passwd.byname" in str(caught.value)
    assert "cannot name another" in str(caught.value)


@pytest.mark.parametrize("spec", ["proxy:", "proxy:foo", "proxy::x"])
def test_proxy_without_inner_type_is_an_error(spec):
    with pytest.raises(TableError) as caught:
        open_table(spec)
    assert str(caught.value) == f'need "proxy:type:name" form: {spec}'


def test_proxy_of_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(TableError, match="no-such-table"):
        open_table(f"proxy:texthash:{tmp_path / 'no-such-table'}")


def test_default_local_recipient_maps_open_and_find_users_and_aliases(tmp_path):
    aliases = tmp_path / "aliases"
    aliases.write_text("postmaster root\n")
    (tmp_path / "main.cf").write_text(f"alias_maps = texthash:{aliases}\n")
    cfg = load_config(tmp_path)
    assert "local_recipient_maps" not in cfg.explicit()  # the built-in default is in force
    tables = [open_table(spec) for spec in cfg.get_list("local_recipient_maps")]
    assert [table.spec for table in tables] == [
        "proxy:unix:passwd.byname",
        f"texthash:{aliases}",
    ]
    assert find_alias(tables, "root", PLUS).value == root_line()
    assert find_alias(tables, "Root+ext", PLUS).value == root_line()
    assert find_alias(tables, "postmaster", PLUS).value == "root"
    assert find_alias(tables, "nobody-here-sdmail-test", PLUS) is None
