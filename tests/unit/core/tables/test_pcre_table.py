"""Perl-compatible regular expressions read with Python's re (sdmail/core/tables/pcre.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdmail.core.tables import open_table
from sdmail.core.tables.patterns import PatternError
from sdmail.core.tables.pcre import compile_pcre
from sdmail.core.tables.table import TableError

GOLDEN = Path(__file__).parents[3] / "data" / "tables"


def matches(pattern: str, key: str, flags: str = "") -> bool:
    return compile_pcre(pattern, flags).search(key) is not None


def test_golden_access_map_answers_its_queries():
    table = open_table(f"pcre:{GOLDEN / 'access.pcre'}")
    for line in (GOLDEN / "access.pcre.queries").read_text().splitlines():
        key, _, expected = line.partition("\t")
        assert table.lookup(key) == (expected or None), key


def test_default_flags_case_insensitive_and_dot_matches_newline():
    assert matches("^a.b$", "A\nB")
    assert not matches("^a.b$", "A\nB", "i")
    assert not matches("^a.b$", "a\nb", "s")


def test_dollar_allows_a_final_newline_unless_E():
    assert matches("a$", "a\n")
    assert not matches("a$", "a\n", "E")
    assert matches("a\\Z", "a\n")
    assert not matches("a\\z", "a\n")


def test_m_flag_and_A_flag():
    assert matches("^b$", "a\nb", "m")
    assert not matches("^b$", "a\nb")
    assert matches("b", "ab")
    assert not matches("b", "ab", "A")


def test_x_flag_ignores_whitespace_and_comments():
    assert matches("a b # comment", "ab", "x")
    assert matches("a\\ b", "a b", "x")
    assert matches("(?x) a  b", "ab")
    assert matches("[ ]", " ", "x")  # white space inside a class counts


def test_option_changes_mid_pattern_cover_later_alternatives():
    assert matches("^a(?i)b$|^c$", "aB", "i")
    assert matches("^a(?i)b$|^c$", "C", "i")
    assert not matches("^a(?i)b$|^c$", "AB", "i")
    assert matches("^(a(?-i)b|c)$", "Ab")
    assert not matches("^(a(?-i)b|c)$", "aB")
    assert not matches("^(a(?-i)b|c)$", "C")


def test_scoped_option_groups():
    assert matches("^(?-i:a)b$", "aB")
    assert not matches("^(?-i:a)b$", "AB")


def test_named_groups_and_backreferences_in_pcre_spellings():
    assert matches("^(?<u>\\w+)@\\k<u>$", "ab@ab")
    assert matches("^(?'u'\\w+)@\\k{u}$", "ab@ab")
    assert matches("^(?P<u>\\w+)@(?P=u)$", "ab@ab")
    assert matches("^(a)(b)\\g{-1}\\g1$", "abba")
    assert not matches("^(?<u>\\w+)@\\k<u>$", "ab@cd")


def test_escapes_python_spells_differently():
    assert matches("^\\Qa.b*\\E$", "a.b*")
    assert not matches("^\\Qa.b\\E$", "axb")
    assert matches("^\\x{41}\\x42\\o{103}\\cA\\e$", "ABC\x01\x1b")
    assert matches("^a\\hb\\vc$", "a\tb\nc")
    assert not matches("^\\v$", "\x0b\x0b")  # one vertical space, not Python's \v
    assert matches("^a\\Rb$", "a\r\nb")
    assert matches("^\\N+$", "abc")
    assert not matches("^\\N+$", "a\nc")
    assert matches("^[[:alpha:][:digit:]_-]+$", "a1_-")
    assert matches("^[\\w.]+$", "a.b")
    assert matches("^[\\Q]\\E]$", "]")


def test_python_311_constructs_work():
    assert matches("^a++b$", "aab")
    assert matches("^(?>a+)b$", "aab")
    assert matches("^(a)?(?(1)b|c)$", "ab")


@pytest.mark.parametrize(
    ("pattern", "flags", "reason"),
    [
        ("a\\Kb", "", "\\K is not supported"),
        ("\\p{L}", "", "\\p is not supported"),
        ("(a)(?1)", "", "recursion and subroutine calls"),
        ("(?R)", "", "recursion"),
        ("(?&name)", "", "recursion"),
        ("\\g<1>", "", "subroutine calls"),
        ("(?|a|b)", "", "branch reset"),
        ("(*UTF)a", "", "PCRE verbs"),
        ("(?U)a", "", 'the option "U"'),
        ("a", "U", "ungreedy"),
        ("a", "q", 'unknown pcre flag "q"'),
        ("a{,3}", "", "{0,n}"),
        ("[[:^alpha:]]", "", "negated POSIX class"),
        ("[[:bogus:]]", "", "unknown POSIX class"),
        ("(?(R)a|b)", "", "condition"),
        ("(?(?=a)a|b)", "", "condition"),
        ("a)", "", 'unmatched ")"'),
        ("(a", "", 'missing ")"'),
        ("\\y", "", "unrecognized escape \\y"),
        ("[z-a]", "", "range out of order"),
    ],
)
def test_constructs_python_lacks_are_refused(pattern, flags, reason):
    with pytest.raises(PatternError) as caught:
        compile_pcre(pattern, flags)
    assert reason in str(caught.value)


def test_refused_pattern_in_a_file_names_file_and_line(tmp_path):
    source = tmp_path / "access"
    source.write_text("# header\n/^ok$/ OK\n/^(?R)$/ REJECT\n")
    with pytest.raises(TableError) as caught:
        open_table(f"pcre:{source}")
    assert str(caught.value).startswith(f"{source}, line 3: recursion")
