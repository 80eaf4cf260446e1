"""The manual pages (sdmail/manpages.py): one per tool, service and for main.cf, made from the
parameter registry and the programs' own docstrings, rendered by groff without complaint; and
each tool's --help is the same text."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdmail.core.params import PARAMS
from sdmail.manpages import (
    ManpageError,
    main,
    parse_docstring,
    render_main_cf_page,
    render_tool_page,
    roff_escape,
    write_pages,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sdmail"
RULES = REPO / "packaging" / "debian" / "rules"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    write_pages(out)
    return out


def installed_tools() -> dict[str, str]:
    """tool -> module, from the package's rules (SBIN_TOOLS) and its mailq/newaliases links."""
    text = RULES.read_text()
    block = text[text.index("SBIN_TOOLS :=") : text.index("\n\n", text.index("SBIN_TOOLS :="))]
    tools = dict(re.findall(r"([a-z]+):(sdmail\.[a-z_.]+):", block))
    for link in re.findall(r"ln -s \.\./sbin/sendmail \$\(PKG\)/usr/bin/(\w+)", text):
        tools[link] = tools["sendmail"]
    return tools


def test_every_registered_parameter_has_an_entry_in_the_main_cf_page(pages):
    page = (pages / "man5" / "sdmail-main.cf.5").read_text()
    entries = re.findall(r"^\.TP\n\\fB(.+?)\\fR \(default: ", page, re.MULTILINE)
    assert [e.replace("\\-", "-") for e in entries] == sorted(PARAMS)


def test_a_parameter_entry_shows_its_default_kind_and_doc():
    page = render_main_cf_page()
    entry = page[page.index("\\fBmaximal_queue_lifetime\\fR") :].split(".TP", 1)[0]
    assert "(default: \\fI5d\\fR)" in entry
    assert PARAMS["maximal_queue_lifetime"].doc in entry
    assert "a time (default unit d)" in entry


def test_every_installed_tool_whose_module_exists_has_a_page(pages):
    for tool, module in installed_tools().items():
        if (REPO / (module.replace(".", "/") + ".py")).exists():
            assert (pages / "man1" / f"{tool}.1").is_file(), tool


def test_every_service_with_a_main_has_a_section_8_page(pages):
    for main_file in PACKAGE.glob("*/__main__.py"):
        name = main_file.parent.name.replace("_", "-")
        assert (pages / "man8" / f"{name}.8").is_file(), name


def test_other_names_of_a_page_point_at_it(pages):
    if (PACKAGE / "sendmail.py").exists():
        assert (pages / "man1" / "mailq.1").read_text() == ".so man1/sendmail.1\n"
    assert (pages / "man1" / "newaliases.1").read_text().startswith(".so man1/")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_renders_every_page_without_complaint(pages):
    for page in sorted(pages.glob("man*/*")):
        result = subprocess.run(
            ["groff", "-man", "-Tutf8", "-z", str(page.relative_to(pages))],
            cwd=pages,
            capture_output=True,
            text=True,
            timeout=60,
        )
        complaints = [line for line in result.stderr.splitlines() if "can't break line" not in line]
        assert (result.returncode, complaints) == (0, []), page


def test_a_page_has_name_synopsis_and_description_from_the_docstring(pages):
    page = (pages / "man1" / "postsuper.1").read_text()
    assert page.startswith(".TH POSTSUPER 1 ")
    assert "\n.SH NAME\npostsuper \\- the superintendent of the mail queue" in page
    synopsis = page[page.index(".SH SYNOPSIS") : page.index(".SH DESCRIPTION")]
    assert "postsuper [\\-psSv] [\\-c DIR]" in synopsis
    assert "\\fBpostsuper: fatal: use of this command is reserved for the superuser\\fR" in page


@pytest.mark.parametrize("tool", ["postsuper", "postcat", "postkick", "postlog", "postlock"])
def test_help_prints_the_text_the_page_is_made_of(tool):
    result = subprocess.run(
        [sys.executable, "-m", f"sdmail.{tool}", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    docstring = ast.get_docstring(ast.parse((PACKAGE / f"{tool}.py").read_text()))
    assert (result.returncode, result.stdout, result.stderr) == (0, docstring + "\n", "")


def test_the_date_comes_from_source_date_epoch_for_reproducible_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764021061")
    write_pages(tmp_path / "a")
    write_pages(tmp_path / "b")
    first = (tmp_path / "a" / "man1" / "postcat.1").read_text()
    assert '"2025-11-24"' in first.splitlines()[0]
    assert first == (tmp_path / "b" / "man1" / "postcat.1").read_text()


def test_text_that_roff_would_take_for_requests_is_escaped():
    program = parse_docstring("x", 1, "x: a tool.\n\n.start of a line\n'quoted\n")
    assert roff_escape("a\\b-c ü") == "a\\eb\\-c \\[u00FC]"
    page = render_tool_page(program)
    assert "\n\\&.start of a line 'quoted\n" in page


@pytest.mark.parametrize("docstring", [None, "", "no summary line here\n\nbody"])
def test_a_program_without_a_name_summary_line_is_refused(docstring):
    with pytest.raises(ManpageError, match=r"^x: "):
        parse_docstring("x", 1, docstring)


def test_the_generator_command_fails_in_one_line(tmp_path, capsys):
    source = tmp_path / "pkg"
    source.mkdir()
    (source / "tool.py").write_text('"""no summary here"""\n\ndef main():\n    pass\n')
    assert main(["--source", str(source), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        "manpages: fatal: tool: the docstring's first line is not 'name: summary'\n"
    )


def test_the_generator_command_writes_the_tree(tmp_path):
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "man5" / "sdmail-main.cf.5").is_file()
    assert (tmp_path / "man1" / "postsuper.1").is_file()
