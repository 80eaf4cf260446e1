"""split_dsn: a reason text that may start with an enhanced status code (Postfix's dsn_split)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.dsn import DsnError, Status, is_valid_dsn, split_dsn


def test_a_leading_code_is_the_status_and_the_rest_the_text() -> None:
    assert split_dsn("5.1.1 User unknown in virtual alias table", "5.0.0") == Status(
        "5.1.1", "User unknown in virtual alias table"
    )


def test_text_without_a_code_gets_the_default_code() -> None:
    assert split_dsn("Address is undeliverable", "5.0.0") == Status(
        "5.0.0", "Address is undeliverable"
    )


def test_surrounding_white_space_is_not_part_of_the_text() -> None:
    assert split_dsn("  4.7.1   try later \t", "4.0.0") == Status("4.7.1", "try later")


def test_a_code_alone_gives_an_empty_text() -> None:
    assert split_dsn("4.4.1", "4.0.0") == Status("4.4.1", "")


@pytest.mark.parametrize(
    "text",
    ["5.1.1x no space", "5.01.1 leading zero", "5.1.1000 too long", "3.1.1 bad class", "5.1 short"],
)
def test_something_that_only_looks_like_a_code_stays_in_the_text(text: str) -> None:
    assert split_dsn(text, "5.0.0") == Status("5.0.0", text)


def test_a_bad_default_is_an_error() -> None:
    with pytest.raises(DsnError):
        split_dsn("no code here", "9.9.9")


@given(st.text())
def test_any_text_gives_a_valid_status_whose_text_it_contains(text: str) -> None:
    status = split_dsn(text, "5.0.0")
    assert is_valid_dsn(status.dsn)
    assert status.text in text
