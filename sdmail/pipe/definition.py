"""A pipe transport's definition file: Postfix's master.cf pipe attributes, one file per
transport (`$config_directory/pipe.d/NAME.conf`), read at every delivery.

The file holds what follows `pipe` in a master.cf entry, the same words:

    # /etc/sdmail/pipe.d/maildrop.conf
    flags=DRhu user=vmail
    argv=/usr/bin/maildrop -d ${recipient}

Words are separated by white space, line breaks included; a line whose first non-blank
character is `#` is a comment; `{ text with spaces }` is one word (the text inside, white
space around it removed), as in master.cf. Attributes, names in any case:

    flags=BDFORXhqu.>   user=NAME[:GROUP] (required)   size=BYTES   eol=\\r\\n
    null_sender=TEXT    directory=PATH                argv=COMMAND ARGS... (required, last)

Every word after `argv=` is an argument of the command, never read by a shell; `$name`
macros in them are parsed here (pipe/macros) so that a typo is reported with its line.
`chroot=` is refused: use the unit's `RootDirectory=` instead.

`command_identity` resolves `user=` when mail is delivered: never root, never group 0,
never mail_owner or its group (Postfix's rule).

Failure modes: every problem is a `PipeDefinitionError` whose text names the file, the
line and what is wrong (`/etc/sdmail/pipe.d/x.conf, line 2: unknown flag 'Z'`): a file that
cannot be read, an unknown attribute or flag, a missing `user=` or `argv=`, a bad size or
escape, a bad macro, an unbalanced brace, an unknown user or group, a privileged user.
"""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sdmail.agent import Identity
from sdmail.core.mailstore import NULL_SENDER_NAME
from sdmail.pipe.macros import MacroError, Template, parse_template

DEFINITION_DIRECTORY: Final = "pipe.d"
DEFINITION_SUFFIX: Final = ".conf"
FLAGS: Final = frozenset("BDFORXhqu.>")
MAX_DEFINITION: Final = 1 << 16
_ESCAPE: Final = re.compile(r"\\(?:([0-7]{1,3})|(.)|$)", re.DOTALL)
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


class PipeDefinitionError(Exception):
    """A definition that cannot be used; the text names the file and line."""

    def __init__(self, message: str, path: Path | str, line: int | None = None) -> None:
        self.message = message
        self.path = str(path)
        self.line = line
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Word:
    text: str
    line: int


@dataclass(frozen=True)
class PipeDefinition:
    """What a pipe transport runs, and how it writes the message to it."""

    path: str
    flags: str
    user: str
    group: str | None
    user_line: int
    argv: tuple[Template, ...]
    command: str  # argv[0] as written, for messages
    size_limit: int  # 0: none
    eol: bytes
    null_sender: str
    directory: str | None


def definition_path(config_directory: Path | str, transport: str) -> Path:
    """Where the definition of TRANSPORT lives."""
    return Path(config_directory) / DEFINITION_DIRECTORY / f"{transport}{DEFINITION_SUFFIX}"


