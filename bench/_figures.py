"""The figures of a benchmark run: rounds, their median and spread, ratios, and how they print.

A `Measured` figure keeps every round's value; what is shown is the median,
with the number of rounds and the spread (lowest and highest round, and half
that range as a share of the median). Figures compared with each other are
measured in interleaved rounds (`measure`). A `Ratio` divides two medians. A figure
that could not be taken is `NotMeasured` with the reason, and every ratio that
needs it is not measured either, with the same reason.

The table (`render_table`) is for people; `as_json` gives the same figures as
one JSON-ready dict keyed by figure key (every figure has a `value`, or a
`not_measured` reason). Nothing here fails on good figures; `measure` passes on
whatever a round raises.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class BenchError(Exception):
    """A round whose result cannot be trusted (a tool failed, work went missing)."""


@dataclass(frozen=True)
class Measured:
    """A figure taken in rounds; `samples` holds one value per round."""

    group: int
    key: str
    label: str
    unit: str
    samples: tuple[float, ...]

    @property
    def value(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread_percent(self) -> float:
        """Half the range of the rounds, as a percentage of the median."""
        return (max(self.samples) - min(self.samples)) / 2 / self.value * 100


@dataclass(frozen=True)
class Ratio:
    """One figure's median divided by another's; printed under the figure it qualifies."""

    group: int
    key: str
    label: str
    value: float


@dataclass(frozen=True)
class NotMeasured:
    """A figure (or, with `is_ratio`, a ratio) that could not be taken, and why."""

    group: int
    key: str
    label: str
    reason: str
    is_ratio: bool = False


Figure = Measured | Ratio | NotMeasured


@dataclass(frozen=True)
class Spec:
    """A figure to take: ONE_ROUND runs one round and returns its value in UNIT."""

    group: int
    key: str
    label: str
    unit: str
    one_round: Callable[[], float]


def measure(specs: Sequence[Spec], rounds: int) -> list[Measured]:
    """ROUNDS rounds of each of SPECS, interleaved: round 1 of each, then round 2 of each...

    So a slow spell of the machine (another process, the page cache writing
    back) touches every figure alike, and their ratios stay fair.
    """
    samples: dict[str, list[float]] = {spec.key: [] for spec in specs}
    for _ in range(rounds):
        for spec in specs:
            samples[spec.key].append(spec.one_round())
    return [
        Measured(spec.group, spec.key, spec.label, spec.unit, tuple(samples[spec.key]))
        for spec in specs
    ]


def ratio(group: int, key: str, label: str, numerator: Figure, denominator: Figure) -> Figure:
    """NUMERATOR's value over DENOMINATOR's, or NotMeasured with the reason one is missing."""
    for part in (numerator, denominator):
        if isinstance(part, NotMeasured):
            return NotMeasured(group, key, label, part.reason, is_ratio=True)
    assert not isinstance(numerator, NotMeasured) and not isinstance(denominator, NotMeasured)
    return Ratio(group, key, label, numerator.value / denominator.value)


# -- output ----------------------------------------------------------------------------


def format_number(value: float) -> str:
    """Thousands grouped, at least three digits, milliseconds below 1: 7,915  12.3  1.25  0.046."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _spread(figure: Measured) -> str:
    low, high = min(figure.samples), max(figure.samples)
    return f"{format_number(low)}–{format_number(high)} (±{figure.spread_percent:.1f}%)"


def _row(figure: Figure) -> tuple[str, str, str, str, str, str]:
    if isinstance(figure, Measured):
        return (
            str(figure.group),
            figure.label,
            format_number(figure.value),
            figure.unit,
            str(len(figure.samples)),
            _spread(figure),
        )
    if isinstance(figure, Ratio):
        return ("", f"   {figure.label}", f"{figure.value:.2f}×", "", "", "")
    indent = "   " if figure.is_ratio else ""
    return (
        "" if indent else str(figure.group),
        indent + figure.label,
        f"not measured: {figure.reason}",
        "",
        "",
        "",
    )


def render_table(figures: Sequence[Figure]) -> str:
    """The figures as an aligned text table, one row each, ratios indented under their figure."""
    heading = ("#", "figure", "median", "unit", "rounds", "spread: min–max of rounds")
    rows = [_row(figure) for figure in figures]
    measured = [heading] + [row for row in rows if not row[2].startswith("not measured")]
    widths = [max(len(row[column]) for row in measured) for column in range(len(heading))]
    lines = []
    for row in [heading, *rows]:
        if row[2].startswith("not measured"):
            lines.append(f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
            continue
        lines.append(
            f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:<{widths[3]}}  {row[4]:>{widths[4]}}  {row[5]}".rstrip()
        )
    return "\n".join(lines)


def as_json(figure: Figure) -> dict[str, Any]:
    """One figure as a JSON-ready dict: label, group, and value (+ unit, rounds, min, max)."""
    out: dict[str, Any] = {"group": figure.group, "label": figure.label}
    if isinstance(figure, Measured):
        out.update(
            value=figure.value,
            unit=figure.unit,
            rounds=len(figure.samples),
            min=min(figure.samples),
            max=max(figure.samples),
            samples=list(figure.samples),
        )
    elif isinstance(figure, Ratio):
        out.update(value=figure.value, unit="ratio")
    else:
        out.update(not_measured=figure.reason)
    return out
