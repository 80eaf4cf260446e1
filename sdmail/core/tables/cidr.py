"""cidr: tables, IP address patterns tried in order (Postfix's cidr_table(5)).

OWNS the cidr table syntax.  Each logical line (see `source`: `#` comments,
blank lines, continuation lines that start with white space) is one of

    192.0.2.0/24        result   the result when the key is in the network
    192.0.2.1           result   a bare address: the result for that address only
    !192.0.2.0/24       result   the result when the key is NOT in the network
    if 192.0.2.0/24              the rules up to the matching `endif` apply only when
    if !192.0.2.0/24             the key is (is not) in the network; blocks nest
    endif

IPv4 and IPv6 alike: `2001:db8::/32`, `::1`.  A pattern may be written in
brackets, `[2001:db8::]/32`, `[2001:db8::/32]` or `[::1]`, which Postfix accepts
but does not recommend.  What a network pattern may be is the same fact as for
mynetworks, so it is `sdmail.core.match_list.parse_network` that reads it: host
bits set under the prefix (`192.0.2.1/24`) are an error that suggests the
network, as in Postfix.  `if`, `endif` and `!` are Postfix 3.2's; `cidr:{ {rule},
{rule} }` writes the rules in the table name, as Postfix 3.7 allows.

The key is an IP address as text (`192.0.2.7`, `2001:db8::7`); a key that is not
one (a host name, `[192.0.2.7]`, an address with a zone index) is not found.  A
rule applies only to keys of its own address family, whether it is negated or
not: `!192.0.2.0/24` does not answer an IPv6 key, and the block of
`if !192.0.2.0/24` is skipped for one, as in Postfix.  The first rule that
applies answers with its result, as written.  An IPv4-mapped IPv6 key
(`::ffff:192.0.2.7`) is an IPv6 key here; the caller that wants the IPv4 form
asks for it.  Like regexp and pcre tables, a cidr table is a pattern table
(`fixed` is False): it sees whole keys only.

Postfix warns about a bad line and skips it; sdmail refuses the table, so a
typo never silently lets a client through.

Failure modes: opening raises TableError naming file and line for a bad
address or network pattern, `no address pattern`, `no lookup result`, text
after an `if` pattern or `endif`, an `endif` without `if` and an `if` without
`endif` (at the `if`'s line); TableError `open PATH: <strerror>` for a file that
cannot be read.  Lookups never fail.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from sdmail.core.address import IPAddress, is_ip_address
from sdmail.core.match_list import IPNetwork, MatchListError, parse_network
from sdmail.core.tables.inline import read_rules
from sdmail.core.tables.source import WHITESPACE, LogicalLine, logical_lines
from sdmail.core.tables.table import Table, TableError


class CidrSyntaxError(ValueError):
    """A cidr rule that does not parse; the text says why (file and line come later)."""


class Op(enum.Enum):
    MATCH = "match"
    IF = "if"
    ENDIF = "endif"


@dataclass(frozen=True)
class Step:
    """One rule in file order.  An IF's BLOCK_END is the index just past its ENDIF."""

    op: Op
    network: IPNetwork | None = None
    negated: bool = False
    result: str = ""
    block_end: int = 0

    def applies_to(self, address: IPAddress) -> bool:
        """True when the key is of this rule's family and in (or, negated, out of) it."""
        assert self.network is not None
        if address.version != self.network.version:
            return False
        return (address in self.network) != self.negated


def _after_keyword(text: str, word: str) -> str | None:
    """The text after keyword WORD (any case) at the start of TEXT, else None."""
    head = text[: len(word)]
    if head.lower() != word or (len(text) > len(word) and text[len(word)].isalnum()):
        return None
    return text[len(word) :]


def _strip_negation(text: str) -> tuple[bool, str]:
    """Leading `!`s (each one flips) and white space taken off TEXT."""
    negated = False
    index = 0
    while index < len(text) and (text[index] == "!" or text[index] in WHITESPACE):
        negated ^= text[index] == "!"
        index += 1
    return negated, text[index:]


