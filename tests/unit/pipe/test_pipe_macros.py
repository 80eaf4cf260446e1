"""argv= macros: parsing, per-recipient expansion, flags, and no way for an address to
become two arguments."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.pipe.macros import (
    Literal,
    Macro,
    MacroError,
    expand_argv,
    parse_template,
    recipient_values,
    sender_value,
)

DELIMITER = {"recipient_delimiter": "+", "owner_request_special": True}


def values(address: str, flags: str = "", original: str | None = None):
    return recipient_values(
        address, original, flags, double_bounce_sender="double-bounce", **DELIMITER
    )


def argv(words: list[str], message: dict[str, str], *addresses: str, flags: str = "") -> list[str]:
    templates = [parse_template(word) for word in words]
    return expand_argv(templates, message, [values(a, flags) for a in addresses])


# -- parsing ------------------------------------------------------------------------------
def test_all_macro_forms_parse() -> None:
    assert parse_template("-f$sender:${nexthop}/$(size)$$") == (
        Literal("-f"),
        Macro("sender"),
        Literal(":"),
        Macro("nexthop"),
        Literal("/"),
        Macro("size"),
        Literal("$"),
    )


def test_conditional_forms_hold_templates() -> None:
    assert parse_template("${extension?+$extension}") == (
        Macro("extension", "?", (Literal("+"), Macro("extension"))),
    )
    assert parse_template("${extension:{none}}") == (Macro("extension", ":", (Literal("none"),)),)


@pytest.mark.parametrize(
    ("word", "why"),
    [
        ("${recipent}", 'unknown macro name: "recipent"'),
        ("$home", 'unknown macro name: "home"'),
        ("cost$", "starts no macro"),
        ("$-x", "starts no macro"),
        ("${recipient", "missing '}'"),
        ("$(user", "missing ')'"),
        ("${}", "no macro name"),
        ("${user!x}", "unexpected"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(word: str, why: str) -> None:
    with pytest.raises(MacroError, match=re.escape(why)):
        parse_template(word)


# -- expansion ----------------------------------------------------------------------------
def test_a_recipient_argument_is_repeated_per_recipient_and_others_appear_once() -> None:
    assert argv(
        ["/usr/bin/deliver", "-f", "$sender", "--", "${recipient}"],
        {"sender": "ann@example.org"},
        "joe@x.test",
        "sue@y.test",
    ) == ["/usr/bin/deliver", "-f", "ann@example.org", "--", "joe@x.test", "sue@y.test"]


def test_user_extension_mailbox_and_domain_come_from_the_recipient() -> None:
    assert argv(
        ["${user}", "${extension}", "${mailbox}", "${domain}", "${nexthop}"],
        {"nexthop": "Relay.Example"},
        "joe+lists@x.test",
    ) == ["joe", "lists", "joe+lists", "x.test", "Relay.Example"]


def test_an_empty_extension_is_an_empty_argument_and_an_empty_user_drops_the_argument() -> None:
    # A leading delimiter splits nothing (+shared is the user), as Postfix's split_addr.
    assert argv(["${user}"], {}, "+shared@x.test") == ["+shared"]
    assert argv(["-e", "${extension}"], {}, "joe@x.test") == ["-e", ""]
    assert argv(["-u", "user=${user}"], {}, "@x.test", "joe@x.test") == ["-u", "user=joe"]


def test_conditional_text_follows_the_value() -> None:
    words = ["${extension?--folder=$extension}", "${extension:INBOX}"]
    assert argv(words, {}, "joe+work@x.test") == ["--folder=work", ""]
    assert argv(words, {}, "joe@x.test") == ["", "INBOX"]


def test_flags_fold_and_quote_as_postfix_does() -> None:
    address = "John Doe+Ext@Example.COM"
    assert values(address).recipient == address
    assert values(address, "h").recipient == "John Doe+Ext@example.com"
    assert values(address, "u").recipient == "john doe+ext@Example.COM"
    assert values(address, "hu").recipient == "john doe+ext@example.com"
    assert values(address, "q").recipient == '"John Doe+Ext"@Example.COM'
    folded = values(address, "qhu")
    assert folded.recipient == '"john doe+ext"@example.com'
    assert (folded.user, folded.extension, folded.mailbox, folded.domain) == (
        "john doe",
        "ext",
        "john doe+ext",
        "example.com",
    )


def test_sender_is_quoted_only_with_q_and_only_when_not_empty() -> None:
    assert sender_value("a b@x", "") == "a b@x"
    assert sender_value("a b@x", "q") == '"a b"@x'
    assert sender_value("", "q") == ""


def test_original_recipient_is_per_recipient() -> None:
    templates = [parse_template("${original_recipient}")]
    got = expand_argv(templates, {}, [values("joe@x.test", original="list@x.test")])
    assert got == ["list@x.test"]


def test_values_are_never_expanded_again() -> None:
    assert argv(["${recipient}"], {}, "$sender${user}@x.test") == ["$sender${user}@x.test"]


@given(st.lists(st.text(min_size=1).filter(lambda t: "@" not in t), min_size=1, max_size=4))
def test_each_address_is_exactly_one_argument_whatever_it_holds(locals_: list[str]) -> None:
    addresses = [f"{local}@x.test" for local in locals_]
    got = argv(["/bin/cmd", "--", "${recipient}"], {"sender": "a@b"}, *addresses)
    assert got == ["/bin/cmd", "--", *addresses]


@given(st.text())
def test_any_argument_text_parses_or_is_refused_cleanly(word: str) -> None:
    try:
        template = parse_template(word)
    except MacroError:
        return
    expand_argv([template], {}, [values("joe@x.test")])