def read_definition(path: Path | str) -> PipeDefinition:
    """The definition in the file PATH."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DEFINITION + 1)
    except OSError as exc:
        raise PipeDefinitionError(f"cannot read the definition: {exc.strerror}", path) from None
    if len(data) > MAX_DEFINITION:
        raise PipeDefinitionError(f"larger than {MAX_DEFINITION} bytes", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PipeDefinitionError(f"not UTF-8 text (byte {exc.start})", path) from None
    return parse_definition(text, path)


def parse_definition(text: str, path: Path | str) -> PipeDefinition:
    """The definition written as TEXT (read from PATH, named in errors)."""
    words = list(split_words(text, path))
    seen: dict[str, Word] = {}
    argv_words: list[Word] = []
    for index, word in enumerate(words):
        name, equals, value = word.text.partition("=")
        name = name.lower()
        if not equals or name not in _ATTRIBUTES:
            raise PipeDefinitionError(f"unknown attribute: {word.text!r}", path, word.line)
        if name in seen:
            raise PipeDefinitionError(f"{name}= given twice", path, word.line)
        seen[name] = Word(value, word.line)
        if name == "argv":
            argv_words = [Word(value, word.line), *words[index + 1 :]]
            break
    for required in ("user", "argv"):
        if required not in seen:
            raise PipeDefinitionError(f"missing {required}= attribute", path)
    if "chroot" in seen:
        raise PipeDefinitionError(
            "chroot= is not supported: set RootDirectory= in the unit instead",
            path,
            seen["chroot"].line,
        )
    if not argv_words[0].text:
        raise PipeDefinitionError("argv= names no command", path, argv_words[0].line)
    user, _, group = seen["user"].text.partition(":")
    if not user:
        raise PipeDefinitionError("user= names no user", path, seen["user"].line)
    return PipeDefinition(
        path=str(path),
        flags=_flags(seen.get("flags"), path),
        user=user,
        group=group or None,
        user_line=seen["user"].line,
        argv=tuple(_template(word, path) for word in argv_words),
        command=argv_words[0].text,
        size_limit=_size(seen.get("size"), path),
        eol=_unescape(seen["eol"], path).encode("utf-8") if "eol" in seen else b"\n",
        null_sender=seen["null_sender"].text if "null_sender" in seen else NULL_SENDER_NAME,
        directory=_directory(seen.get("directory")),
    )


_ATTRIBUTES: Final = frozenset(
    {"flags", "user", "size", "eol", "null_sender", "directory", "chroot", "argv"}
)


def split_words(text: str, path: Path | str) -> Iterator[Word]:
    """The words of TEXT with their line numbers (see the module docstring)."""
    group: list[str] | None = None
    group_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if group is None and line.lstrip().startswith("#"):
            continue
        for token in line.split():
            if group is not None:
                if token.endswith("}"):
                    group.append(token[:-1])
                    yield Word(" ".join(group).strip(), group_line)
                    group = None
                else:
                    group.append(token)
            elif token.startswith("{"):
                if token.endswith("}") and len(token) > 1:
                    yield Word(token[1:-1].strip(), number)
                else:
                    group, group_line = [token[1:]], number
            else:
                yield Word(token, number)
    if group is not None:
        raise PipeDefinitionError("missing '}'", path, group_line)


def _flags(word: Word | None, path: Path | str) -> str:
    if word is None:
        return ""
    for flag in word.text:
        if flag not in FLAGS:
            raise PipeDefinitionError(
                f"unknown flag {flag!r} (known: {''.join(sorted(FLAGS))})", path, word.line
            )
    return word.text


def _directory(word: Word | None) -> str | None:
    return word.text if word is not None and word.text else None


def _size(word: Word | None, path: Path | str) -> int:
    if word is None:
        return 0
    if not re.fullmatch(r"[0-9]{1,18}", word.text):
        raise PipeDefinitionError(f"bad size= value: {word.text!r}", path, word.line)
    return int(word.text)


def _unescape(word: Word, path: Path | str) -> str:
    def one(match: re.Match[str]) -> str:
        octal, char = match.groups()
        if octal:
            return chr(int(octal, 8))
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        raise PipeDefinitionError(f"bad escape in eol= value: {word.text!r}", path, word.line)

    return _ESCAPE.sub(one, word.text)


def _template(word: Word, path: Path | str) -> Template:
    try:
        return parse_template(word.text)
    except MacroError as exc:
        raise PipeDefinitionError(str(exc), path, word.line) from None


def command_identity(definition: PipeDefinition, mail_owner: str) -> Identity:
    """Who the command runs as: `user=`'s account, with `user=`'s group or its own."""

    def refuse(message: str) -> PipeDefinitionError:
        return PipeDefinitionError(message, definition.path, definition.user_line)

    try:
        account = pwd.getpwnam(definition.user)
    except KeyError:
        raise refuse(f"user=: unknown user: {definition.user}") from None
    gid = account.pw_gid
    if definition.group is not None:
        try:
            gid = grp.getgrnam(definition.group).gr_gid
        except KeyError:
            raise refuse(f"user=: unknown group: {definition.group}") from None
    if account.pw_uid == 0:
        raise refuse(f"user=: {definition.user} has root privileges; commands never run as root")
    if gid == 0:
        raise refuse("user=: commands never run with the privileged group id 0")
    try:
        owner = pwd.getpwnam(mail_owner)
    except KeyError:
        owner = None
    if owner is not None and account.pw_uid == owner.pw_uid:
        raise refuse(f"user=: commands never run as the mail system owner {mail_owner}")
    if owner is not None and gid == owner.pw_gid:
        raise refuse(
            f"user=: commands never run with the group of the mail system owner {mail_owner}"
        )
    return Identity(account.pw_name, account.pw_uid, gid, account.pw_dir, account.pw_shell)
