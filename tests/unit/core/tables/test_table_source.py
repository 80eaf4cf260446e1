"""Postfix's table source syntax (sdmail/core/tables/source.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.tables.source import (
    WHITESPACE,
    Duplicates,
    Entry,
    decode_lines,
    format_entry,
    merge_entries,
    parse_table_text,
    read_table_file,
)
from sdmail.core.tables.table import TableError


def pairs(text: str) -> list[tuple[str, str]]:
    return [(entry.key, entry.value) for entry in parse_table_text(text, "virtual")]


def test_key_whitespace_value_with_comments_and_blank_lines():
    text = "# a comment\n\nuser@example.com   joe@example.net\n   \n  # indented comment\n"
    assert pairs(text) == [("user@example.com", "joe@example.net")]


def test_value_keeps_inner_spaces_and_hash_signs():
    assert pairs("key  550 go away # not a comment  \n") == [("key", "550 go away # not a comment")]


def test_continuation_lines_join_with_one_space():
    assert pairs("list a@x,\n    b@y,\n\tc@z\nnext v\n") == [
        ("list", "a@x, b@y, c@z"),
        ("next", "v"),
    ]


def test_comment_between_continuation_lines_is_skipped():
    assert pairs("list a,\n# note\n  b\n") == [("list", "a, b")]


def test_entries_carry_the_line_they_start_on():
    entries = parse_table_text("\n# c\nfirst v\n\nsecond w\n  more\n", "t")
    assert [(e.key, e.line) for e in entries] == [("first", 3), ("second", 5)]


def test_quoted_key_holds_spaces_quotes_and_backslashes():
    assert pairs('"john smith" js@example.com\n') == [("john smith", "js@example.com")]
    assert pairs(r'"say \"hi\" \\ now" v' + "\n") == [('say "hi" \\ now', "v")]


def test_backslash_before_other_characters_stays_in_quoted_key():
    assert pairs(r'"a\b c" v') == [(r"a\b c", "v")]


def test_crlf_line_endings_do_not_leak_into_values():
    assert pairs("key value\r\nother v2\r\n") == [("key", "value"), ("other", "v2")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lonely\n", "virtual, line 1: expected format: key whitespace value"),
        ("ok v\n\nkey   \n", "virtual, line 3: expected format: key whitespace value"),
        ("  starts indented v\n", "virtual, line 1: logical line must not start with whitespace"),
        ('"unclosed key v\n', "virtual, line 1: missing closing '\"' in quoted text"),
        ('"" v\n', "virtual, line 1: empty quoted key"),
        ('"key"value\n', "virtual, line 1: quoted key must be followed by whitespace"),
        ("a b\nk \0v\n", "virtual, line 2: NUL character in text"),
    ],
)
def test_syntax_errors_name_file_and_line(text, message):
    with pytest.raises(TableError) as caught:
        parse_table_text(text, "virtual")
    assert str(caught.value) == message


def test_unreadable_file_is_an_open_error(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(TableError) as caught:
        read_table_file(missing)
    assert str(caught.value) == f"open {missing}: No such file or directory"


def test_latin1_comment_is_skipped_but_latin1_data_is_an_error(tmp_path):
    source = tmp_path / "virtual"
    source.write_bytes(b"# Fran\xe7ois\nkey value\n")
    assert [(e.key, e.value) for e in read_table_file(source)] == [("key", "value")]
    source.write_bytes(b"key value\nfran\xe7ois v\n")
    with pytest.raises(TableError, match=r"virtual, line 2: text is not valid UTF-8"):
        read_table_file(source)


def test_utf8_keys_and_values_are_kept():
    assert decode_lines("jürgen wert\n".encode(), "t")[0] == "jürgen wert"


def collect_warnings(entries, duplicates, existing=None, fold=True):
    warnings: list[str] = []
    table = merge_entries(
        entries,
        "/etc/x",
        fold_keys=fold,
        duplicates=duplicates,
        warn=warnings.append,
        existing=existing,
    )
    return table, warnings


DUPLICATED = [Entry("Key", "first", 1), Entry("other", "o", 2), Entry("KEY", "second", 3)]


def test_duplicate_keeps_first_and_warns_with_file_and_line():
    table, warnings = collect_warnings(DUPLICATED, Duplicates.WARN)
    assert table == {"key": "first", "other": "o"}
    assert warnings == ['/etc/x, line 3: duplicate entry: "key"']


def test_duplicate_with_replace_keeps_last_silently():
    table, warnings = collect_warnings(DUPLICATED, Duplicates.REPLACE)
    assert table["key"] == "second"
    assert warnings == []


def test_duplicate_with_ignore_keeps_first_silently():
    table, warnings = collect_warnings(DUPLICATED, Duplicates.IGNORE)
    assert table["key"] == "first"
    assert warnings == []


def test_without_folding_keys_differing_in_case_are_distinct():
    table, warnings = collect_warnings(DUPLICATED, Duplicates.WARN, fold=False)
    assert table == {"Key": "first", "other": "o", "KEY": "second"}
    assert warnings == []


def test_existing_entries_count_as_seen_first():
    table, warnings = collect_warnings([Entry("a", "new", 1)], Duplicates.WARN, {"a": "old"})
    assert table == {"a": "old"}
    assert warnings == ['/etc/x, line 1: duplicate entry: "a"']


# -- properties ------------------------------------------------------------------------
keys = st.text(min_size=1).filter(lambda k: "\n" not in k and "\0" not in k)
values = (
    st.text(min_size=1)
    .map(lambda v: v.strip(WHITESPACE))
    .filter(lambda v: v and "\n" not in v and "\0" not in v)
)


@given(st.lists(st.tuples(keys, values), max_size=8))
def test_formatted_entries_parse_back_to_the_same_keys_and_values(table):
    text = "".join(format_entry(key, value) + "\n" for key, value in table)
    assert pairs(text) == table


@given(st.text())
def test_arbitrary_text_parses_or_fails_with_table_error(text):
    try:
        entries = parse_table_text(text, "fuzz")
    except TableError as exc:
        assert exc.path == "fuzz"
        assert exc.line is not None
    else:
        for entry in entries:
            assert entry.key and entry.value


@given(st.binary())
def test_arbitrary_bytes_decode_or_fail_with_table_error(data):
    try:
        decode_lines(data, "fuzz")
    except TableError as exc:
        assert "not valid UTF-8" in str(exc)
