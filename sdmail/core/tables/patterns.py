"""Pattern tables: the file syntax regexp: and pcre: share, and how they are searched.

OWNS Postfix's pattern-table syntax.  Each logical line (see `source`) is one of

    /pattern/flags result       the result when the pattern matches the key
    !/pattern/flags result      the result when it does not match
    if /pattern/flags           the rules up to the matching `endif` apply only
    if !/pattern/flags          when the key matches (does not match); they nest
    endif

The delimiter may be any character that is neither alphanumeric nor white
space (`/` by convention); a delimiter inside the pattern is written with a
backslash.  Rules are tried in file order and the first that applies answers.
A result may hold `$1`, `${1}` or `$(1)` (the text the first `(...)` matched,
empty when it took no part) and `$$` for a dollar; a negated rule has nothing
to substitute.  `regexp:{ {rule}, {rule} }` writes the rules in the name.

What a pattern means is the dialect's business (`regexp` for POSIX extended
regular expressions, `pcre` for Perl's): each turns a pattern and its flags
into a Python `re` pattern that means the same, or refuses it.

Failure modes: opening raises TableError naming file and line for an unknown
flag, a missing delimiter or result, an `if` without `endif` (or the reverse),
a `$n` beyond the pattern's groups or in a negated rule, and for a pattern the
dialect refuses (the reason says which construct).  Lookups never fail.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdmail.core.tables.inline import read_rules
from sdmail.core.tables.source import WHITESPACE, LogicalLine, logical_lines
from sdmail.core.tables.table import Table, TableError

_GROUP_REFERENCE = re.compile(r"\$(?:(\d+)|\{(\d+)\}|\((\d+)\)|(\$)|([A-Za-z_{(][^\s]*))")


class PatternError(ValueError):
    """A pattern or flag a dialect cannot translate; the text says why."""


@dataclass(frozen=True)
class Compiled:
    """A translated pattern: the Python pattern, and whether it must match at the start."""

    regex: re.Pattern[str]
    anchored: bool = False

    def search(self, key: str) -> re.Match[str] | None:
        return self.regex.match(key) if self.anchored else self.regex.search(key)


#: A dialect turns (pattern, flags) into a Compiled pattern or raises PatternError.
Dialect = Callable[[str, str], Compiled]


def compile_python(pattern: str, flags: int) -> re.Pattern[str]:
    """re.compile, with Python's complaints (errors and warnings) as PatternError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(pattern, flags)
    except (re.error, Warning) as exc:
        raise PatternError(f"Python's re rejects the translated pattern: {exc}") from None


@dataclass(frozen=True)
class Result:
    """A rule's result text split into literal text (str) and group numbers (int)."""

    parts: tuple[str | int, ...]

    def expand(self, match: re.Match[str] | None) -> str:
        if match is None:
            return "".join(part for part in self.parts if isinstance(part, str))
        return "".join(
            part if isinstance(part, str) else (match.group(part) or "") for part in self.parts
        )

    @property
    def highest_group(self) -> int:
        return max((part for part in self.parts if isinstance(part, int)), default=0)


def parse_result(text: str) -> Result:
    """Split a result at `$n`, `${n}`, `$(n)` and `$$`; a lone `$` stays a dollar."""
    parts: list[str | int] = []
    position = 0
    for found in _GROUP_REFERENCE.finditer(text):
        parts.append(text[position : found.start()])
        number = found.group(1) or found.group(2) or found.group(3)
        if number is not None:
            parts.append(int(number))
        elif found.group(4):
            parts.append("$")
        else:
            raise PatternError(f"non-numeric replacement index: {found.group(0)}")
        position = found.end()
    parts.append(text[position:])
    return Result(tuple(part for part in parts if part != ""))


@dataclass(frozen=True)
class Rule:
    """`[!]/pattern/flags result`."""

    pattern: Compiled
    negated: bool
    result: Result
    line: int


@dataclass(frozen=True)
class Block:
    """`if [!]/pattern/flags` ... `endif`."""

    pattern: Compiled
    negated: bool
    rules: tuple[Rule | Block, ...]
    line: int


def split_pattern(text: str) -> tuple[bool, str, str, str]:
    """`[!]/pattern/flags rest` as (negated, pattern, flags, rest)."""
    negated = text.startswith("!")
    if negated:
        text = text[1:].lstrip(WHITESPACE)
    if not text:
        raise PatternError("missing pattern")
    delimiter = text[0]
    if delimiter.isalnum() or delimiter in WHITESPACE or delimiter == "\\":
        raise PatternError(f"invalid pattern delimiter {delimiter!r}: expected /pattern/flags")
    index = 1
    while index < len(text) and text[index] != delimiter:
        index += 2 if text[index] == "\\" else 1
    if index >= len(text):
        raise PatternError(f"missing closing {delimiter!r} after pattern")
    pattern = text[1:index]
    rest = text[index + 1 :]
    end = next((i for i, char in enumerate(rest) if char in WHITESPACE), len(rest))
    return negated, pattern, rest[:end], rest[end:].strip(WHITESPACE)


