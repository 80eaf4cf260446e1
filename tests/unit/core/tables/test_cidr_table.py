"""cidr: tables (sdmail/core/tables/cidr.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.tables import open_table
from sdmail.core.tables.table import TableError

REPO = Path(__file__).parents[4]
GOLDEN = REPO / "tests" / "data" / "tables"


def cidr(tmp_path: Path, text: str):
    path = tmp_path / "map.cidr"
    path.write_text(text)
    return open_table(f"cidr:{path}")


def open_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(TableError) as caught:
        cidr(tmp_path, text)
    return str(caught.value)


def test_golden_client_map_answers_its_queries():
    table = open_table(f"cidr:{GOLDEN / 'client.cidr'}")
    for line in (GOLDEN / "client.cidr.queries").read_text().splitlines():
        key, _, expected = line.partition("\t")
        assert table.lookup(key) == (expected or None), key


def test_first_matching_rule_wins(tmp_path):
    table = cidr(tmp_path, "192.0.2.0/24 first\n192.0.2.7 second\n")
    assert table.lookup("192.0.2.7") == "first"


def test_bare_address_matches_only_itself(tmp_path):
    table = cidr(tmp_path, "192.0.2.7 host\n2001:db8::7 v6host\n")
    assert table.lookup("192.0.2.7") == "host"
    assert table.lookup("192.0.2.8") is None
    assert table.lookup("2001:db8:0::7") == "v6host"
    assert table.lookup("2001:db8::8") is None


@pytest.mark.parametrize("pattern", ["[::1]/128", "[::1/128]", "[::1]", "::1", "::1/128"])
def test_brackets_are_optional_around_ipv6(tmp_path, pattern):
    assert cidr(tmp_path, f"{pattern} loopback\n").lookup("::1") == "loopback"


@pytest.mark.parametrize("pattern", ["[192.0.2.0]/24", "[192.0.2.0/24]"])
def test_brackets_are_optional_around_ipv4(tmp_path, pattern):
    assert cidr(tmp_path, f"{pattern} net\n").lookup("192.0.2.99") == "net"


def test_zero_prefix_matches_its_whole_family(tmp_path):
    table = cidr(tmp_path, "0.0.0.0/0 any-v4\n::/0 any-v6\n")
    assert table.lookup("255.255.255.255") == "any-v4"
    assert table.lookup("ffff::1") == "any-v6"


def test_negated_rule_answers_keys_outside_and_only_of_its_family(tmp_path):
    table = cidr(tmp_path, "!192.0.2.0/24 outside\n")
    assert table.lookup("198.51.100.1") == "outside"
    assert table.lookup("192.0.2.1") is None
    assert table.lookup("2001:db8::1") is None


def test_double_negation_cancels_and_space_may_follow_the_bang(tmp_path):
    table = cidr(tmp_path, "!!192.0.2.0/24 inside\n! 198.51.100.0/24 not-198\n")
    assert table.lookup("192.0.2.1") == "inside"
    assert table.lookup("203.0.113.1") == "not-198"


def test_if_blocks_nest_and_skip_keys_outside(tmp_path):
    table = cidr(
        tmp_path,
        "if 10.0.0.0/8\nif !10.1.0.0/16\n0.0.0.0/0 ten-not-one\nendif\n"
        "0.0.0.0/0 ten-one\nendif\n0.0.0.0/0 elsewhere\n",
    )
    assert table.lookup("10.2.0.1") == "ten-not-one"
    assert table.lookup("10.1.0.1") == "ten-one"
    assert table.lookup("192.0.2.1") == "elsewhere"


def test_negated_if_block_is_skipped_for_the_other_family(tmp_path):
    table = cidr(tmp_path, "if !192.0.2.0/24\n::/0 inside\nendif\n::/0 after\n")
    assert table.lookup("2001:db8::1") == "after"


def test_result_is_kept_as_written_and_continuation_lines_join(tmp_path):
    table = cidr(tmp_path, "192.0.2.0/24   REJECT  go  away $1 \n   please\n")
    assert table.lookup("192.0.2.1") == "REJECT  go  away $1 please"


def test_comments_and_blank_lines_are_skipped(tmp_path):
    table = cidr(tmp_path, "# comment\n\n   \n  # indented comment\n192.0.2.1 x # not a comment\n")
    assert table.lookup("192.0.2.1") == "x # not a comment"


def test_inline_rules_in_the_table_name():
    table = open_table("cidr:{ {192.0.2.0/24 doc}, {!0.0.0.0/0 v6} }")
    assert table.lookup("192.0.2.5") == "doc"
    assert table.lookup("198.51.100.1") is None


@pytest.mark.parametrize(
    "key", ["mail.example.com", "", "[192.0.2.1]", "192.0.2.01", "192.0.2", "fe80::1%eth0", "x:y"]
)
def test_a_key_that_is_not_an_address_is_not_found(tmp_path, key):
    assert cidr(tmp_path, "0.0.0.0/0 v4\n::/0 v6\n").lookup(key) is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("192.0.2.0/24\n", 1, "no lookup result"),
        ("# c\n192.0.2.1/24 x\n", 2, 'non-null host address bits in "192.0.2.1/24", perhaps you'),
        ("192.0.2.0/33 x\n", 1, 'bad net/mask pattern: "192.0.2.0/33"'),
        ("2001:db8::/129 x\n", 1, 'bad net/mask pattern: "2001:db8::/129"'),
        ("192.0.2.0/x x\n", 1, 'bad address pattern: "192.0.2.0/x"'),
        ("example.com x\n", 1, 'bad address pattern: "example.com"'),
        ("192.0.2.01 x\n", 1, 'bad address pattern: "192.0.2.01"'),
        ("[::1 x\n", 1, "missing ']' character after \"[::1\""),
        ("[::1]x y\n", 1, 'garbage after "[::1]"'),
        ("! x y\n", 1, 'bad address pattern: "x"'),
        ("! x\n", 1, "no lookup result"),
        ("!\n", 1, "no address pattern"),
        ("if\nendif\n", 1, "no address pattern"),
        ("if 10.0.0.0/8 OK\nendif\n", 1, 'garbage after IF pattern: "OK"'),
        ("if 10.0.0.0/8\nendif now\n", 2, 'garbage after ENDIF: "now"'),
        ("10.0.0.0/8 x\nendif\n", 2, "ENDIF without IF"),
        ("if 10.0.0.0/8\nif 10.1.0.0/16\nendif\n", 1, "IF has no matching ENDIF"),
        (" 10.0.0.0/8 x\n", 1, "logical line must not start with whitespace"),
    ],
)
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, text, line, message):
    error = open_error(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'map.cidr'}, line {line}: {message}")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TableError) as caught:
        open_table(f"cidr:{tmp_path / 'absent'}")
    assert str(caught.value) == f"open {tmp_path / 'absent'}: No such file or directory"


def test_bad_inline_rule_names_the_spec():
    with pytest.raises(TableError) as caught:
        open_table("cidr:{ {192.0.2.1/24 x} }")
    assert str(caught.value).startswith("cidr:{ {192.0.2.1/24 x} }, line 1: non-null host")


def test_cidr_is_a_pattern_table_that_cannot_list_itself(tmp_path):
    table = cidr(tmp_path, "192.0.2.1 x\n")
    assert not table.fixed
    with pytest.raises(TableError, match="sequence operation is not supported"):
        list(table.items())


@given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=32), st.ip_addresses(v=4))
def test_ipv4_networks_match_as_prefix_arithmetic_says(network_host, prefix, key):
    network = ipaddress.ip_network(f"{network_host}/{prefix}", strict=False)
    table = open_table(f"cidr:{{ {{{network} in}}, {{!{network} out}} }}")
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    inside = int(key) & mask == int(network.network_address)
    assert table.lookup(str(key)) == ("in" if inside else "out")


@given(st.ip_addresses(v=6), st.integers(min_value=0, max_value=128), st.ip_addresses(v=6))
def test_ipv6_networks_match_as_prefix_arithmetic_says(network_host, prefix, key):
    network = ipaddress.ip_network(f"{network_host}/{prefix}", strict=False)
    table = open_table(f"cidr:{{ {{[{network.network_address}]/{prefix} in}} }}")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - prefix)) - 1)
    inside = int(key) & mask == int(network.network_address)
    assert table.lookup(str(key)) == ("in" if inside else None)


_LINE_PARTS = st.sampled_from(
    ["if", "endif", "!", "[", "]", "/", "24", "192.0.2.0", "::", "1", " ", "x", "#", "\t", ":"]
)


@given(st.lists(st.lists(_LINE_PARTS, max_size=6).map("".join), max_size=8), st.text(max_size=30))
def test_hostile_rules_open_or_are_a_table_error_and_lookups_never_fail(lines, key):
    try:
        table = open_table("cidr:{ " + ", ".join("{" + line + "}" for line in lines) + " }")
    except TableError:
        return
    for probe in (key, "192.0.2.1", "::1"):
        assert table.lookup(probe) is None or isinstance(table.lookup(probe), str)


@given(st.text(max_size=200))
def test_any_file_text_opens_or_is_a_table_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cidr") / "map.cidr"
    path.write_text(text, errors="surrogateescape")
    try:
        table = open_table(f"cidr:{path}")
    except TableError as error:
        assert str(path) in str(error)
        return
    assert table.lookup("192.0.2.1") is None or table.lookup("192.0.2.1")


def test_postmap_q_answers_from_the_golden_map(run_postmap):
    done = run_postmap("-q", "10.1.2.3", f"cidr:{GOLDEN / 'client.cidr'}")
    assert (done.returncode, done.stdout) == (0, "OK ten-one-two\n")


def test_postmap_q_on_a_bad_map_names_file_and_line_without_a_traceback(tmp_path, run_postmap):
    bad = tmp_path / "bad.cidr"
    bad.write_text("192.0.2.0/24 OK\n192.0.2.1/24 REJECT\n")
    done = run_postmap("-q", "192.0.2.1", f"cidr:{bad}")
    assert done.returncode != 0
    assert f"{bad}, line 2: non-null host address bits" in done.stderr
    assert "Traceback" not in done.stderr
