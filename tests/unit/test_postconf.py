"""postconf as a process: Postfix's flags, output layout, edits and errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sdmail.core.params import DEFAULT_MAILNAME_FILE, domain_of_hostname

DATA = Path(__file__).parent.parent / "data" / "postconf"


def postconf(config_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SDMAIL_CONFIG_DIR": str(config_dir)}
    return subprocess.run(
        [sys.executable, "-m", "sdmail.postconf", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )


@pytest.fixture
def cfdir(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(
        "# sdmail main.cf for tests\n"
        "\n"
        "myhostname = mail.example.com\n"
        "mydestination = $myhostname,\n"
        "    localhost\n"
        "# keep this comment\n"
        "relayhost =\n"
    )
    return tmp_path


def test_name_prints_name_equals_value(cfdir):
    result = postconf(cfdir, "message_size_limit", "smtpd_recipient_limit")
    assert result.stdout == "message_size_limit = 10240000\nsmtpd_recipient_limit = 1000\n"
    assert result.returncode == 0
    assert postconf(cfdir, "config_directory").stdout == f"config_directory = {cfdir}\n"
    assert postconf(cfdir, "queue_directory").stdout == "queue_directory = /var/spool/sdmail\n"


def test_empty_value_prints_name_and_equals_sign_only(cfdir):
    assert postconf(cfdir, "relayhost").stdout == "relayhost =\n"


def test_h_prints_value_alone_and_x_expands(cfdir):
    assert postconf(cfdir, "-h", "message_size_limit").stdout == "10240000\n"
    assert postconf(cfdir, "mydestination").stdout == "mydestination = $myhostname, localhost\n"
    assert (
        postconf(cfdir, "-x", "mydestination").stdout
        == "mydestination = mail.example.com, localhost\n"
    )
    assert postconf(cfdir, "-xh", "smtpd_banner").stdout == "mail.example.com ESMTP sdmail\n"


def test_d_prints_the_default_even_when_set(cfdir):
    postconf(cfdir, "-e", "message_size_limit=12345678")
    assert postconf(cfdir, "message_size_limit").stdout == "message_size_limit = 12345678\n"
    assert postconf(cfdir, "-d", "message_size_limit").stdout == "message_size_limit = 10240000\n"
    assert postconf(cfdir, "-d", "maximal_queue_lifetime").stdout == "maximal_queue_lifetime = 5d\n"


def test_unknown_parameter_warns_and_exits_zero(cfdir):
    result = postconf(cfdir, "no_such_parameter")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == "postconf: warning: no_such_parameter: unknown parameter\n"


def test_n_lists_exactly_what_main_cf_sets_sorted(cfdir):
    postconf(cfdir, "-e", "delay_warning_time=2h", "acceptance_knob=42")
    result = postconf(cfdir, "-n")
    assert result.stdout == (
        "acceptance_knob = 42\n"
        "delay_warning_time = 2h\n"
        "mydestination = $myhostname, localhost\n"
        "myhostname = mail.example.com\n"
        "relayhost =\n"
    )
    assert "unused parameter: acceptance_knob=42" in result.stderr


def test_e_replaces_in_place_keeping_comments_and_layout(cfdir):
    main_cf = cfdir / "main.cf"
    before = main_cf.stat()
    assert postconf(cfdir, "-e", "mydestination=localhost", "delay_warning_time=2h").returncode == 0
    after = main_cf.stat()
    assert after.st_ino != before.st_ino, "the edit must be an atomic rename"
    assert after.st_mode == before.st_mode
    assert postconf(cfdir, "-e", "delay_warning_time = 3h").returncode == 0
    assert main_cf.read_text() == (
        "# sdmail main.cf for tests\n"
        "\n"
        "myhostname = mail.example.com\n"
        "mydestination = localhost\n"
        "# keep this comment\n"
        "relayhost =\n"
        "delay_warning_time = 3h\n"
    )
    assert not [p for p in cfdir.iterdir() if p.name != "main.cf"], "no temporary file left"


def test_name_equals_value_without_e_edits(cfdir):
    postconf(cfdir, "soft_bounce=yes")
    assert postconf(cfdir, "soft_bounce").stdout == "soft_bounce = yes\n"


def test_e_removes_duplicate_definitions(cfdir):
    (cfdir / "main.cf").write_text("relayhost = a\nmax_use = 3\nrelayhost = b\n")
    postconf(cfdir, "-e", "relayhost=c")
    assert (cfdir / "main.cf").read_text() == "relayhost = c\nmax_use = 3\n"


def test_capital_x_removes_and_hash_comments_out(cfdir):
    postconf(cfdir, "-X", "relayhost")
    postconf(cfdir, "-#", "mydestination")
    assert (cfdir / "main.cf").read_text() == (
        "# sdmail main.cf for tests\n"
        "\n"
        "myhostname = mail.example.com\n"
        "#mydestination = $myhostname,\n"
        "#    localhost\n"
        "# keep this comment\n"
    )
    assert postconf(cfdir, "-n").stdout == "myhostname = mail.example.com\n"


def test_c_names_another_directory(tmp_path, cfdir):
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.cf").write_text("relayhost = [other.example]\n")
    assert postconf(cfdir, "-c", str(other), "relayhost").stdout == "relayhost = [other.example]\n"


def test_missing_main_cf_is_fatal_without_traceback(tmp_path):
    result = postconf(tmp_path / "nowhere", "relayhost")
    assert result.returncode == 1
    assert (
        result.stderr
        == f"postconf: fatal: open {tmp_path}/nowhere/main.cf: No such file or directory\n"
    )


def test_syntax_error_is_fatal_naming_file_and_line(cfdir):
    (cfdir / "main.cf").write_text("relayhost = x\nthis line is wrong\n")
    result = postconf(cfdir, "relayhost")
    assert result.returncode == 1
    assert "postconf: fatal:" in result.stderr and "main.cf, line 2: missing '='" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_value_is_shown_so_it_can_be_fixed(cfdir):
    postconf(cfdir, "-e", "message_size_limit=lots")
    assert postconf(cfdir, "message_size_limit").stdout == "message_size_limit = lots\n"
    postconf(cfdir, "-e", "message_size_limit=20000000")
    assert postconf(cfdir, "message_size_limit").stdout == "message_size_limit = 20000000\n"


def test_bad_option_is_a_usage_error(cfdir):
    result = postconf(cfdir, "-Q")
    assert result.returncode == 64
    assert "usage: postconf" in result.stderr


def host_specific_golden(name: str) -> str:
    """The golden output with this host's name and domain put in."""
    host = socket.gethostname().lower().rstrip(".")
    if "." not in host:
        host += ".localdomain"
    text = (DATA / name).read_text()
    text = text.replace("@MYHOSTNAME@", host).replace("@MYDOMAIN@", domain_of_hostname(host))
    origin = str(DEFAULT_MAILNAME_FILE) if DEFAULT_MAILNAME_FILE.is_file() else "$myhostname"
    return text.replace("@MYORIGIN@", origin)