def _keyword(text: str, word: str) -> str | None:
    """The text after keyword WORD (case-insensitive) at the start of TEXT, else None."""
    if text[: len(word)].lower() == word and (
        len(text) == len(word) or not text[len(word)].isalnum()
    ):
        return text[len(word) :].strip(WHITESPACE)
    return None


class _Builder:
    """Turns logical lines into nested rules."""

    def __init__(self, dialect: Dialect, path: str | Path) -> None:
        self.dialect = dialect
        self.path = path
        # One open list per nesting level, with the `if` that opened it.
        self.levels: list[tuple[list[Rule | Block], tuple[Compiled, bool, int] | None]] = [
            ([], None)
        ]

    def error(self, message: str, line: int) -> TableError:
        return TableError(message, self.path, line)

    def add(self, logical: LogicalLine) -> None:
        try:
            self._add(logical)
        except PatternError as exc:
            raise self.error(str(exc), logical.line) from None

    def _add(self, logical: LogicalLine) -> None:
        text, line = logical.text, logical.line
        condition = _keyword(text, "if")
        if condition is not None:
            negated, compiled, rest = self._pattern(condition)
            if rest:
                raise PatternError(f'extra text after "if" pattern: "{rest}"')
            self.levels.append(([], (compiled, negated, line)))
            return
        after_endif = _keyword(text, "endif")
        if after_endif is not None:
            if after_endif:
                raise PatternError(f'extra text after "endif": "{after_endif}"')
            if len(self.levels) == 1:
                raise PatternError('"endif" without matching "if"')
            rules, opener = self.levels.pop()
            assert opener is not None
            compiled, negated, if_line = opener
            self.levels[-1][0].append(Block(compiled, negated, tuple(rules), if_line))
            return
        negated, compiled, rest = self._pattern(text)
        if not rest:
            raise PatternError("missing result after pattern")
        result = parse_result(rest)
        if negated and result.highest_group:
            raise PatternError("$number substitution in the result of a negated pattern")
        if result.highest_group > compiled.regex.groups:
            raise PatternError(
                f"out of range replacement index ${result.highest_group}: "
                f"the pattern has {compiled.regex.groups} group(s)"
            )
        self.levels[-1][0].append(Rule(compiled, negated, result, line))

    def _pattern(self, text: str) -> tuple[bool, Compiled, str]:
        negated, pattern, flags, rest = split_pattern(text)
        return negated, self.dialect(pattern, flags), rest

    def finish(self) -> tuple[Rule | Block, ...]:
        if len(self.levels) > 1:
            opener = self.levels[-1][1]
            assert opener is not None
            raise self.error('"if" without matching "endif"', opener[2])
        return tuple(self.levels[0][0])


def parse_pattern_lines(
    lines: Sequence[str], path: str | Path, dialect: Dialect
) -> tuple[Rule | Block, ...]:
    """The rules of a pattern table source."""
    builder = _Builder(dialect, path)
    for logical in logical_lines(lines, path):
        builder.add(logical)
    return builder.finish()


def _first_answer(rules: Sequence[Rule | Block], key: str) -> str | None:
    for rule in rules:
        match = rule.pattern.search(key)
        if isinstance(rule, Block):
            if (match is None) == rule.negated:
                answer = _first_answer(rule.rules, key)
                if answer is not None:
                    return answer
        elif rule.negated and match is None:
            return rule.result.expand(None)
        elif not rule.negated and match is not None:
            return rule.result.expand(match)
    return None


class PatternTable(Table):
    """A regexp: or pcre: table; it matches whole keys, never parts of addresses."""

    fixed = False

    def __init__(self, spec: str, rules: tuple[Rule | Block, ...]) -> None:
        super().__init__(spec)
        self.rules = rules

    def lookup(self, key: str) -> str | None:
        return _first_answer(self.rules, key)


def open_pattern_table(spec: str, name: str, dialect: Dialect) -> PatternTable:
    """A pattern table from file NAME, or from `{ {rule}, {rule} }` written in the name."""
    lines, source = read_rules(spec, name)
    return PatternTable(spec, parse_pattern_lines(lines, source, dialect))
