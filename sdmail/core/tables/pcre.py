"""pcre: tables, Perl-compatible regular expressions read with Python's `re`.

OWNS the translation of a PCRE pattern into a Python pattern with the same
meaning, and the pcre flags: `i` (default on: case-insensitive), `m` (multi-line
`^`/`$`), `s` (default on: `.` matches a newline), `x` (extended: white space
and `#...` in the pattern are ignored), `A` (anchored at the start), `E` (`$`
only at the very end), `X` (accepted, no effect).  Matching is ASCII-only for
`\\w`, `\\d`, `\\s` and case folding, as PCRE without UCP.

Translated where Python spells a construct differently: `(?<name>...)`,
`(?'name'...)`, `\\k<name>`, `\\g{n}`, `\\g{-n}`, POSIX classes `[[:alpha:]]`,
`\\Q...\\E`, `\\e`, `\\x{hh}`, `\\o{nn}`, `\\cX`, `\\h`, `\\v` (vertical space in
PCRE, one character in Python), `\\R`, `\\N`, `\\z`, `\\Z` (PCRE's allows a final
newline, Python's does not), `\\G`, and option settings such as `(?i)` in the
middle of a pattern, which Python 3.11 only accepts at the start: they become
scoped groups that also cover later alternatives, as PCRE's do.
Refused with the reason: recursion and subroutine calls (`(?R)`, `(?1)`,
`(?&name)`, `\\g<name>`), branch reset `(?|`, verbs `(*...)`, `\\K`, `\\X`, `\\C`,
`\\p{..}`, `\\P{..}`, conditions on recursion or assertions, options other than
`imsx` (`U`, `J`, `n`), negated POSIX classes, and `{,n}`, whose meaning
changed between PCRE2 releases.  Atomic groups and possessive quantifiers are
Python 3.11's own.

Failure modes: `compile_pcre` raises PatternError; opening a table raises
TableError naming file and line (see `patterns`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sdmail.core.tables.patterns import Compiled, PatternError, compile_python, open_pattern_table
from sdmail.core.tables.regexp import POSIX_CLASSES, literal
from sdmail.core.tables.source import WHITESPACE
from sdmail.core.tables.table import Table

_PCRE_CLASSES = {**POSIX_CLASSES, "word": "0-9A-Za-z_"}
_HSPACE = r"\t\x20\xa0"
_VSPACE = r"\n\x0b\x0c\r\x85"
_OUTSIDE_ESCAPES = {
    "h": f"[{_HSPACE}]",
    "H": f"[^{_HSPACE}]",
    "v": f"[{_VSPACE}]",
    "V": f"[^{_VSPACE}]",
    "R": rf"(?:\r\n|[{_VSPACE}])",
    "N": r"[^\n]",
    "z": r"\Z",
    "Z": r"(?=\n?\Z)",
    "G": r"\A",
}
_SAME_ESCAPES = frozenset("dDwWsSbBAntrfa")
_CONTROL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "a": "\a", "e": "\x1b", "b": "\b"}
_UNSUPPORTED_ESCAPES = frozenset("KXCpPuUlLF")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OPTIONS = re.compile(r"([A-Za-z^]*)(?:-([A-Za-z]*))?([:)])")
_POSIX_CLASS = re.compile(r"\[:(\^?[A-Za-z]+):\]")
_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")


@dataclass
class _Frame:
    """One open group: whether `x` is on in it, and the option groups opened inside it."""

    extended: bool
    wraps: list[str] = field(default_factory=list)


class _PcreTranslator:
    def __init__(self, pattern: str, *, extended: bool, dollar_end_only: bool) -> None:
        self.pattern = pattern
        self.index = 0
        self.out: list[str] = []
        self.groups = 0
        self.frames = [_Frame(extended)]
        self.dollar = r"\Z" if dollar_end_only else "$"

    # -- reading ---------------------------------------------------------------
    def _peek(self, text: str) -> bool:
        return self.pattern.startswith(text, self.index)

    def _next(self, what: str) -> str:
        if self.index >= len(self.pattern):
            raise PatternError(f"pattern ends inside {what}")
        char = self.pattern[self.index]
        self.index += 1
        return char

    def _until(self, closer: str, what: str) -> str:
        end = self.pattern.find(closer, self.index)
        if end < 0:
            raise PatternError(f'missing "{closer}" after {what}')
        text = self.pattern[self.index : end]
        self.index = end + len(closer)
        return text

    def _name(self, closer: str) -> str:
        name = self._until(closer, "group name")
        if not _NAME.match(name):
            raise PatternError(f'bad group name "{name}"')
        return name

    # -- the pattern -------------------------------------------------------------
    def translate(self) -> str:
        while self.index < len(self.pattern):
            self._item()
        if len(self.frames) > 1:
            raise PatternError('missing ")"')
        self.out.append(")" * len(self.frames[0].wraps))
        return "".join(self.out)

    def _item(self) -> None:
        char = self._next("pattern")
        frame = self.frames[-1]
        if frame.extended and char in WHITESPACE:
            return
        if frame.extended and char == "#":
            end = self.pattern.find("\n", self.index)
            self.index = len(self.pattern) if end < 0 else end + 1
            return
        if char == "\\":
            self.out.append(self._escape())
        elif char == "[":
            self.out.append(self._class())
        elif char == "(":
            self._open_group()
        elif char == ")":
            self._close_group()
        elif char == "|":
            self.out.append(")" * len(frame.wraps) + "|" + "".join(f"(?{w}:" for w in frame.wraps))
        elif char == "{":
            self._brace()
        elif char == "$":
            self.out.append(self.dollar)
        elif char in "^.*+?":
            self.out.append(char)
        else:
            self.out.append(literal(char))

    def _brace(self) -> None:
        quantifier = _QUANTIFIER.match(self.pattern, self.index - 1)
        if quantifier is not None:
            self.out.append(quantifier.group(0))
            self.index = quantifier.end()
        elif re.match(r"\{,\d+\}", self.pattern[self.index - 1 :]):
            raise PatternError('"{,n}" means different things to PCRE2 releases; write "{0,n}"')
        else:
            self.out.append(r"\{")

    # -- escapes -----------------------------------------------------------------
    def _escape(self) -> str:
        char = self._next("an escape (\\ at end of pattern)")
        if char in _SAME_ESCAPES:
            return "\\" + char
        if char in _OUTSIDE_ESCAPES and not (char == "N" and self._peek("{")):
            return _OUTSIDE_ESCAPES[char]
        if char == "Q":
            end = self.pattern.find("\\E", self.index)
            end = len(self.pattern) if end < 0 else end
            quoted = self.pattern[self.index : end]
            self.index = min(end + 2, len(self.pattern))
            return "".join(literal(c) for c in quoted)
        if char == "E":
            return ""
        if char in "123456789":
            return self._backreference(char + self._digits())
        if char == "g":
            return self._g_reference()
        if char == "k":
            closer = {"<": ">", "'": "'", "{": "}"}.get(self._next("\\k"))
            if closer is None:
                raise PatternError("\\k must be followed by <name>, 'name' or {name}")
            return f"(?P={self._name(closer)})"
        coded = self._coded_character(char)
        if coded is not None:
            return literal(coded)
        return literal(self._plain_escape(char))

    def _plain_escape(self, char: str) -> str:
        if char in _UNSUPPORTED_ESCAPES or char == "N":
            raise PatternError(f"the PCRE escape \\{char} is not supported by Python's re")
        if char.isalnum():
            raise PatternError(f"unrecognized escape \\{char}")
        return char

    def _digits(self) -> str:
        start = self.index
        while self.index < len(self.pattern) and self.pattern[self.index].isdigit():
            self.index += 1
        return self.pattern[start : self.index]

    def _backreference(self, number: str) -> str:
        if int(number) > 99:
            raise PatternError(f"back reference \\{number} is beyond Python's 99 groups")
        return f"(?:\\{int(number)})"

    def _g_reference(self) -> str:
        if self._peek("<") or self._peek("'"):
            raise PatternError("subroutine calls (\\g<...>) are not supported by Python's re")
        if self._peek("{"):
            self.index += 1
            reference = self._until("}", "\\g{")
        else:
            sign = "-" if self._peek("-") else ""
            self.index += len(sign)
            reference = sign + self._digits()
        if _NAME.match(reference):
            return f"(?P={reference})"
        if not re.fullmatch(r"[+-]?\d+", reference):
            raise PatternError(f'bad back reference "\\g{reference}"')
        number = int(reference)
        if reference.startswith("-"):
            number = self.groups + 1 + number
        if number < 1:
            raise PatternError(f'back reference "\\g{reference}" names no group')
        return self._backreference(str(number))

    def _coded_character(self, char: str) -> str | None:
        """The character of `\\xhh`, `\\x{h..}`, `\\o{o..}`, `\\cX`, `\\0oo`, `\\e`..., else None."""
        if char == "x":
            if self._peek("{"):
                self.index += 1
                return self._code_point(self._until("}", "\\x{"), 16)
            start = self.index
            while self.index < min(start + 2, len(self.pattern)) and (
                self.pattern[self.index] in "0123456789abcdefABCDEF"
            ):
                self.index += 1
            return chr(int(self.pattern[start : self.index] or "0", 16))
        if char == "o":
            if not self._peek("{"):
                raise PatternError("\\o must be followed by {octal digits}")
            self.index += 1
            return self._code_point(self._until("}", "\\o{"), 8)
        if char == "c":
            control = self._next("\\c")
            if not (control.isascii() and control.isprintable()):
                raise PatternError("\\c must be followed by a printable ASCII character")
            return chr(ord(control.upper()) ^ 0x40)
        if char == "0":
            start = self.index
            while self.index < min(start + 2, len(self.pattern)) and (
                self.pattern[self.index] in "01234567"
            ):
                self.index += 1
            return chr(int("0" + self.pattern[start : self.index], 8))
        if char in _CONTROL_ESCAPES and char != "b":
            return _CONTROL_ESCAPES[char]
        return None

    @staticmethod
    def _code_point(digits: str, base: int) -> str:
        try:
            return chr(int(digits, base))
        except (ValueError, OverflowError):
            raise PatternError(f'bad character code "{digits}"') from None

    # -- groups --------------------------------------------------------------------
    def _push(self, opener: str, *, extended: bool | None = None, capturing: bool = False) -> None:
        if capturing:
            self.groups += 1
        current = self.frames[-1].extended
        self.frames.append(_Frame(current if extended is None else extended))
        self.out.append(opener)

    def _close_group(self) -> None:
        if len(self.frames) == 1:
            raise PatternError('unmatched ")"')
        frame = self.frames.pop()
        self.out.append(")" * len(frame.wraps) + ")")

    def _open_group(self) -> None:
        if self._peek("*"):
            raise PatternError("PCRE verbs (*...) are not supported by Python's re")
        if not self._peek("?"):
            self._push("(", capturing=True)
            return
        self.index += 1
        rest = self.pattern[self.index :]
        if rest.startswith("#"):
            self._until(")", "(?# comment")
        elif rest[:1] in (":", "=", "!", ">"):
            self.index += 1
            self._push("(?" + rest[0])
        elif rest.startswith(("<=", "<!")):
            self.index += 2
            self._push("(?" + rest[:2])
        elif rest.startswith(("P<", "<", "'")):
            self.index += 2 if rest.startswith("P<") else 1
            name = self._name("'" if rest.startswith("'") else ">")
            self._push(f"(?P<{name}>", capturing=True)
        elif rest.startswith("P="):
            self.index += 2
            self.out.append(f"(?P={self._name(')')})")
        elif (
            rest.startswith(("P>", "&", "R)"))
            or rest[:1].isdigit()
            or (rest[:1] in "+-" and rest[1:2].isdigit())
        ):
            raise PatternError("recursion and subroutine calls are not supported by Python's re")
        elif rest.startswith("|"):
            raise PatternError('branch reset groups "(?|" are not supported by Python\'s re')
        elif rest.startswith("("):
            self.index += 1
            self._push(f"(?({self._condition()})")
        else:
            self._options()

    def _condition(self) -> str:
        condition = self._until(")", "(?(condition")
        if condition[:1] in ("<", "'") and condition[-1:] in (">", "'"):
            condition = condition[1:-1]
        if condition.isdigit() or (
            _NAME.match(condition) and condition != "DEFINE" and not condition.startswith("R")
        ):
            return condition
        raise PatternError(f'the condition "(?({condition})" is not supported by Python\'s re')

    def _options(self) -> None:
        options = _OPTIONS.match(self.pattern, self.index)
        if options is None:
            raise PatternError(f'unsupported group syntax "(?{self.pattern[self.index :][:3]}"')
        self.index = options.end()
        on, off, terminator = options.group(1), options.group(2) or "", options.group(3)
        for letter in on + off:
            if letter not in "imsx":
                raise PatternError(f'the option "{letter}" in "(?...)" is not supported')
        frame = self.frames[-1]
        extended = ("x" in on or frame.extended) and "x" not in off
        python_on, python_off = on.replace("x", ""), off.replace("x", "")
        flags = python_on + (f"-{python_off}" if python_off else "")
        if terminator == ":":
            self._push(f"(?{flags}:" if flags else "(?:", extended=extended)
            return
        frame.extended = extended
        if flags:
            frame.wraps.append(flags)
            self.out.append(f"(?{flags}:")

    # -- character classes ----------------------------------------------------------
    def _class(self) -> str:
        negated = self._peek("^")
        self.index += negated
        members: list[str] = []
        first = True
        while True:
            if self.index >= len(self.pattern):
                raise PatternError('missing "]" in character class')
            if self._peek("]") and not first:
                self.index += 1
                break
            first = False
            start = self._class_element(members)
            if start is None:
                continue
            if self._peek("-") and not self.pattern.startswith("]", self.index + 1):
                self.index += 1
                end = self._class_element(members)
                if end is None:  # `[a-\d]`: PCRE reads the `-` literally
                    members[-1:-1] = [literal(start), r"\-"]
                    continue
                if ord(end) < ord(start):
                    raise PatternError(f"range out of order in character class: {start}-{end}")
                members.append(f"{literal(start)}-{literal(end)}")
            else:
                members.append(literal(start))
        return "[" + ("^" if negated else "") + "".join(members) + "]"

    def _class_element(self, members: list[str]) -> str | None:
        """One character of a class; a class escape is added to MEMBERS, giving None."""
        posix = _POSIX_CLASS.match(self.pattern, self.index)
        if posix is not None:
            self.index = posix.end()
            name = posix.group(1)
            if name.startswith("^"):
                raise PatternError(f'negated POSIX class "[:{name}:]" is not supported')
            if name not in _PCRE_CLASSES:
                raise PatternError(f'unknown POSIX class "[:{name}:]"')
            members.append(_PCRE_CLASSES[name])
            return None
        char = self._next("a character class")
        if char != "\\":
            return char
        char = self._next("a character class")
        if char in "dDwWsS":
            members.append("\\" + char)
            return None
        if char in "hv":
            members.append(_HSPACE if char == "h" else _VSPACE)
            return None
        if char == "Q":
            end = self.pattern.find("\\E", self.index)
            end = len(self.pattern) if end < 0 else end
            members.extend(literal(c) for c in self.pattern[self.index : end])
            self.index = min(end + 2, len(self.pattern))
            return None
        if char == "E":
            return None
        if char in "1234567":
            start = self.index - 1
            while self.index < min(start + 3, len(self.pattern)) and (
                self.pattern[self.index] in "01234567"
            ):
                self.index += 1
            return chr(int(self.pattern[start : self.index], 8))
        if char in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[char]
        coded = self._coded_character(char)
        if coded is not None:
            return coded
        if char in "HVRNX":
            raise PatternError(f"\\{char} inside a character class is not supported")
        return self._plain_escape(char)


def compile_pcre(pattern: str, flags: str) -> Compiled:
    """A PCRE with pcre: table FLAGS, as a Python pattern that means the same."""
    options = {"i": True, "m": False, "s": True, "x": False, "A": False, "E": False}
    for flag in flags:
        if flag in options:
            options[flag] = not options[flag]
        elif flag == "U":
            raise PatternError('flag "U" (ungreedy) is not supported by Python\'s re')
        elif flag != "X":
            raise PatternError(f'unknown pcre flag "{flag}"')
    python = _PcreTranslator(
        pattern,
        extended=options["x"],
        dollar_end_only=options["E"] and not options["m"],
    ).translate()
    re_flags = re.ASCII
    re_flags |= re.IGNORECASE if options["i"] else 0
    re_flags |= re.MULTILINE if options["m"] else 0
    re_flags |= re.DOTALL if options["s"] else 0
    return Compiled(compile_python(python, re_flags), anchored=options["A"])


def open_pcre(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `pcre:PATH` and `pcre:{ {rule}, ... }`."""
    return open_pattern_table(spec, name, compile_pcre)
