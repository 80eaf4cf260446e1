"""regexp: tables, POSIX extended regular expressions read with Python's `re`.

OWNS the translation of a POSIX ERE (as glibc's regcomp reads it, in the C
locale) into a Python pattern with the same meaning, and the regexp flags:
`i` (default on: case-insensitive), `m` (default off: `^`/`$` also at newlines,
`.` and `[^...]` stop at newlines), `x` (default on: extended syntax).

Translated: bracket expressions, where a backslash is an ordinary character
(`[\\.]` matches a backslash or a dot) and `[:alpha:]`-style classes,
`[=c=]` and `[.c.]` are spelled out; `$` means the very end of the key (Python's
`$` also matches before a final newline); GNU's `\\<`, `\\>`, `` \\` ``, `\\'`.
Refused, with the reason, where Python would read the pattern differently:
escapes such as `\\d` (a literal `d` to glibc, a digit to Python), `(?`, a
quantifier right after another (`a*?` is lazy to Python), and flag `x` off
(basic regular expressions).  Submatches follow Python's leftmost-first rule,
not POSIX's leftmost-longest, which only matters for `$n` in results of
patterns with ambiguous alternatives.

Failure modes: `compile_regexp` raises PatternError; opening a table raises
TableError naming file and line (see `patterns`).
"""

from __future__ import annotations

import re

from sdmail.core.tables.patterns import Compiled, PatternError, compile_python, open_pattern_table
from sdmail.core.tables.table import Table

# The POSIX classes in the C locale, as the contents of a Python character set.
POSIX_CLASSES = {
    "alpha": "A-Za-z",
    "digit": "0-9",
    "alnum": "0-9A-Za-z",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r"\t\n\x0b\x0c\r\x20",
    "blank": r"\t\x20",
    "punct": r"\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
    "cntrl": r"\x00-\x1f\x7f",
    "xdigit": "0-9A-Fa-f",
}
_GNU_ESCAPES = {
    "w": r"\w",
    "W": r"\W",
    "s": r"\s",
    "S": r"\S",
    "b": r"\b",
    "B": r"\B",
    "<": r"\b(?=\w)",
    ">": r"\b(?<=\w)",
    "`": r"\A",
    "'": r"\Z",
}
_INTERVAL = re.compile(r"\{(\d*)(,?)(\d*)\}")


