"""The user's own files: forward_path expansion, reading `.forward` and `:include:` files as
their reader, and the targets they list.

`expand_macros` expands Postfix's `$name`, `${name}`, `$(name)`, `${name?text}`,
`${name:text}` and `$$` against the values local delivery knows (`$home`, `$user`,
`$extension`, ...). A plain reference to a name that is empty or unknown makes the whole
expansion undefined (None) when STRICT, as Postfix skips a forward_path entry whose
`${extension}` is empty.

`read_user_file(path)` is an action for `agent.run_as`: it runs in the child that has the
reader's rights, so a user's unreadable file stays unread. It reports the file's owner and
mode with its text (`parse_user_file` gives them back to the parent), nothing when the file
does not exist, and a 4.3.0 status when it cannot be read. It opens without blocking on a
FIFO and reads at most `MAX_USER_FILE` octets of a regular file.

`parse_targets` reads the targets of a `.forward` or `:include:` file: one or more per line
in the alias value syntax (`sdmail.core.tables.aliases`), `#` lines and empty lines
skipped; a line that does not parse is reported, not fatal.

Failure modes: `read_user_file` raises TempFail (in the child); `parse_user_file` raises
ValueError for a report it cannot read; the others never raise.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sdmail.agent import ChildResult
from sdmail.core.dsn import Status, TempFail
from sdmail.core.tables.aliases import AliasError, AliasTarget, split_alias_value

MAX_USER_FILE: Final = 1 << 20
_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_ABSENT: Final = (errno.ENOENT, errno.ENOTDIR)


class _Undefined(Exception):
    """A plain reference to an empty or unknown name in a strict expansion."""


def expand_macros(template: str, values: Mapping[str, str], *, strict: bool) -> str | None:
    """TEMPLATE with its `$name` references replaced; None when STRICT and one is undefined."""
    try:
        return _expand(template, values, strict)
    except _Undefined:
        return None


def _expand(text: str, values: Mapping[str, str], strict: bool) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "$" or index + 1 == len(text):
            out.append(char)
            index += 1
            continue
        following = text[index + 1]
        if following == "$":
            out.append("$")
            index += 2
        elif following in "{(":
            close = _closing(text, index + 1)
            out.append(_braced(text[index + 2 : close], values, strict))
            index = close + 1
        else:
            match = _NAME.match(text, index + 1)
            if match is None:
                out.append(char)
                index += 1
                continue
            out.append(_value(match.group(), values, strict))
            index = match.end()
    return "".join(out)


def _closing(text: str, opener_at: int) -> int:
    opener = text[opener_at]
    closer = "}" if opener == "{" else ")"
    depth = 0
    for at in range(opener_at, len(text)):
        if text[at] == opener:
            depth += 1
        elif text[at] == closer:
            depth -= 1
            if depth == 0:
                return at
    return len(text) - 1


def _braced(inner: str, values: Mapping[str, str], strict: bool) -> str:
    match = _NAME.match(inner)
    if match is None:
        return ""
    name, rest = match.group(), inner[match.end() :]
    if not rest:
        return _value(name, values, strict)
    value = values.get(name, "")
    text = rest[1:]
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if rest[0] == "?":
        return _expand(text, values, strict) if value else ""
    if rest[0] == ":":
        return "" if value else _expand(text, values, strict)
    return ""


def _value(name: str, values: Mapping[str, str], strict: bool) -> str:
    value = values.get(name, "")
    if not value and strict:
        raise _Undefined(name)
    return value


# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserFile:
    """A file read with its reader's rights: owner, mode and text (empty when not regular)."""

    owner: int
    mode: int
    text: str

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.mode)


def read_user_file(path: str) -> ChildResult:
    """The action that reads PATH in a child (see the module docstring)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return ChildResult(Status("2.0.0", "absent"))
        raise TempFail(Status("4.3.0", f"cannot open {path}: {exc.strerror}")) from None
    try:
        st = os.fstat(fd)
        data = b""
        if stat.S_ISREG(st.st_mode):
            data = os.read(fd, MAX_USER_FILE + 1)
            if len(data) > MAX_USER_FILE:
                raise TempFail(Status("4.3.0", f"{path} is larger than {MAX_USER_FILE} bytes"))
    except OSError as exc:
        raise TempFail(Status("4.3.0", f"cannot read {path}: {exc.strerror}")) from None
    finally:
        os.close(fd)
    return ChildResult(Status("2.0.0", "read"), f"{st.st_uid} {st.st_mode}\n".encode() + data)


def parse_user_file(result: ChildResult) -> UserFile | None:
    """What `read_user_file` reported: the file, or None when it does not exist."""
    if result.data is None:
        return None
    head, _, data = result.data.partition(b"\n")
    owner, mode = (int(field) for field in head.split(b" "))
    return UserFile(owner, mode, data.decode("utf-8", "surrogateescape"))


def parse_targets(text: str) -> tuple[list[AliasTarget], list[str]]:
    """The targets listed in TEXT, and a description of each line that did not parse."""
    targets: list[AliasTarget] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            targets.extend(split_alias_value(stripped))
        except AliasError as exc:
            problems.append(f"line {number}: {exc.message}")
    return targets, problems
