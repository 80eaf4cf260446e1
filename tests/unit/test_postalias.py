"""postalias and newaliases as real processes (sdmail/postalias.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
GOLDEN = REPO / "tests" / "data" / "tables"


@pytest.fixture
def confdir(tmp_path):
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text("myhostname = mail.example.com\n")
    return config


def run(args, confdir, stdin="", entry="main"):
    env = {**os.environ, "SDMAIL_CONFIG_DIR": str(confdir), "PYTHONPATH": str(REPO)}
    code = f"import sys; from sdmail.postalias import {entry}; sys.exit({entry}())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def postalias(args, confdir, stdin=""):
    return run(args, confdir, stdin)


def newaliases(args, confdir):
    return run(args, confdir, entry="newaliases_main")


@pytest.fixture
def aliases(tmp_path):
    path = tmp_path / "aliases"
    path.write_text((GOLDEN / "aliases.in").read_text())
    return path


def test_builds_golden_aliases_with_the_at_sentinel(aliases, confdir):
    built = postalias([str(aliases)], confdir)
    assert (built.returncode, built.stdout, built.stderr) == (0, "", "")
    listed = postalias(["-s", str(aliases)], confdir)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout == (GOLDEN / "aliases.ref").read_text()


def test_module_runs_as_a_program(aliases, confdir):
    env = {**os.environ, "SDMAIL_CONFIG_DIR": str(confdir), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "sdmail.postalias", str(aliases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert (aliases.parent / "aliases.db").exists()


def test_query_prints_the_value_and_query_from_stdin_prints_key_colon_tab(aliases, confdir):
    postalias([str(aliases)], confdir)
    single = postalias(["-q", "Mailer-Daemon", str(aliases)], confdir)
    assert (single.returncode, single.stdout) == (0, "postmaster\n")
    many = postalias(["-q", "-", str(aliases)], confdir, stdin="postmaster\nnobody\nops team\n")
    assert (many.returncode, many.stdout) == (0, "postmaster:\troot\nops team:\talice, bob\n")
    assert postalias(["-q", "nobody", str(aliases)], confdir).returncode == 1


def test_syntax_error_exits_nonzero_and_old_table_still_answers(aliases, confdir):
    postalias([str(aliases)], confdir)
    aliases.write_text("postmaster: newroot\nthis line has no colon\n")
    failed = postalias([str(aliases)], confdir)
    assert failed.returncode == 1
    assert failed.stderr == f"postalias: fatal: {aliases}, line 2: need name:value pair\n"
    query = postalias(["-q", "postmaster", str(aliases)], confdir)
    assert query.stdout == "root\n"
    assert sorted(os.listdir(aliases.parent)) == ["aliases", "aliases.db", "etc"]


def test_duplicate_alias_warns_with_file_and_line(tmp_path, confdir):
    source = tmp_path / "aliases"
    source.write_text("root: a\nROOT: b\n")
    built = postalias([str(source)], confdir)
    assert built.returncode == 0
    assert built.stderr == f'postalias: warning: {source}, line 2: duplicate entry: "root"\n'
    assert postalias(["-q", "root", str(source)], confdir).stdout == "a\n"


def test_incremental_add_and_delete(aliases, confdir):
    postalias([str(aliases)], confdir)
    added = postalias(["-i", str(aliases)], confdir, stdin="webmaster: alice\n")
    assert (added.returncode, added.stderr) == (0, "")
    assert postalias(["-q", "webmaster", str(aliases)], confdir).stdout == "alice\n"
    assert postalias(["-d", "webmaster", str(aliases)], confdir).returncode == 0
    assert postalias(["-q", "webmaster", str(aliases)], confdir).returncode == 1
    assert postalias(["-q", "@", str(aliases)], confdir).stdout == "@\n"


def test_newaliases_builds_every_alias_database(tmp_path, confdir):
    first = tmp_path / "aliases"
    first.write_text("root: admin\n")
    second = tmp_path / "lists"
    second.write_text("team: a, b\n")
    (confdir / "main.cf").write_text(f"alias_database = hash:{first}, hash:{second}\n")
    result = newaliases([], confdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert postalias(["-q", "root", str(first)], confdir).stdout == "admin\n"
    assert postalias(["-q", "team", str(second)], confdir).stdout == "a, b\n"


def test_newaliases_reports_a_broken_alias_file_like_postalias(tmp_path, confdir):
    source = tmp_path / "aliases"
    source.write_text("root admin\n")
    (confdir / "main.cf").write_text(f"alias_database = hash:{source}\n")
    result = newaliases([], confdir)
    assert result.returncode == 1
    assert result.stderr == f"postalias: fatal: {source}, line 1: need name:value pair\n"


def test_newaliases_takes_c_and_o(tmp_path, confdir):
    source = tmp_path / "aliases"
    source.write_text("root: admin\n")
    result = newaliases(["-c", str(confdir), "-o", f"alias_database=hash:{source}"], confdir)
    assert (result.returncode, result.stderr) == (0, "")
    assert (tmp_path / "aliases.db").exists()


def test_newaliases_with_empty_alias_database_does_nothing(confdir):
    (confdir / "main.cf").write_text("alias_database =\n")
    assert newaliases([], confdir).returncode == 0


def test_newaliases_rejects_unknown_arguments(confdir):
    result = newaliases(["-x"], confdir)
    assert result.returncode == 64
    assert result.stderr.startswith("newaliases: fatal: usage:")