def literal(char: str) -> str:
    """CHAR as a Python pattern that matches exactly it, inside or outside a set."""
    if char.isascii() and char.isalnum():
        return char
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return "\\" + char
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class _EreTranslator:
    def __init__(self, pattern: str, multiline: bool) -> None:
        self.pattern = pattern
        self.multiline = multiline
        self.index = 0
        self.out: list[str] = []
        self.can_repeat = False  # the last item may take a quantifier
        self.just_repeated = False

    def translate(self) -> str:
        while self.index < len(self.pattern):
            self._item()
        return "".join(self.out)

    def _emit(self, text: str, *, repeatable: bool) -> None:
        self.out.append(text)
        self.can_repeat = repeatable
        self.just_repeated = False

    def _item(self) -> None:
        char = self.pattern[self.index]
        self.index += 1
        if char == "\\":
            self._escape()
        elif char == "[":
            self._emit(self._bracket(), repeatable=True)
        elif char == "(":
            if self.pattern.startswith("?", self.index):
                raise PatternError('"(?" is not POSIX regular expression syntax (use pcre:)')
            self._emit("(", repeatable=False)
        elif char == ")":
            self._emit(")", repeatable=True)
        elif char in "*+?":
            self._quantifier(char)
        elif char == "{":
            interval = _INTERVAL.match(self.pattern, self.index - 1)
            if interval is None:
                self._emit(literal("{"), repeatable=True)
            else:
                self.index = interval.end()
                self._quantifier(interval.group(0))
        elif char == "$":
            self._emit("$" if self.multiline else r"\Z", repeatable=False)
        elif char in "^|":
            self._emit(char, repeatable=False)
        elif char == ".":
            self._emit(".", repeatable=True)
        else:
            self._emit(literal(char), repeatable=True)

    def _quantifier(self, text: str) -> None:
        if self.just_repeated:
            raise PatternError(
                f'quantifier "{text}" right after another: Python reads it as lazy or '
                "possessive, POSIX does not; use parentheses"
            )
        self.out.append(text)
        self.just_repeated = True

    def _escape(self) -> None:
        if self.index >= len(self.pattern):
            raise PatternError("trailing backslash in pattern")
        char = self.pattern[self.index]
        self.index += 1
        if char in _GNU_ESCAPES:
            self._emit(_GNU_ESCAPES[char], repeatable=char in "wWsS")
        elif char in "123456789":
            self._emit(f"(?:\\{char})", repeatable=True)
        elif char.isalnum():
            hint = " (use [0-9] or [[:digit:]])" if char == "d" else ""
            raise PatternError(f"\\{char} is not a POSIX regular expression escape{hint}")
        else:
            self._emit(literal(char), repeatable=True)

    def _bracket(self) -> str:
        """A bracket expression starting after `[`, as a Python set."""
        negated = self.pattern.startswith("^", self.index)
        if negated:
            self.index += 1
        members: list[str] = []
        first = True
        while True:
            if self.index >= len(self.pattern):
                raise PatternError("missing ']' in bracket expression")
            char = self.pattern[self.index]
            if char == "]" and not first:
                self.index += 1
                break
            first = False
            start = self._bracket_element(members)
            if start is None:
                continue
            if (
                self.pattern.startswith("-", self.index)
                and self.index + 1 < len(self.pattern)
                and self.pattern[self.index + 1] != "]"
            ):
                self.index += 1
                end = self._bracket_element(members)
                if end is None:
                    raise PatternError("a range cannot end in a character class")
                if ord(end) < ord(start):
                    raise PatternError(f"invalid range end in [{start}-{end}]")
                members.append(f"{literal(start)}-{literal(end)}")
            else:
                members.append(literal(start))
        if negated and self.multiline:
            members.append(r"\n")
        return "[" + ("^" if negated else "") + "".join(members) + "]"

    def _bracket_element(self, members: list[str]) -> str | None:
        """One character of a bracket expression; a class is added to MEMBERS, giving None."""
        for opener, closer in (("[:", ":]"), ("[=", "=]"), ("[.", ".]")):
            if self.pattern.startswith(opener, self.index):
                end = self.pattern.find(closer, self.index + 2)
                if end < 0:
                    raise PatternError(f'missing "{closer}" in bracket expression')
                name = self.pattern[self.index + 2 : end]
                self.index = end + 2
                if opener == "[:":
                    if name not in POSIX_CLASSES:
                        raise PatternError(f'unknown character class "[:{name}:]"')
                    members.append(POSIX_CLASSES[name])
                    return None
                if len(name) != 1:
                    raise PatternError(f'unsupported collating element "{opener}{name}{closer}"')
                return name
        char = self.pattern[self.index]
        self.index += 1
        return char


def compile_regexp(pattern: str, flags: str) -> Compiled:
    """A POSIX ERE with regexp: table FLAGS, as a Python pattern that means the same."""
    ignore_case, multiline, extended = True, False, True
    for flag in flags:
        if flag == "i":
            ignore_case = not ignore_case
        elif flag == "m":
            multiline = not multiline
        elif flag == "x":
            extended = not extended
        else:
            raise PatternError(f'unknown regexp flag "{flag}"')
    if not extended:
        raise PatternError('flag "x" selects basic regular expressions, which are not supported')
    python = _EreTranslator(pattern, multiline).translate()
    re_flags = re.ASCII | (re.IGNORECASE if ignore_case else 0)
    re_flags |= re.MULTILINE if multiline else re.DOTALL
    return Compiled(compile_python(python, re_flags))


def open_regexp(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `regexp:PATH` and `regexp:{ {rule}, ... }`."""
    return open_pattern_table(spec, name, compile_regexp)