def _unbracket(pattern: str) -> str:
    """PATTERN without Postfix's optional brackets: `[a]`, `[a]/n` and `[a/n]`."""
    if not pattern.startswith("["):
        return pattern
    inside, closed, after = pattern[1:].partition("]")
    if not closed:
        raise CidrSyntaxError(f"missing ']' character after \"[{inside}\"")
    if after and not after.startswith("/"):
        raise CidrSyntaxError(f'garbage after "[{inside}]"')
    return inside + after


def parse_pattern(pattern: str) -> IPNetwork:
    """An address or network/prefix pattern, brackets allowed, as a network."""
    try:
        return parse_network(_unbracket(pattern))
    except MatchListError as exc:
        raise CidrSyntaxError(exc.message) from None


def _split_first_word(text: str) -> tuple[str, str]:
    end = next((i for i, char in enumerate(text) if char in WHITESPACE), len(text))
    return text[:end], text[end:].strip(WHITESPACE)


class _StepList:
    """Turns logical lines into steps, keeping the open `if`s to close."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: list[Step] = []
        self.open_ifs: list[tuple[int, int]] = []  # (index in steps, line)

    def add(self, logical: LogicalLine) -> None:
        try:
            self._add(logical)
        except CidrSyntaxError as exc:
            raise TableError(str(exc), self.path, logical.line) from None

    def _add(self, logical: LogicalLine) -> None:
        condition = _after_keyword(logical.text, "if")
        if condition is not None:
            negated, rest = _strip_negation(condition)
            pattern, extra = _split_first_word(rest)
            if not pattern:
                raise CidrSyntaxError("no address pattern")
            if extra:
                raise CidrSyntaxError(f'garbage after IF pattern: "{extra}"')
            self.open_ifs.append((len(self.steps), logical.line))
            self.steps.append(Step(Op.IF, parse_pattern(pattern), negated))
            return
        after_endif = _after_keyword(logical.text, "endif")
        if after_endif is not None:
            if after_endif.strip(WHITESPACE):
                raise CidrSyntaxError(f'garbage after ENDIF: "{after_endif.strip(WHITESPACE)}"')
            if not self.open_ifs:
                raise CidrSyntaxError("ENDIF without IF")
            start, _ = self.open_ifs.pop()
            self.steps.append(Step(Op.ENDIF))
            opener = self.steps[start]
            self.steps[start] = Step(
                Op.IF, opener.network, opener.negated, block_end=len(self.steps)
            )
            return
        negated, rest = _strip_negation(logical.text)
        pattern, result = _split_first_word(rest)
        if not pattern:
            raise CidrSyntaxError("no address pattern")
        if not result:
            raise CidrSyntaxError("no lookup result")
        self.steps.append(Step(Op.MATCH, parse_pattern(pattern), negated, result))

    def finish(self) -> tuple[Step, ...]:
        if self.open_ifs:
            _, line = self.open_ifs[-1]
            raise TableError("IF has no matching ENDIF", self.path, line)
        return tuple(self.steps)


def parse_cidr_lines(lines: Sequence[str], path: str) -> tuple[Step, ...]:
    """The steps of a cidr table source; PATH names it in errors."""
    steps = _StepList(path)
    for logical in logical_lines(lines, path):
        steps.add(logical)
    return steps.finish()


def first_result(steps: Sequence[Step], address: IPAddress) -> str | None:
    """The result of the first rule that applies to ADDRESS, entering only blocks it opens."""
    index = 0
    while index < len(steps):
        step = steps[index]
        if step.op is Op.MATCH and step.applies_to(address):
            return step.result
        if step.op is Op.IF and not step.applies_to(address):
            index = step.block_end
            continue
        index += 1
    return None


class CidrTable(Table):
    """A cidr: table; it answers IP address keys only."""

    fixed = False

    def __init__(self, spec: str, steps: tuple[Step, ...]) -> None:
        super().__init__(spec)
        self.steps = steps

    def lookup(self, key: str) -> str | None:
        if not is_ip_address(key):
            return None
        return first_result(self.steps, ipaddress.ip_address(key))


def open_cidr(spec: str, name: str, fold_keys: bool) -> Table:
    """The registry's opener for `cidr:PATH` and `cidr:{ {rule}, {rule} }`."""
    lines, source = read_rules(spec, name)
    return CidrTable(spec, parse_cidr_lines(lines, source))
