"""The syntax regexp: and pcre: tables share (sdmail/core/tables/patterns.py)."""

from __future__ import annotations

import pytest

from sdmail.core.tables import open_table
from sdmail.core.tables.patterns import PatternError, parse_result, split_pattern
from sdmail.core.tables.table import TableError


def table_of(tmp_path, text: str, table_type: str = "regexp"):
    source = tmp_path / f"t.{table_type}"
    source.write_text(text)
    return open_table(f"{table_type}:{source}"), source


@pytest.mark.parametrize("table_type", ["regexp", "pcre"])
def test_first_matching_rule_answers(tmp_path, table_type):
    table, _ = table_of(tmp_path, "/^a/ first\n/^ab/ second\n/b$/ third\n", table_type)
    assert table.lookup("abc") == "first"
    assert table.lookup("xb") == "third"
    assert table.lookup("xyz") is None


@pytest.mark.parametrize("table_type", ["regexp", "pcre"])
def test_negated_rule_answers_when_pattern_does_not_match(tmp_path, table_type):
    table, _ = table_of(tmp_path, "!/@/ no domain\n", table_type)
    assert table.lookup("joe") == "no domain"
    assert table.lookup("joe@x") is None


@pytest.mark.parametrize("table_type", ["regexp", "pcre"])
def test_if_endif_blocks_nest_and_negate(tmp_path, table_type):
    text = (
        "if /@example\\.com$/\n"
        "if !/^owner-/\n"
        "/^(.*)-outgoing@/ list $1\n"
        "endif\n"
        "/^owner-/ owner\n"
        "endif\n"
        "/outgoing/ elsewhere\n"
    )
    table, _ = table_of(tmp_path, text, table_type)
    assert table.lookup("news-outgoing@example.com") == "list news"
    assert table.lookup("owner-news-outgoing@example.com") == "owner"
    assert table.lookup("news-outgoing@example.org") == "elsewhere"


@pytest.mark.parametrize("table_type", ["regexp", "pcre"])
def test_substitution_forms_and_dollar_dollar(tmp_path, table_type):
    table, _ = table_of(tmp_path, "/^(a+)(b*)(c)?$/ $1.${2}.$(3).$$1 $\n", table_type)
    assert table.lookup("aab") == "aa.b..$1 $"
    assert table.lookup("ac") == "a..c.$1 $"


@pytest.mark.parametrize("table_type", ["regexp", "pcre"])
def test_other_delimiters_and_escaped_delimiter(tmp_path, table_type):
    table, _ = table_of(tmp_path, "~^a/b~ slash\n%^x\\%y% percent\n/c\\/d/ escaped\n", table_type)
    assert table.lookup("a/b") == "slash"
    assert table.lookup("x%y") == "percent"
    assert table.lookup("c/d") == "escaped"


@pytest.mark.parametrize("table_type", ["regexp", "pcre"])
def test_continuation_line_continues_the_result(tmp_path, table_type):
    table, _ = table_of(tmp_path, "/^noddy$/\n  550 a funny\n  one\n", table_type)
    assert table.lookup("noddy") == "550 a funny one"


def test_rules_in_the_table_name():
    table = open_table("regexp:{ {/^a/ first}, { /^b/ second } }")
    assert table.lookup("abc") == "first"
    assert table.lookup("bcd") == "second"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("/a/ x\n/b/\n", 2, "missing result after pattern"),
        ("a/ x\n", 1, "invalid pattern delimiter 'a'"),
        ("/abc x\n", 1, "missing closing '/' after pattern"),
        ("/a/q x\n", 1, 'unknown regexp flag "q"'),
        ("/(a)/ $2\n", 1, "out of range replacement index $2"),
        ("!/(a)/ $1\n", 1, "$number substitution in the result of a negated pattern"),
        ("/a/ ${name}\n", 1, "non-numeric replacement index"),
        ("/a/ x\nendif\n", 2, '"endif" without matching "if"'),
        ("/a/ x\nif /b/\n/c/ d\n", 2, '"if" without matching "endif"'),
        ("if /b/ extra\nendif\n", 1, 'extra text after "if" pattern'),
        ("if /b/\nendif now\n", 2, 'extra text after "endif"'),
    ],
)
def test_syntax_errors_name_file_and_line(tmp_path, text, line, message):
    source = tmp_path / "t.regexp"
    source.write_text(text)
    with pytest.raises(TableError) as caught:
        open_table(f"regexp:{source}")
    assert str(caught.value).startswith(f"{source}, line {line}: {message}")


def test_split_pattern_parts():
    assert split_pattern("!/a b/im  the result ") == (True, "a b", "im", "the result")
    with pytest.raises(PatternError):
        split_pattern("!")


def test_result_text_without_dollars_is_one_part():
    assert parse_result("OK").parts == ("OK",)
    assert parse_result("a$1b").parts == ("a", 1, "b")
