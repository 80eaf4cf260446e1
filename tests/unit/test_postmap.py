"""postmap as a real process (sdmail/postmap.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
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


def postmap(args, confdir, stdin=""):
    env = {**os.environ, "SDMAIL_CONFIG_DIR": str(confdir), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sdmail.postmap", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.write_text(textwrap.dedent(text))
    if mode is not None:
        path.chmod(mode)
    return path


def test_builds_golden_virtual_and_lists_it_with_s(tmp_path, confdir):
    source = tmp_path / "virtual"
    source.write_text((GOLDEN / "virtual.in").read_text())
    built = postmap([str(source)], confdir)
    assert built.returncode == 0
    assert built.stderr == (
        f'postmap: warning: {source}, line 8: duplicate entry: "postmaster@example.com"\n'
    )
    assert (tmp_path / "virtual.db").exists()
    listed = postmap(["-s", f"hash:{source}"], confdir)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout == (GOLDEN / "virtual.ref").read_text()


def test_query_prints_value_and_exit_status_says_found(tmp_path, confdir):
    source = write(tmp_path / "virtual", "joe@example.com joe@example.net\n")
    postmap([str(source)], confdir)
    found = postmap(["-q", "JOE@example.com", str(source)], confdir)
    assert (found.returncode, found.stdout, found.stderr) == (0, "joe@example.net\n", "")
    missing = postmap(["-q", "jim@example.com", str(source)], confdir)
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "")


def test_query_is_one_literal_lookup_not_the_search_order(tmp_path, confdir):
    source = write(tmp_path / "virtual", "user@example.com x\n@example.com y\n")
    postmap([str(source)], confdir)
    assert postmap(["-q", "user+ext@example.com", str(source)], confdir).returncode == 1
    assert postmap(["-q", "other@example.com", str(source)], confdir).returncode == 1


def test_query_from_stdin_prints_key_tab_value_for_found_keys(tmp_path, confdir):
    source = write(tmp_path / "virtual", "a 1\nb 2\n")
    postmap([str(source)], confdir)
    result = postmap(["-q", "-", str(source)], confdir, stdin="A\nzzz\nb\n")
    assert (result.returncode, result.stdout) == (0, "A\t1\nb\t2\n")
    none = postmap(["-q", "-", str(source)], confdir, stdin="x\ny\n")
    assert (none.returncode, none.stdout) == (1, "")


def test_query_from_stdin_echoes_keys_that_are_not_utf8(tmp_path, confdir):
    env = {**os.environ, "SDMAIL_CONFIG_DIR": str(confdir), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "sdmail.postmap", "-q", "-", "regexp:{ {/^a/ found} }"],
        input=b"a\xff\nb\xfe\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"a\xff\tfound\n", b"")


def test_query_searches_several_tables_in_order(tmp_path, confdir):
    first = write(tmp_path / "first", "a from-first\n")
    second = write(tmp_path / "second", "a from-second\nb only-second\n")
    postmap([str(first), str(second)], confdir)
    both = [str(first), str(second)]
    assert postmap(["-q", "a", *both], confdir).stdout == "from-first\n"
    assert postmap(["-q", "b", *both], confdir).stdout == "only-second\n"


def test_f_keeps_key_case_when_building_and_querying(tmp_path, confdir):
    source = write(tmp_path / "t", "MixedCase v\n")
    postmap(["-f", str(source)], confdir)
    assert postmap(["-fq", "MixedCase", str(source)], confdir).stdout == "v\n"
    assert postmap(["-fq", "mixedcase", str(source)], confdir).returncode == 1
    assert postmap(["-q", "MixedCase", str(source)], confdir).returncode == 1


def test_r_replaces_and_w_ignores_duplicates_silently(tmp_path, confdir):
    source = write(tmp_path / "t", "k first\nk second\n")
    replaced = postmap(["-r", str(source)], confdir)
    assert replaced.stderr == ""
    assert postmap(["-q", "k", str(source)], confdir).stdout == "second\n"
    ignored = postmap(["-w", str(source)], confdir)
    assert ignored.stderr == ""
    assert postmap(["-q", "k", str(source)], confdir).stdout == "first\n"


def test_new_table_takes_group_and_other_read_bits_from_source(tmp_path, confdir):
    source = write(tmp_path / "t", "k v\n", mode=0o640)
    postmap([str(source)], confdir)
    assert stat.S_IMODE((tmp_path / "t.db").stat().st_mode) == 0o640
    source.chmod(0o600)
    postmap([str(source)], confdir)
    assert stat.S_IMODE((tmp_path / "t.db").stat().st_mode) == 0o600
    postmap(["-p", str(source)], confdir)
    assert stat.S_IMODE((tmp_path / "t.db").stat().st_mode) == 0o644


def test_syntax_error_keeps_the_old_table_answering(tmp_path, confdir):
    source = write(tmp_path / "t", "k old\n")
    postmap([str(source)], confdir)
    write(tmp_path / "t", 'k new\n"broken v\n')
    failed = postmap([str(source)], confdir)
    assert failed.returncode == 1
    assert failed.stderr == (
        f"postmap: fatal: {source}, line 2: missing closing '\"' in quoted text\n"
    )
    assert postmap(["-q", "k", str(source)], confdir).stdout == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["etc", "t", "t.db"]


def test_missing_source_is_a_fatal_open_error(tmp_path, confdir):
    result = postmap([str(tmp_path / "x")], confdir)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"postmap: fatal: open {tmp_path / 'x'}: No such file or directory\n"


def test_query_of_a_table_never_built_is_a_fatal_open_error(tmp_path, confdir):
    result = postmap(["-q", "k", str(tmp_path / "x")], confdir)
    assert result.returncode == 1
    assert result.stderr == (
        f"postmap: fatal: open database {tmp_path / 'x'}.db: No such file or directory\n"
    )


def test_unknown_type_and_bad_usage(tmp_path, confdir):
    unknown = postmap(["-q", "k", "btreex:/etc/x"], confdir)
    assert unknown.returncode == 1
    assert unknown.stderr == "postmap: fatal: unsupported dictionary type: btreex\n"
    usage = postmap([], confdir)
    assert usage.returncode == 64
    assert usage.stderr.startswith("postmap: fatal: usage: postmap [-Nfinoprsvw]")
    bad_option = postmap(["-Z", "x"], confdir)
    assert bad_option.returncode == 64
    assert "invalid option -- 'Z'" in bad_option.stderr
    both = postmap(["-s", "-q", "k", "x"], confdir)
    assert both.returncode == 64


def test_read_directly_types_are_queried_but_not_built(tmp_path, confdir):
    patterns = write(tmp_path / "checks", "/^(.*)@example\\.com$/ user $1\n")
    query = postmap(["-q", "Joe@example.com", f"regexp:{patterns}"], confdir)
    assert (query.returncode, query.stdout) == (0, "user Joe\n")
    assert postmap(["-q", "k", "inline:{k=v}"], confdir).stdout == "v\n"
    build = postmap([f"regexp:{patterns}"], confdir)
    assert build.returncode == 1
    assert "cannot update a regexp table" in build.stderr
    listing = postmap(["-s", f"regexp:{patterns}"], confdir)
    assert listing.returncode == 1
    assert "sequence operation is not supported" in listing.stderr


def test_default_type_comes_from_default_database_type(tmp_path, confdir):
    source = write(tmp_path / "t", "k v\n")
    (confdir / "main.cf").write_text("default_database_type = texthash\n")
    assert postmap(["-q", "k", str(source)], confdir).stdout == "v\n"
    override = postmap(["-o", "default_database_type=hash", str(source)], confdir)
    assert override.returncode == 0
    assert (tmp_path / "t.db").exists()


def test_c_names_the_configuration_directory(tmp_path, confdir):
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.cf").write_text("default_database_type = texthash\n")
    source = write(tmp_path / "t", "k v\n")
    result = postmap(["-c", str(other), "-q", "k", str(source)], confdir)
    assert result.stdout == "v\n"


def test_bad_main_cf_is_fatal_naming_file_and_line(tmp_path, confdir):
    (confdir / "main.cf").write_text("myhostname = x\nthis is not a setting\n")
    result = postmap(["-q", "k", "inline:{k=v}"], confdir)
    assert result.returncode == 1
    assert result.stderr.startswith(f"postmap: fatal: {confdir / 'main.cf'}, line 2:")
    assert "Traceback" not in result.stderr


def test_o_without_a_setting_is_the_keep_privileges_flag(tmp_path, confdir):
    source = write(tmp_path / "t", "k v\n")
    assert postmap(["-o", str(source)], confdir).returncode == 0
    assert postmap(["-q", "k", str(source)], confdir).stdout == "v\n"


def test_d_deletes_keys_and_reports_whether_found(tmp_path, confdir):
    source = write(tmp_path / "t", "a 1\nb 2\nc 3\n")
    postmap([str(source)], confdir)
    assert postmap(["-d", "A", str(source)], confdir).returncode == 0
    assert postmap(["-d", "a", str(source)], confdir).returncode == 1
    assert postmap(["-d", "-", str(source)], confdir, stdin="b\nnone\n").returncode == 0
    assert postmap(["-s", str(source)], confdir).stdout == "c\t3\n"


def test_i_adds_from_stdin_to_the_existing_table(tmp_path, confdir):
    source = write(tmp_path / "t", "a 1\n")
    postmap([str(source)], confdir)
    added = postmap(["-i", str(source)], confdir, stdin="b 2\na other\n")
    assert added.returncode == 0
    assert added.stderr == 'postmap: warning: stdin, line 2: duplicate entry: "a"\n'
    assert postmap(["-s", str(source)], confdir).stdout == "a\t1\nb\t2\n"
    postmap(["-ri", str(source)], confdir, stdin="a replaced\n")
    assert postmap(["-q", "a", str(source)], confdir).stdout == "replaced\n"


def test_i_creates_a_table_that_does_not_exist(tmp_path, confdir):
    result = postmap(["-i", str(tmp_path / "fresh")], confdir, stdin="k v\n")
    assert result.returncode == 0
    assert postmap(["-q", "k", str(tmp_path / "fresh")], confdir).stdout == "v\n"


READER = """
import json, random, re, sys, time
from sdmail.core.tables.hash import HashTable
name, count, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
table = HashTable("hash:" + name, name, recheck_interval=0)
lookups, wrong, errors, generations = 0, [], [], set()
import os
while not os.path.exists(stop):
    i = random.randrange(count)
    try:
        value = table.lookup(f"key{i}")
    except Exception as exc:
        errors.append(repr(exc))
        continue
    lookups += 1
    match = re.fullmatch(rf"gen(\\d+)-{i}", value or "")
    if match is None:
        wrong.append((i, value))
    else:
        generations.add(match.group(1))
print(json.dumps({"lookups": lookups, "wrong": wrong[:10], "errors": errors[:10],
                  "generations": sorted(generations)}))
"""


def test_rebuilding_a_large_table_never_shows_a_reader_a_wrong_answer(tmp_path, confdir):
    count = 100_000
    source = tmp_path / "big"

    def write_generation(generation: int) -> None:
        with open(source, "w") as out:
            out.writelines(f"key{i} gen{generation}-{i}\n" for i in range(count))

    write_generation(0)
    assert postmap([str(source)], confdir).returncode == 0
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(source), str(count), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        for generation in (1, 2, 3):
            time.sleep(0.2)
            write_generation(generation)
            rebuilt = postmap([str(source)], confdir)
            assert (rebuilt.returncode, rebuilt.stderr) == (0, "")
        time.sleep(0.2)
    finally:
        stop.touch()
        output, _ = reader.communicate(timeout=60)
    result = json.loads(output)
    assert result["errors"] == []
    assert result["wrong"] == []
    assert result["lookups"] > 1000
    assert "3" in result["generations"]
    assert len(result["generations"]) >= 2
