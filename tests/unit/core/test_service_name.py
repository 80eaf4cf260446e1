"""-n NAME: which transport a multi-transport agent serves."""

from __future__ import annotations

import pytest

from sdmail.core.service_name import ServiceNameError, is_service_name, take_service_name


def test_the_name_is_taken_out_and_the_other_options_stay_in_order() -> None:
    assert take_service_name(["-c", "/etc/x", "-n", "maildrop", "-v"], None) == (
        "maildrop",
        ["-c", "/etc/x", "-v"],
    )


def test_the_attached_form_works_too() -> None:
    assert take_service_name(["-nretry", "-o", "max_use=1"], "error") == (
        "retry",
        ["-o", "max_use=1"],
    )


def test_without_n_the_default_is_used() -> None:
    assert take_service_name(["-v"], "error") == ("error", ["-v"])


def test_without_n_and_without_default_it_is_a_usage_error() -> None:
    with pytest.raises(ServiceNameError, match="required"):
        take_service_name([], None)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["-n"], "requires"),
        (["-n", "a", "-n", "b"], "more than once"),
        (["-n", "../etc"], "bad service name"),
        (["-n", "a/b"], "bad service name"),
        (["-n", ""], "bad service name"),
        (["-n", "-x"], "bad service name"),
    ],
)
def test_bad_names_are_usage_errors(argv: list[str], why: str) -> None:
    with pytest.raises(ServiceNameError, match=why):
        take_service_name(argv, None)


def test_names_usable_as_file_names() -> None:
    assert is_service_name("dovecot-lda")
    assert is_service_name("uucp_2.x")
    assert not is_service_name(".hidden")
    assert not is_service_name("x" * 101)
