"""main.cf: reading it, expanding `$name`, and the immutable configuration of a process.

OWNS the syntax of main.cf (Postfix's): `name = value` per logical line, lines that
start with white space continue the previous one, `#` lines are comments (also
inside a continued value), the last definition of a name wins.  Values are
expanded when the configuration is loaded: `$name`, `${name}`, `$(name)`,
`${name?value}` / `${name?{value}}` (value when $name is not empty),
`${name:value}` / `${name:{value}}` (value when empty), `${name?{a}:{b}}`,
`${{text} == {text} ? {a} : {b}}` with `== != < <= >= >` (numeric when both sides
are numbers), and `$$` for a dollar.  `-o name=value` overrides (master.cf's,
here a unit's command line) win over main.cf.

The configuration directory is `-c DIR` / `config_dir=`, else `$SDMAIL_CONFIG_DIR`,
else /etc/sdmail.  A `Config` never changes: a reload builds a new one, and a
caller keeps the old one when the new main.cf does not parse.

Failure modes: every problem is a `ConfigError` whose text names the file, the
line and the parameter (`/etc/sdmail/main.cf, line 12: message_size_limit: bad
numerical value: "10M"`): a line without `=`, a bad name, a value of the wrong
kind or out of bounds, a `$name` that refers to itself, an unreadable main.cf.
A `$name` that is defined nowhere expands to nothing, as in Postfix, and is
reported in `Config.warnings` (daemons log them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from sdmail.core.params import PARAMS, Kind, Param, computed_defaults, domain_of_hostname

DEFAULT_CONFIG_DIR = Path("/etc/sdmail")
CONFIG_DIR_ENV = "SDMAIL_CONFIG_DIR"
MAIN_CF = "main.cf"

NAME_RE = re.compile(r"[A-Za-z0-9_]+\Z")
_TIME_RE = re.compile(r"(\d+)([smhdw]?)\Z")
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BOOLEANS = {"yes": True, "no": False, "true": True, "false": False}
# Parameters whose value names a file holding the real value (Debian's myorigin).
_FILE_VALUED = frozenset({"myorigin"})
# Parameters expanded by the component that uses them, with names of its own
# ($home, $user, $extension, ...): the configuration keeps their text as written.
_EXPANDED_AT_USE = frozenset({"forward_path", "luser_relay", "mailbox_command"})
_MAX_NESTING = 100

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration that cannot be used; the text names file, line and parameter."""

    def __init__(
        self,
        message: str,
        path: Path | str | None = None,
        line: int | None = None,
        name: str | None = None,
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.name = name
        super().__init__(self._text())

    def _text(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path) if self.line is None else f"{self.path}, line {self.line}")
        if self.name is not None:
            where.append(self.name)
        return ": ".join([*where, self.message])


@dataclass(frozen=True)
class Setting:
    """A value as written, and where: main.cf and its line, or an override (path None)."""

    name: str
    value: str
    path: Path | None = None
    line: int | None = None


@dataclass(frozen=True)
class LogicalLine:
    """One `name = value` of main.cf with the physical lines it spans (0-based, end exclusive)."""

    name: str
    value: str
    first: int
    end: int


