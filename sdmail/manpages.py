"""manpages: the manual pages and `--help` of sdmail's programs, from their own texts.

USAGE
    python3 -m sdmail.manpages [--source DIR] OUTPUT_DIR

WHAT IT DOES.  Writes one roff page per program into OUTPUT_DIR/manN/: section 1 for
each administrator's tool (a top-level module of the package with a `main` function:
postconf, postsuper, ...), section 8 for each service (a subpackage with a `__main__`:
pickup, qmgr, ...), and section 5 for main.cf, `sdmail-main.cf.5`, from the one
parameter registry (core/params: name, default, kind, bounds, doc).  A tool's page is
its module docstring: the first line names it (`postsuper: summary`; other names before
the colon, `sendmail, mailq, newaliases: ...`, get `.so` pages of their own), the
USAGE block is the synopsis, and the paragraphs after it the description.  `--help` of
a tool prints the same docstring (`add_help_option`), so the page and the help never
disagree.  Sources are read as text (never imported), so a page can be made on a build
machine that lacks a component's dependencies.

OWNS the man/ tree it writes and the roff layout; nothing else.  Pages are generated at
package build time, not committed.

Failure modes: `render_tool_page` raises `ManpageError` for a docstring without its
`name: summary` first line; `write_pages` passes on OSError from the output directory;
`main` turns both into `manpages: fatal: ...` and exit 1.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sdmail.core.params import PARAMS, Kind, Param

PROGRAM = "manpages"
MAIN_CF_PAGE = "sdmail-main.cf"
PACKAGE_DIR = Path(__file__).resolve().parent
TOOL_SECTION = 1
CONFIG_SECTION = 5
SERVICE_SECTION = 8

_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_HEADING = re.compile(r"([A-Z][A-Z ,/'-]*[A-Z])([.:]?)(\s+|$)")
_CODE = re.compile(r"`([^`\n]+)`")
_KIND_TEXT = {
    Kind.STR: "text",
    Kind.INT: "a number",
    Kind.BOOL: "yes or no",
    Kind.TIME: "a time",
    Kind.SIZE: "a size in bytes",
    Kind.LIST: "a list",
}


class ManpageError(Exception):
    """A program's text cannot be made into a page; the message names the program."""


# --------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------
class _HelpAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, text: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.text = text

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> NoReturn:
        sys.stdout.write(self.text.rstrip("\n") + "\n")
        sys.stdout.flush()
        raise SystemExit(0)


def add_help_option(parser: argparse.ArgumentParser, text: str | None) -> None:
    """Give PARSER a `--help` that prints TEXT (the module docstring) and exits 0, before
    any other option or missing argument is looked at."""
    parser.add_argument(
        "--help", action=_HelpAction, text=text or parser.prog, help="show this text"
    )


# --------------------------------------------------------------------------------------
# Reading a program's text
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgramText:
    """What a page is made of: the names a docstring gives, its summary and its body."""

    name: str
    section: int
    other_names: tuple[str, ...]
    summary: str
    usage: tuple[str, ...]
    paragraphs: tuple[str, ...]


def parse_docstring(name: str, section: int, docstring: str | None) -> ProgramText:
    """Split a module docstring into the parts of a page; ManpageError without one."""
    if not docstring or not docstring.strip():
        raise ManpageError(f"{name}: no module docstring to make a page of")
    first, _, rest = docstring.strip().partition("\n")
    names_text, colon, summary = first.partition(":")
    if not colon or not summary.strip():
        raise ManpageError(f"{name}: the docstring's first line is not 'name: summary'")
    names = [n for n in re.split(r",\s*|\s+and\s+", names_text.strip()) if _NAME.fullmatch(n)]
    blocks = [b for b in re.split(r"\n\s*\n", rest) if b.strip()]
    usage: tuple[str, ...] = ()
    if blocks and blocks[0].strip() == "USAGE" and len(blocks) > 1:
        usage = tuple(line.strip() for line in blocks[1].splitlines() if line.strip())
        blocks = blocks[2:]
    elif blocks and blocks[0].lstrip().startswith("USAGE\n"):
        lines = blocks[0].strip().splitlines()[1:]
        usage = tuple(line.strip() for line in lines if line.strip())
        blocks = blocks[1:]
    return ProgramText(
        name=name,
        section=section,
        other_names=tuple(n for n in names if n != name),
        summary=summary.strip().rstrip("."),
        usage=usage,
        paragraphs=tuple(blocks),
    )


