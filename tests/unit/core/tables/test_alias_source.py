"""Alias files and alias values (sdmail/core/tables/aliases.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sdmail.core.tables.aliases import (
    AliasEntry,
    AliasError,
    AliasTarget,
    TargetKind,
    format_alias,
    parse_aliases,
    read_alias_file,
    split_alias_value,
)
from sdmail.core.tables.table import TableError

GOLDEN = Path(__file__).parents[3] / "data" / "tables"
A, C, F, INC = TargetKind.ADDRESS, TargetKind.COMMAND, TargetKind.FILE, TargetKind.INCLUDE


def test_golden_aliases_file_gives_names_values_and_lines():
    assert read_alias_file(GOLDEN / "aliases.in") == [
        AliasEntry("MAILER-DAEMON", "postmaster", 2),
        AliasEntry("postmaster", "root", 3),
        AliasEntry(
            "root",
            'admin@example.net, "|/usr/bin/procmail -a x,y", /var/log/root-mail, '
            ":include:/etc/mail/root.list",
            4,
        ),
        AliasEntry("ops team", "alice, bob", 6),
        AliasEntry("archive", '"/var/mail/archive dir/"', 7),
    ]


def test_value_splits_into_addresses_commands_files_and_includes():
    value = (
        'joe, joe@example.com, "|/usr/bin/procmail -a x,y", |/bin/cat, /var/log/mail, '
        '":include:/etc/mail/list one", :INCLUDE: /etc/mail/two, "/dir with space/"'
    )
    assert split_alias_value(value) == [
        AliasTarget(A, "joe"),
        AliasTarget(A, "joe@example.com"),
        AliasTarget(C, "/usr/bin/procmail -a x,y"),
        AliasTarget(C, "/bin/cat"),
        AliasTarget(F, "/var/log/mail"),
        AliasTarget(INC, "/etc/mail/list one"),
        AliasTarget(INC, "/etc/mail/two"),
        AliasTarget(F, "/dir with space/"),
    ]


def test_quoted_local_part_stays_as_written_and_whole_quotes_are_removed():
    assert split_alias_value('"john smith"@example.com, "a\\"b"') == [
        AliasTarget(A, '"john smith"@example.com'),
        AliasTarget(A, 'a"b'),
    ]


def test_empty_elements_are_dropped():
    assert split_alias_value(" a ,, b, ") == [AliasTarget(A, "a"), AliasTarget(A, "b")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"|cmd', "unbalanced"),
        ("|", "empty command"),
        ('"| "', "empty command"),
        (":include:", "empty :include:"),
        ('a, ""', "empty address"),
        ('" "', "empty address"),
    ],
)
def test_bad_values_raise_alias_error(value, reason):
    with pytest.raises(AliasError, match=reason):
        split_alias_value(value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("root admin\n", 1, "need name:value pair"),
        ("root:\n", 1, "need name:value pair"),
        ("ok: a\n: value\n", 2, "need name:value pair"),
        ('"root" admin\n', 1, "need name:value pair"),
        ("two words: x\n", 1, 'white space in alias name "two words": quote the name'),
        ("a@b: x\n", 1, '"@" in alias name "a@b": quote the name'),
        ('root: a,\n  "|cmd\n', 1, "unbalanced"),
        ("  root: a\n", 1, "logical line must not start with whitespace"),
    ],
)
def test_syntax_errors_name_file_and_line(text, line, message):
    with pytest.raises(TableError) as caught:
        parse_aliases(text, "/etc/aliases")
    assert str(caught.value).startswith(f"/etc/aliases, line {line}: {message}")


def test_quoted_name_may_hold_specials():
    assert parse_aliases('"a@b: c" : x\n') == [AliasEntry("a@b: c", "x", 1)]


def test_missing_file_is_an_open_error(tmp_path):
    with pytest.raises(TableError, match="No such file or directory"):
        read_alias_file(tmp_path / "aliases")


# -- properties ------------------------------------------------------------------------
names = st.text(min_size=1).filter(lambda n: "\n" not in n and "\0" not in n)
plain = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\0"),
    min_size=1,
)
addresses = plain.map(lambda t: t.strip()).filter(
    lambda t: t and not t.startswith(("|", "/", '"')) and not t.lower().startswith(":include:")
)
targets = st.one_of(
    addresses.map(lambda t: AliasTarget(A, t)),
    plain.filter(lambda t: t.strip()).map(lambda t: AliasTarget(C, t)),
    plain.map(lambda t: AliasTarget(F, "/" + t.strip())),
    plain.filter(lambda t: t.strip()).map(lambda t: AliasTarget(INC, t.strip())),
)


@given(names, st.lists(targets, min_size=1, max_size=5))
def test_formatted_alias_parses_back_to_name_and_targets(name, alias_targets):
    [entry] = parse_aliases(format_alias(name, alias_targets) + "\n")
    assert entry.name == name
    assert split_alias_value(entry.value) == alias_targets


@given(st.text())
def test_arbitrary_text_parses_or_fails_with_table_error(text):
    try:
        entries = parse_aliases(text, "fuzz")
    except TableError as exc:
        assert exc.path == "fuzz"
        assert exc.line is not None
    else:
        for entry in entries:
            assert entry.name and entry.value
            split_alias_value(entry.value)


@given(st.text())
@example('""')
@example('"\\"')
def test_arbitrary_values_split_or_fail_with_alias_error(value):
    try:
        for target in split_alias_value(value):
            assert target.text
    except AliasError:
        pass
