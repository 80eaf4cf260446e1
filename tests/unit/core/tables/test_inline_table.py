"""inline: tables (sdmail/core/tables/inline.py)."""

from __future__ import annotations

import pytest

from sdmail.core.tables import open_table
from sdmail.core.tables.table import TableError


def entries(spec: str) -> dict[str, str]:
    return dict(open_table(spec).items())


def test_comma_and_space_separated_pairs():
    assert entries("inline:{ k=v, k2=v2 k3=v3,k4=v4 }") == {
        "k": "v",
        "k2": "v2",
        "k3": "v3",
        "k4": "v4",
    }


def test_braced_entry_holds_spaces_around_equals_and_in_value():
    assert entries("inline:{ { k = v with spaces }, x=y }") == {"k": "v with spaces", "x": "y"}


def test_braced_value_holds_spaces_and_commas():
    assert entries("inline:{ { k = { v with spaces, and a comma } } }") == {
        "k": "v with spaces, and a comma"
    }
    assert entries("inline:{ k={v w}, z=1 }") == {"k": "v w", "z": "1"}


def test_keys_fold_and_values_keep_case():
    table = open_table("inline:{ Joe=Joe@Example.COM }")
    assert table.lookup("JOE") == "Joe@Example.COM"
    assert open_table("inline:{ Joe=x }", fold_keys=False).lookup("joe") is None


def test_later_entry_replaces_earlier():
    assert entries("inline:{ a=1, a=2 }") == {"a": "2"}


def test_quoted_key_and_empty_value():
    assert entries('inline:{ { "a key" = }, b=1 }') == {"a key": "", "b": "1"}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("inline:k=v", "missing '{'"),
        ("inline:{ k=v", "missing '}'"),
        ("inline:{ k=v } }", "text after the closing '}'"),
        ("inline:{ kv }", "missing '=' after attribute name"),
        ("inline:{ =v }", "no key found"),
        ("inline:{ }", "empty table"),
        ("inline:{ a}b=c }", "text after the closing '}'"),
        ("inline:{ a=b} }", "text after the closing '}'"),
    ],
)
def test_bad_syntax_says_what_form_is_needed(spec, reason):
    with pytest.raises(TableError) as caught:
        open_table(spec)
    message = str(caught.value)
    assert reason in message
    assert message.endswith('; need "inline:{name=value...}"')
    assert f'"{spec}"' in message
