"""The `argv=` of a pipe transport: `$name` macros, parsed once and expanded per delivery into
exactly the arguments Postfix's pipe(8) gives, with no shell anywhere.

`parse_template(word)` reads one argument as written in the definition: literal text,
`$name`, `${name}`, `$(name)`, `$$` for a dollar sign, and the conditional forms
`${name?text}` (text when the value is not empty) and `${name:text}` (text when it is),
whose text may hold macros itself. A name must be one of `MACROS`, so a typo is found when
the definition is read, not when mail arrives.

`expand_argv(templates, message_values, recipients)` gives the command's argument vector.
An argument that refers to a recipient macro (`${recipient}`, `${original_recipient}`,
`${user}`, `${extension}`, `${mailbox}`, `${domain}`) becomes one argument per recipient,
in request order; an argument with `${user}` is left out for a recipient whose user part
is empty (Postfix's rule for Cyrus shared mailboxes); any other argument appears once.
Values are substituted as text, never re-parsed: an address that holds spaces, quotes,
`$`, `;` or a line break is still exactly one argument, and no expansion result is ever
read by a shell. (A value that starts with `-` is still a value: write `--` before
`${recipient}` when the command takes options, as for Postfix.)

`recipient_values` computes a recipient's values under the `h`, `q` and `u` flags, as
Postfix's morph_recipient does.

Failure modes: `parse_template` raises MacroError naming what is wrong (an unknown name, a
stray `$`, an unclosed brace); `expand_argv` and `recipient_values` never raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sdmail.core.address import split_extension
from sdmail.core.delivery_headers import shown_address

PER_RECIPIENT: Final = frozenset(
    {"recipient", "original_recipient", "user", "extension", "mailbox", "domain"}
)
PER_MESSAGE: Final = frozenset(
    {
        "sender",
        "nexthop",
        "size",
        "queue_id",
        "envid",
        "client_address",
        "client_helo",
        "client_hostname",
        "client_port",
        "client_protocol",
        "sasl_method",
        "sasl_sender",
        "sasl_username",
    }
)
MACROS: Final = PER_RECIPIENT | PER_MESSAGE
_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_CLOSER: Final = {"{": "}", "(": ")"}


class MacroError(Exception):
    """An argument template that cannot be used; the text says why."""


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Macro:
    """`$name`; with TEST `?` or `:` the conditional forms, ALTERNATIVE their text."""

    name: str
    test: str | None = None
    alternative: Template = ()


Part = Literal | Macro
Template = tuple[Part, ...]


@dataclass(frozen=True)
class RecipientValues:
    """One recipient as its macros see it (flags applied)."""

    recipient: str
    original_recipient: str
    user: str
    extension: str
    mailbox: str
    domain: str

    def as_mapping(self) -> dict[str, str]:
        return {
            "recipient": self.recipient,
            "original_recipient": self.original_recipient,
            "user": self.user,
            "extension": self.extension,
            "mailbox": self.mailbox,
            "domain": self.domain,
        }


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------
def parse_template(word: str) -> Template:
    """The parts of the argument WORD (see the module docstring)."""
    parts: list[Part] = []
    literal: list[str] = []
    index = 0
    while index < len(word):
        char = word[index]
        if char != "$":
            literal.append(char)
            index += 1
            continue
        following = word[index + 1 : index + 2]
        if following == "$":
            literal.append("$")
            index += 2
            continue
        if literal:
            parts.append(Literal("".join(literal)))
            literal = []
        if following in _CLOSER:
            close = _closing(word, index + 1)
            parts.append(_braced(word[index + 2 : close]))
            index = close + 1
            continue
        match = _NAME.match(word, index + 1)
        if match is None:
            raise MacroError(
                f"'$' at position {index + 1} of {word!r} starts no macro "
                "(write $$ for a dollar sign)"
            )
        parts.append(Macro(_known(match.group())))
        index = match.end()
    if literal:
        parts.append(Literal("".join(literal)))
    return tuple(parts)


def _closing(word: str, opener_at: int) -> int:
    opener = word[opener_at]
    closer = _CLOSER[opener]
    depth = 0
    for at in range(opener_at, len(word)):
        if word[at] == opener:
            depth += 1
        elif word[at] == closer:
            depth -= 1
            if depth == 0:
                return at
    raise MacroError(f"missing '{closer}' in {word!r}")


def _braced(inner: str) -> Macro:
    match = _NAME.match(inner)
    if match is None:
        raise MacroError(f"no macro name in ${{{inner}}}")
    name, rest = _known(match.group()), inner[match.end() :]
    if not rest:
        return Macro(name)
    if rest[0] not in "?:":
        raise MacroError(f"unexpected {rest!r} after macro name {name!r}")
    text = rest[1:]
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return Macro(name, rest[0], parse_template(text))


def _known(name: str) -> str:
    if name not in MACROS:
        raise MacroError(f'unknown macro name: "{name}"')
    return name


def template_names(template: Template) -> set[str]:
    """Every macro name TEMPLATE refers to, conditional texts included."""
    names: set[str] = set()
    for part in template:
        if isinstance(part, Macro):
            names.add(part.name)
            names |= template_names(part.alternative)
    return names


# --------------------------------------------------------------------------------------
# Expanding
# --------------------------------------------------------------------------------------
def expand_template(template: Template, values: Mapping[str, str]) -> str:
    """TEMPLATE with VALUES substituted; a name without a value expands to nothing."""
    out: list[str] = []
    for part in template:
        if isinstance(part, Literal):
            out.append(part.text)
            continue
        value = values.get(part.name, "")
        if part.test is None:
            out.append(value)
        elif (part.test == "?") == bool(value):
            out.append(expand_template(part.alternative, values))
    return "".join(out)


def expand_argv(
    templates: Sequence[Template],
    message_values: Mapping[str, str],
    recipients: Sequence[RecipientValues],
) -> list[str]:
    """The argument vector (see the module docstring)."""
    argv: list[str] = []
    for template in templates:
        names = template_names(template)
        if not names & PER_RECIPIENT:
            argv.append(expand_template(template, message_values))
            continue
        for recipient in recipients:
            if "user" in names and not recipient.user:
                continue
            argv.append(expand_template(template, {**message_values, **recipient.as_mapping()}))
    return argv


def recipient_values(
    address: str,
    original: str | None,
    flags: str,
    *,
    recipient_delimiter: str,
    owner_request_special: bool,
    double_bounce_sender: str,
) -> RecipientValues:
    """ADDRESS (and its ORIGINAL form) as the recipient macros show it under FLAGS: `q`
    quotes the local part of `${recipient}` and `${original_recipient}`, `h` folds domains
    to lower case, `u` local parts; `${user}`, `${extension}`, `${mailbox}`, `${domain}`
    are folded but never quoted."""
    plain = _folded(address, flags)
    local, at, domain = plain.rpartition("@")
    if not at:
        local, domain = plain, ""
    user, extension = split_extension(
        local,
        recipient_delimiter,
        owner_request_special=owner_request_special,
        double_bounce_sender=double_bounce_sender,
    )
    return RecipientValues(
        recipient=_folded(_quoted(address, flags), flags),
        original_recipient=_folded(_quoted(original or address, flags), flags),
        user=user,
        extension=extension[1:],
        mailbox=local,
        domain=domain,
    )


def _quoted(address: str, flags: str) -> str:
    return shown_address(address) if "q" in flags and address else address


def _folded(address: str, flags: str) -> str:
    fold_user, fold_host = "u" in flags, "h" in flags
    local, at, domain = address.rpartition("@")
    if fold_user and (fold_host or not at):
        return address.lower()
    if fold_host and at:
        return f"{local}@{domain.lower()}"
    if fold_user:
        return f"{local.lower()}@{domain}"
    return address


def sender_value(sender: str, flags: str) -> str:
    """`${sender}`: SENDER (the null sender already replaced by null_sender), quoted with
    `q` when it is not empty."""
    return _quoted(sender, flags)