# --------------------------------------------------------------------------------------
# main.cf syntax
# --------------------------------------------------------------------------------------
def is_comment_or_blank(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def logical_lines(text: str, path: Path | str = MAIN_CF) -> Iterator[LogicalLine]:
    """The `name = value` entries of a main.cf text, in file order.

    Raises ConfigError (file and line) for a line without `=`, a bad name, or a
    continuation line with nothing to continue.
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if is_comment_or_blank(line):
            index += 1
            continue
        if line[0].isspace():
            raise ConfigError("continuation line without a parameter to continue", path, index + 1)
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals:
            raise ConfigError(f"missing '=' after parameter name: \"{name}\"", path, index + 1)
        if not NAME_RE.match(name):
            raise ConfigError(f'bad parameter name: "{name}"', path, index + 1)
        parts = [value.strip()]
        end = index + 1
        while end < len(lines) and (
            not lines[end] or lines[end][0].isspace() or lines[end].startswith("#")
        ):
            if not is_comment_or_blank(lines[end]):
                parts.append(lines[end].strip())
            end += 1
        # Trailing blank and comment lines belong to the next entry, not this one.
        while end - 1 > index and is_comment_or_blank(lines[end - 1]):
            end -= 1
        yield LogicalLine(name, " ".join(part for part in parts if part), index, end)
        index = end


def parse_main_cf(text: str, path: Path | str = MAIN_CF) -> dict[str, Setting]:
    """The settings of a main.cf text; the last definition of a name wins."""
    settings: dict[str, Setting] = {}
    for entry in logical_lines(text, path):
        settings[entry.name] = Setting(entry.name, entry.value, Path(path), entry.first + 1)
    return settings


def read_main_cf(path: Path) -> str:
    """main.cf's text; bytes that are not UTF-8 survive a read-edit-write round trip."""
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror}") from exc


def parse_override(text: str) -> Setting:
    """A `name=value` override (-o); raises ConfigError when it has no `=` or a bad name."""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not NAME_RE.match(name):
        raise ConfigError(f'bad override "{text}": expected name=value')
    return Setting(name, value.strip())