def test_d_output_matches_golden_file(tmp_path):
    (tmp_path / "main.cf").write_text("")
    expected = host_specific_golden("defaults.golden").replace("@CONFIG_DIRECTORY@", str(tmp_path))
    assert postconf(tmp_path, "-d").stdout == expected


def test_n_output_matches_golden_file(tmp_path):
    (tmp_path / "main.cf").write_text((DATA / "debian-like.main.cf").read_text())
    assert postconf(tmp_path, "-n").stdout == (DATA / "debian-like.n.golden").read_text()


def test_m_lists_the_table_types(cfdir):
    types = postconf(cfdir, "-m").stdout.split()
    assert types == sorted(types)
    assert {"hash", "texthash", "inline", "static", "regexp", "pcre"} <= set(types)


def test_undefined_name_and_broken_expansion_are_warned_about(cfdir):
    (cfdir / "main.cf").write_text("smtpd_banner = $myhostname $nosuch\na = $b\nb = $a\n")
    result = postconf(cfdir, "smtpd_banner")
    assert result.returncode == 0
    assert result.stdout == "smtpd_banner = $myhostname $nosuch\n"
    assert f"postconf: warning: {cfdir}/main.cf: undefined parameter: $nosuch\n" in result.stderr
    assert "recursive parameter expansion" in result.stderr