def module_docstring(path: Path) -> str | None:
    """The docstring of the Python source file PATH, read without importing it."""
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), str(path)))


def _has_main(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def find_programs(package_dir: Path = PACKAGE_DIR) -> list[ProgramText]:
    """Every tool (section 1) and service (section 8) of the package, by name."""
    programs = []
    for path in sorted(package_dir.glob("*.py")):
        if path.stem.startswith("_") or path.stem == PROGRAM or not _has_main(path):
            continue
        programs.append(parse_docstring(path.stem, TOOL_SECTION, module_docstring(path)))
    for main_file in sorted(package_dir.glob("*/__main__.py")):
        package = main_file.parent
        if package.name == "core":
            continue
        name = package.name.replace("_", "-")
        text = module_docstring(package / "__init__.py")
        programs.append(parse_docstring(name, SERVICE_SECTION, text))
    return programs


# --------------------------------------------------------------------------------------
# roff
# --------------------------------------------------------------------------------------
def roff_escape(text: str) -> str:
    """TEXT safe inside a roff line: backslashes and minus signs escaped, and every
    character outside ASCII as a `\\[uXXXX]` glyph (groff reads its input as Latin-1)."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    if escaped.isascii():
        return escaped
    return "".join(c if c.isascii() else f"\\[u{ord(c):04X}]" for c in escaped)


def _roff_line(text: str) -> str:
    # A line that starts with a dot or a quote would be read as a request.
    return "\\&" + text if text.startswith((".", "'")) else text


def _inline(text: str) -> str:
    """Escaped TEXT with `code` in bold."""
    parts = _CODE.split(text)
    out = []
    for index, part in enumerate(parts):
        escaped = roff_escape(part)
        out.append(f"\\fB{escaped}\\fR" if index % 2 else escaped)
    return "".join(out)


def _title_header(name: str, section: int) -> list[str]:
    version = PARAMS["mail_version"].default
    return [
        f'.TH {roff_escape(name.upper())} {section} "{_build_date()}" "sdmail {version}" '
        '"sdmail manual"',
        ".nh",
        ".ad l",
    ]


def _build_date() -> str:
    # Reproducible builds: the date of the source (dpkg sets SOURCE_DATE_EPOCH), else none.
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():
        return time.strftime("%Y-%m-%d", time.gmtime(int(epoch)))
    return ""


def _paragraph(block: str) -> list[str]:
    lines = block.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    if indents and min(indents) >= 2:
        # An indented block (a list, a layout, an example) keeps its lines.
        return [".PP", ".nf", *(_roff_line(_inline(line.rstrip())) for line in lines), ".fi"]
    text = " ".join(line.strip() for line in lines if line.strip())
    heading = _HEADING.match(text)
    out = [".PP"]
    if heading and len(heading.group(1)) > 2 and heading.group(1).upper() == heading.group(1):
        out.append(f"\\fB{roff_escape(heading.group(1))}{heading.group(2)}\\fR")
        text = text[heading.end() :]
    if text:
        out.append(_roff_line(_inline(text)))
    return out


def render_tool_page(program: ProgramText) -> str:
    """The roff page of a tool or service."""
    names = ", ".join(roff_escape(n) for n in (program.name, *program.other_names))
    out = _title_header(program.name, program.section)
    out += [".SH NAME", f"{names} \\- {_inline(program.summary)}"]
    if program.usage:
        out += [".SH SYNOPSIS", ".nf", *(_roff_line(_inline(u)) for u in program.usage), ".fi"]
    if program.paragraphs:
        out.append(".SH DESCRIPTION")
        for block in program.paragraphs:
            out += _paragraph(block)
    out += [
        ".SH SEE ALSO",
        f"\\fB{MAIN_CF_PAGE}\\fR({CONFIG_SECTION}), \\fBpostconf\\fR({TOOL_SECTION})",
    ]
    return "\n".join(out) + "\n"


def _param_kind(param: Param) -> str:
    text = _KIND_TEXT[param.kind]
    if param.kind is Kind.TIME:
        text += f" (default unit {param.time_unit})"
    bounds = []
    if param.minimum is not None and param.kind in (Kind.INT, Kind.TIME, Kind.SIZE):
        bounds.append(f"at least {param.minimum}")
    if param.maximum is not None:
        bounds.append(f"at most {param.maximum}")
    return text + (", " + " and ".join(bounds) if bounds else "")


def render_main_cf_page(params: Mapping[str, Param] = PARAMS) -> str:
    """sdmail-main.cf(5): main.cf's syntax and every registered parameter."""
    out = _title_header(MAIN_CF_PAGE, CONFIG_SECTION)
    out += [
        ".SH NAME",
        f"{roff_escape(MAIN_CF_PAGE)} \\- sdmail configuration parameters",
        ".SH SYNOPSIS",
        ".nf",
        "/etc/sdmail/main.cf",
        "\\fBpostconf\\fR [\\fB\\-d\\fR] [\\fIname\\fR ...]",
        ".fi",
        ".SH DESCRIPTION",
        ".PP",
        "main.cf holds one \\fIname\\fR \\fB=\\fR \\fIvalue\\fR per logical line, with",
        "Postfix's syntax: a line that starts with white space continues the one before,",
        "lines that start with \\fB#\\fR are comments, and \\fB$name\\fR or",
        "\\fB${name}\\fR in a value stands for another parameter's value.",
        "Time values take a unit (s, m, h, d, w); sizes are in bytes.",
        "\\fBpostconf\\fR(1) shows and edits the file; \\fBpostconf \\-d\\fR shows the defaults.",
        ".SH PARAMETERS",
    ]
    for name in sorted(params):
        param = params[name]
        default = f"\\fI{roff_escape(param.default)}\\fR" if param.default else "empty"
        out += [
            ".TP",
            f"\\fB{roff_escape(name)}\\fR (default: {default})",
            _roff_line(_inline(param.doc)),
            ".br",
            f"Value: {roff_escape(_param_kind(param))}.",
        ]
    out += [".SH SEE ALSO", "\\fBpostconf\\fR(1)"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# Writing the pages
# --------------------------------------------------------------------------------------
def _alias_page(target: ProgramText) -> str:
    return f".so man{target.section}/{target.name}.{target.section}\n"


def pages(programs: Iterable[ProgramText]) -> Iterator[tuple[str, str]]:
    """(relative path, roff text) of every page: programs, their other names, main.cf."""
    programs = list(programs)
    own = {p.name for p in programs}
    aliases: dict[str, ProgramText] = {}
    for program in programs:
        yield f"man{program.section}/{program.name}.{program.section}", render_tool_page(program)
        for other in program.other_names:
            if other not in own:
                aliases.setdefault(other, program)
    for name, target in sorted(aliases.items()):
        yield f"man{target.section}/{name}.{target.section}", _alias_page(target)
    yield f"man{CONFIG_SECTION}/{MAIN_CF_PAGE}.{CONFIG_SECTION}", render_main_cf_page()


def write_pages(output_dir: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Write every page below OUTPUT_DIR (man1/, man5/, man8/); return their paths."""
    written = []
    for relative, text in pages(find_programs(package_dir)):
        path = output_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, add_help=False)
    parser.add_argument("--source", type=Path, default=PACKAGE_DIR)
    parser.add_argument("output_dir", type=Path)
    add_help_option(parser, __doc__)
    try:
        options = parser.parse_args(argv)
        write_pages(options.output_dir, options.source)
    except (ManpageError, OSError, SyntaxError) as exc:
        sys.stderr.write(f"{PROGRAM}: fatal: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