# --------------------------------------------------------------------------------------
# Lists and conversions
# --------------------------------------------------------------------------------------
def split_list(text: str) -> list[str]:
    """Split a list value on commas and white space, keeping `{ ... }` groups whole."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        if depth == 0 and (char == "," or char.isspace()):
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        items.append("".join(current))
    return items


def convert_int(value: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", value.strip()):
        raise ValueError(f'bad numerical value: "{value}"')
    return int(value)


def convert_time(value: str, unit: str = "s") -> int:
    """Seconds of a time value such as `300s`, `5d` or `10` (in the parameter's unit)."""
    match = _TIME_RE.match(value.strip().lower())
    if not match:
        raise ValueError(f'bad time value: "{value}"')
    return int(match.group(1)) * _TIME_UNITS[match.group(2) or unit]


def convert_bool(value: str) -> bool:
    try:
        return _BOOLEANS[value.strip().lower()]
    except KeyError:
        raise ValueError(f'bad boolean value: "{value}" (expected yes or no)') from None


def _check_bounds(param: Param, number: int) -> None:
    if param.minimum is not None and number < param.minimum:
        raise ValueError(f"value {number} is less than the minimum {param.minimum}")
    if param.maximum is not None and number > param.maximum:
        raise ValueError(f"value {number} is more than the maximum {param.maximum}")


def convert(param: Param, value: str) -> Any:
    """A parameter's expanded text as the type its Kind says; ValueError when it is not."""
    if param.kind in (Kind.INT, Kind.SIZE):
        number = convert_int(value)
        _check_bounds(param, number)
        return number
    if param.kind is Kind.TIME:
        seconds = convert_time(value, param.time_unit)
        _check_bounds(param, seconds)
        return seconds
    if param.kind is Kind.BOOL:
        return convert_bool(value)
    if param.kind is Kind.LIST:
        return split_list(value)
    return value


# --------------------------------------------------------------------------------------
# $name expansion
# --------------------------------------------------------------------------------------
class _Expander:
    """Expands values against a table of raw texts, detecting loops and undefined names."""

    def __init__(self, raw: Mapping[str, str], where: Mapping[str, Setting]) -> None:
        self.raw = raw
        self.where = where
        self.done: dict[str, str] = {}
        self.undefined: set[str] = set()
        self.stack: list[str] = []

    def value_of(self, name: str) -> str:
        if name in self.done:
            return self.done[name]
        if name in self.stack:
            loop = " -> ".join("$" + n for n in [*self.stack[self.stack.index(name) :], name])
            first = self.where.get(name)
            raise ConfigError(
                f"recursive parameter expansion: {loop}",
                first.path if first else None,
                first.line if first else None,
                name,
            )
        if name not in self.raw:
            self.undefined.add(name)
            return ""
        if name in _EXPANDED_AT_USE:
            self.done[name] = self.raw[name]
            return self.raw[name]
        self.stack.append(name)
        try:
            value = self.expand(self.raw[name])
        finally:
            self.stack.pop()
        self.done[name] = value
        return value

    def expand(self, text: str, depth: int = 0) -> str:
        if "$" not in text:
            return text
        if depth > _MAX_NESTING:
            raise ConfigError(
                "unreasonable macro call nesting", name=self.stack[-1] if self.stack else None
            )
        out: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char != "$" or i + 1 >= len(text):
                out.append(char)
                i += 1
                continue
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt in "{(":
                close = _matching(text, i + 1)
                if close < 0:
                    raise self._syntax(f'missing "{"}" if nxt == "{" else ")"}" in "{text}"')
                out.append(self._braced(text[i + 2 : close], nxt, depth))
                i = close + 1
            else:
                match = re.match(r"[A-Za-z0-9_]+", text[i + 1 :])
                if match:
                    out.append(self.value_of(match.group(0)))
                    i += 1 + match.end()
                else:
                    out.append("$")
                    i += 1
        return "".join(out)

    def _braced(self, inner: str, opener: str, depth: int) -> str:
        if opener == "{" and inner.startswith("{"):
            return self._relational(inner, depth)
        match = re.match(r"([A-Za-z0-9_]+)(.*)\Z", inner, re.S)
        if not match:
            raise self._syntax(f'bad parameter reference: "${opener}{inner}"')
        name, rest = match.groups()
        if not rest:
            return self.value_of(name)
        if opener != "{" or rest[0] not in "?:":
            raise self._syntax(f'bad parameter reference: "${{{inner}}}"')
        value = self.value_of(name)
        if rest[0] == ":":
            return self.expand(_unbrace(rest[1:]), depth + 1) if not value else ""
        when_set, otherwise = _split_alternatives(rest[1:])
        if value:
            return self.expand(when_set, depth + 1)
        return self.expand(otherwise, depth + 1) if otherwise is not None else ""

    def _relational(self, inner: str, depth: int) -> str:
        match = re.match(
            r"\{(.*?)\}\s*(==|!=|<=|>=|<|>)\s*\{(.*?)\}\s*\?\s*\{(.*?)\}\s*(?::\s*\{(.*?)\})?\s*\Z",
            inner,
            re.S,
        )
        if not match:
            raise self._syntax(f'bad relational expression: "${{{inner}}}"')
        left, op, right, yes, no = match.groups()
        a, b = self.expand(left, depth + 1), self.expand(right, depth + 1)
        outcome = _compare(a, op, b)
        chosen = yes if outcome else (no or "")
        return self.expand(chosen, depth + 1)

    def _syntax(self, message: str) -> ConfigError:
        name = self.stack[-1] if self.stack else None
        where = self.where.get(name) if name else None
        return ConfigError(
            message, where.path if where else None, where.line if where else None, name
        )


def _compare(a: str, op: str, b: str) -> bool:
    """Postfix's relational operators: numeric when both sides are numbers, else text."""
    if a.strip().isdigit() and b.strip().isdigit():
        return bool(_COMPARISONS[op](int(a), int(b)))
    return bool(_COMPARISONS[op](a, b))


_COMPARISONS: dict[str, Any] = {
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def _matching(text: str, open_at: int) -> int:
    """Index of the bracket that closes the one at OPEN_AT, or -1."""
    opener = text[open_at]
    closer = "}" if opener == "{" else ")"
    depth = 0
    for index in range(open_at, len(text)):
        if text[index] == opener:
            depth += 1
        elif text[index] == closer:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _unbrace(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("{") and _matching(stripped, 0) == len(stripped) - 1:
        return stripped[1:-1]
    return text


def _split_alternatives(text: str) -> tuple[str, str | None]:
    """`{a}:{b}` -> (a, b); `{a}` or `a` -> (a, None)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        close = _matching(stripped, 0)
        if close > 0:
            rest = stripped[close + 1 :].strip()
            if rest.startswith(":"):
                return stripped[1:close], _unbrace(rest[1:])
            if not rest:
                return stripped[1:close], None
    return text, None


# --------------------------------------------------------------------------------------
# The configuration of a process
# --------------------------------------------------------------------------------------
class Config:
    """The immutable configuration of one process: defaults, main.cf, overrides, expanded."""

    __slots__ = (
        "_defaults",
        "_main",
        "_main_cf_text",
        "_overrides",
        "_raw",
        "_values",
        "config_dir",
        "warnings",
    )

    def __init__(
        self,
        config_dir: Path,
        main: Mapping[str, Setting],
        overrides: Mapping[str, Setting],
        *,
        strict: bool = True,
        main_cf_text: str = "",
    ) -> None:
        self.config_dir = config_dir
        self._main_cf_text = main_cf_text
        self._main = MappingProxyType(dict(main))
        self._overrides = MappingProxyType(dict(overrides))
        explicit_domain = self._explicit_value("mydomain")
        defaults = {name: param.default for name, param in PARAMS.items()}
        defaults.update(computed_defaults(explicit_domain))
        defaults["config_directory"] = str(config_dir)
        self._defaults = MappingProxyType(defaults)
        raw = dict(defaults)
        raw.update({name: s.value for name, s in self._main.items()})
        raw.update({name: s.value for name, s in self._overrides.items()})
        where = {**self._main, **self._overrides}
        if explicit_domain is None:
            # As in Postfix, mydomain's default follows the myhostname in effect.
            hostname = _Expander(raw, where).value_of("myhostname")
            raw["mydomain"] = defaults["mydomain"] = domain_of_hostname(hostname)
        self._raw = MappingProxyType(raw)
        expander = _Expander(raw, where)
        problems: list[str] = []
        values: dict[str, str] = {}
        for name, text in raw.items():
            try:
                values[name] = expander.value_of(name)
                if name in _FILE_VALUED:
                    values[name] = _value_from_file(name, values[name], where.get(name))
            except ConfigError as exc:
                if strict:
                    raise
                problems.append(str(exc))
                values[name] = text
                expander.stack.clear()
        self._values = MappingProxyType(values)
        if strict:
            self._validate(where)
        undefined = [f"undefined parameter: ${name}" for name in sorted(expander.undefined)]
        self.warnings = tuple(problems + undefined)

    @property
    def digest(self) -> str:
        """The digest of the main.cf text this configuration was read from (text_digest)."""
        return text_digest(self._main_cf_text)

    def _explicit_value(self, name: str) -> str | None:
        setting = self._overrides.get(name) or self._main.get(name)
        return setting.value if setting else None

    def _validate(self, where: Mapping[str, Setting]) -> None:
        for name, setting in where.items():
            param = PARAMS.get(name)
            if param is None:
                continue
            try:
                convert(param, self._values[name])
            except ValueError as exc:
                raise ConfigError(str(exc), setting.path, setting.line, name) from None

    # -- what was written, and where ---------------------------------------------------
    def explicit(self) -> Mapping[str, Setting]:
        """The settings main.cf makes (not the -o overrides), by name."""
        return self._main

    def overrides(self) -> Mapping[str, Setting]:
        return self._overrides

    def default(self, name: str) -> str | None:
        """The built-in default text of a parameter (postconf -d), or None if unknown."""
        return self._defaults.get(name)

    def raw(self, name: str) -> str | None:
        """A parameter's text before expansion, or None when nothing defines it."""
        return self._raw.get(name)

    def known(self, name: str) -> bool:
        return name in self._raw

    def names(self) -> list[str]:
        return sorted(self._raw)

    # -- values ------------------------------------------------------------------------
    def get(self, name: str) -> str:
        """The expanded value; KeyError for a name nothing defines (a programming error)."""
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"unknown parameter: {name}") from None

    def expand(self, text: str) -> str:
        """Expand `$name` references in TEXT against this configuration."""
        return _Expander(self._values, {}).expand(text)

    def _typed(self, name: str, kind: Kind) -> Any:
        param = PARAMS.get(name) or Param(name, kind, "", "")
        value = self.get(name)
        try:
            return convert(param if param.kind is kind else Param(name, kind, "", ""), value)
        except ValueError as exc:
            setting = self._overrides.get(name) or self._main.get(name)
            raise ConfigError(
                str(exc), setting.path if setting else None, setting.line if setting else None, name
            ) from None

    def get_int(self, name: str) -> int:
        return int(self._typed(name, Kind.INT))

    def get_size(self, name: str) -> int:
        return int(self._typed(name, Kind.SIZE))

    def get_time(self, name: str) -> int:
        return int(self._typed(name, Kind.TIME))

    def get_bool(self, name: str) -> bool:
        return bool(self._typed(name, Kind.BOOL))

    def get_list(self, name: str) -> list[str]:
        return list(self._typed(name, Kind.LIST))

    def reload(self) -> Config:
        """A new Config from the same directory and overrides; ConfigError leaves self valid."""
        return load_config(
            self.config_dir, [f"{s.name}={s.value}" for s in self._overrides.values()]
        )


def _value_from_file(name: str, value: str, setting: Setting | None) -> str:
    """Debian's convention: a value that starts with / names a file whose first line is it."""
    if not value.startswith("/"):
        return value
    try:
        with open(value, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().strip()
    except OSError as exc:
        raise ConfigError(
            f"open {value}: {exc.strerror}",
            setting.path if setting else None,
            setting.line if setting else None,
            name,
        ) from None
    if not first:
        raise ConfigError(
            f"{value} is empty",
            setting.path if setting else None,
            setting.line if setting else None,
            name,
        )
    return first


def config_directory(config_dir: str | Path | None = None) -> Path:
    """-c DIR, else $SDMAIL_CONFIG_DIR, else /etc/sdmail."""
    if config_dir is not None:
        return Path(config_dir)
    return Path(os.environ.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR)


def load_config(
    config_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    missing_ok: bool = False,
    strict: bool = True,
) -> Config:
    """Read CONFIG_DIR/main.cf, apply `name=value` OVERRIDES, expand: a new Config.

    A missing main.cf is an error (as in Postfix) unless MISSING_OK, which gives the
    built-in defaults.  STRICT=False (postconf) keeps going past values that do not
    convert or expand, leaving them as written and noting why in `warnings`.
    """
    directory = config_directory(config_dir)
    path = directory / MAIN_CF
    if missing_ok and not path.exists():
        main: dict[str, Setting] = {}
        text = ""
    else:
        text = read_main_cf(path)
        main = parse_main_cf(text, path)
    extra = {}
    for override in overrides:
        setting = parse_override(override)
        extra[setting.name] = setting
    return Config(directory, main, extra, strict=strict, main_cf_text=text)


def text_digest(text: str) -> str:
    """A short digest of main.cf's text: how a reload tells which file a process runs with."""
    # hashlib loads OpenSSL (~2 ms): only daemons, which name the digest in STATUS=, pay it.
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def main_cf_digest(config_dir: str | Path | None = None) -> str:
    """The digest of main.cf as it is on disk now (see Config.digest)."""
    return text_digest(read_main_cf(config_directory(config_dir) / MAIN_CF))


def bind(cls: type[T], cfg: Config) -> T:
    """Fill the frozen dataclass CLS, whose field names are parameter names, from CFG.

    Each field is converted by its parameter's Kind (lists become tuples); a field
    that names no parameter is a programming error (KeyError).  A parameter whose
    name is no Python identifier (`2bounce_notice_recipient`) is named in the field's
    metadata: `field(metadata={"parameter": NAME})`.
    """
    values: dict[str, Any] = {}
    for field in fields(cls):  # type: ignore[arg-type]
        name = field.metadata.get("parameter", field.name)
        param = PARAMS.get(name)
        if param is None:
            raise KeyError(f"{cls.__name__}.{field.name} is not a registered parameter")
        value = cfg._typed(name, param.kind)
        values[field.name] = tuple(value) if param.kind is Kind.LIST else value
    return cls(**values)
