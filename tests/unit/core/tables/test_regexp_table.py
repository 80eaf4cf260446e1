"""POSIX regular expressions read with Python's re (sdmail/core/tables/regexp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmail.core.tables import open_table
from sdmail.core.tables.patterns import PatternError
from sdmail.core.tables.regexp import compile_regexp
from sdmail.core.tables.table import TableError

GOLDEN = Path(__file__).parents[3] / "data" / "tables"


def matches(pattern: str, key: str, flags: str = "") -> bool:
    return compile_regexp(pattern, flags).search(key) is not None


def test_golden_header_checks_answer_their_queries():
    table = open_table(f"regexp:{GOLDEN / 'header_checks.regexp'}")
    for line in (GOLDEN / "header_checks.regexp.queries").read_text().splitlines():
        key, _, expected = line.partition("\t")
        assert table.lookup(key) == (expected or None), key


def test_matching_is_case_insensitive_unless_i_toggles_it():
    assert matches("^joe@", "JOE@example.com")
    assert not matches("^joe@", "JOE@example.com", "i")


def test_dot_and_dollar_treat_newline_as_ordinary_by_default():
    assert matches("a.b", "a\nb")
    assert not matches("a$", "a\n")  # POSIX: $ only at the very end


def test_m_flag_makes_lines_and_stops_dot_and_negated_sets_at_newlines():
    assert matches("^b$", "a\nb\nc", "m")
    assert not matches("a.b", "a\nb", "m")
    assert not matches("a[^x]b", "a\nb", "m")
    assert matches("a[^x]b", "a\nb")


def test_posix_classes_equivalence_and_collating_elements():
    assert matches("^[[:alpha:]][[:digit:]]+[[:space:]]$", "x42 ")
    assert matches("^[[:upper:]]$", "q")  # case-insensitive by default
    assert not matches("^[[:upper:]]$", "q", "i")
    assert matches("^[[=e=]][[.-.]]$", "e-")
    assert matches("^[[:punct:]]+$", "!#$%")


def test_backslash_in_brackets_is_an_ordinary_character():
    assert matches("^[\\.]$", "\\")
    assert matches("^[\\.]$", ".")
    assert not matches("^[\\.]$", "x")


def test_bracket_edge_cases():
    assert matches("^[]a]$", "]")
    assert matches("^[^]a]$", "b")
    assert matches("^[a-]$", "-")
    assert matches("^[[]$", "[")
    assert matches("^[a&&b]$", "&")  # no Python set-operation warnings


def test_gnu_word_escapes():
    assert matches("\\<foo\\>", "a foo b")
    assert not matches("\\<foo\\>", "afoob")
    assert matches("\\w+\\s\\W", "ab !")
    assert matches("\\`ab\\'", "ab")


def test_backreferences_and_intervals():
    assert matches("^(a|b)\\1$", "bb")
    assert not matches("^(a|b)\\1$", "ab")
    assert matches("^a{2,3}$", "aaa")
    assert not matches("^a{2,3}$", "aaaa")
    assert matches("^a{$", "a{")  # not an interval: a literal brace


def test_non_ascii_text_is_literal_and_folds_only_ascii_letters():
    assert matches("^jürgen@", "Jürgen@example.com")
    assert not matches("^jürgen@", "JÜRGEN@example.com")


@pytest.mark.parametrize(
    ("pattern", "flags", "reason"),
    [
        ("\\d+", "", "\\d is not a POSIX regular expression escape (use [0-9] or [[:digit:]])"),
        ("(?:a)", "", '"(?" is not POSIX regular expression syntax'),
        ("a*?", "", "right after another"),
        ("a+{2}", "", "right after another"),
        ("a", "x", "basic regular expressions"),
        ("[[:alpah:]]", "", 'unknown character class "[:alpah:]"'),
        ("[z-a]", "", "invalid range"),
        ("[abc", "", "missing ']'"),
        ("abc\\", "", "trailing backslash"),
        ("[[.ab.]]", "", "unsupported collating element"),
        ("(a", "", "Python's re rejects the translated pattern"),
        ("*a", "", "Python's re rejects"),
    ],
)
def test_patterns_python_would_read_differently_are_refused(pattern, flags, reason):
    with pytest.raises(PatternError) as caught:
        compile_regexp(pattern, flags)
    assert reason in str(caught.value)


def test_refused_pattern_in_a_file_names_file_and_line(tmp_path):
    source = tmp_path / "checks"
    source.write_text("/ok/ OK\n\n/^[0-9]+\\d/ REJECT\n")
    with pytest.raises(TableError) as caught:
        open_table(f"regexp:{source}")
    assert str(caught.value).startswith(f"{source}, line 3: \\d is not a POSIX")
