"""main.cf syntax, $name expansion, conversions and errors (sdmail/core/config.py)."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.core.config import (
    ConfigError,
    bind,
    load_config,
    logical_lines,
    main_cf_digest,
    parse_main_cf,
    split_list,
)
from sdmail.core.params import PARAMS, Kind


def config_with(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()):
    (tmp_path / "main.cf").write_text(text)
    return load_config(tmp_path, overrides)


def test_defaults_give_a_local_only_system(tmp_path):
    cfg = config_with(tmp_path, "myhostname = mail.example.com\n")
    assert cfg.get("mydomain") == "example.com"
    assert cfg.get("mydestination") == "mail.example.com, localhost.example.com, localhost"
    assert cfg.get_list("mynetworks") == ["127.0.0.0/8", "[::1]/128"]
    assert cfg.get("relay_domains") == ""
    assert cfg.get("queue_directory") == "/var/spool/sdmail"
    assert cfg.get("alias_maps") == "hash:/etc/aliases"
    assert cfg.get_size("message_size_limit") == 10240000
    assert cfg.get("syslog_name") == "sdmail"
    assert cfg.get("smtpd_banner") == "mail.example.com ESMTP sdmail"


def test_mydomain_of_a_two_label_hostname_is_localdomain(tmp_path):
    assert config_with(tmp_path, "myhostname = example.com\n").get("mydomain") == "localdomain"


def test_myorigin_names_a_file_as_on_debian(tmp_path):
    mailname = tmp_path / "mailname"
    mailname.write_text("origin.example.net\n")
    cfg = config_with(tmp_path, f"myorigin = {mailname}\n")
    assert cfg.get("myorigin") == "origin.example.net"
    assert cfg.raw("myorigin") == str(mailname)


def test_myorigin_file_that_is_missing_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_with(tmp_path, "\nmyorigin = /nonexistent/mailname\n")
    assert "main.cf, line 2: myorigin: open /nonexistent/mailname" in str(error.value)


def test_comments_continuations_and_last_definition_wins(tmp_path):
    cfg = config_with(
        tmp_path,
        "# a comment\n"
        "mydestination = a.example,\n"
        "    b.example\n"
        "# a comment inside the continued value\n"
        "\tc.example\n"
        "\n"
        "relayhost = first\n"
        "relayhost = [second.example]:587\n",
    )
    assert cfg.get_list("mydestination") == ["a.example", "b.example", "c.example"]
    assert cfg.get("relayhost") == "[second.example]:587"
    assert cfg.explicit()["relayhost"].line == 8


def test_dollar_expansion_forms(tmp_path):
    cfg = config_with(
        tmp_path,
        "myhostname = mx.example.com\n"
        "a = $myhostname\n"
        "b = ${myhostname}/$(mail_name)\n"
        "c = ${myhostname?set}|${relayhost?set}\n"
        "d = ${relayhost:empty}|${myhostname:empty}\n"
        "e = ${relayhost?{x y}:{no, really}}\n"
        "f = $$literal\n"
        "g = ${{$mail_name} == {sdmail} ? {same} : {other}}\n"
        "h = ${{10} < {9} ? {less} : {more}}\n",
    )
    assert cfg.get("a") == "mx.example.com"
    assert cfg.get("b") == "mx.example.com/sdmail"
    assert cfg.get("c") == "set|"
    assert cfg.get("d") == "empty|"
    assert cfg.get("e") == "no, really"
    assert cfg.get("f") == "$literal"
    assert cfg.get("g") == "same"
    assert cfg.get("h") == "more"  # numeric comparison, not text


def test_undefined_name_expands_to_nothing_with_a_warning(tmp_path):
    cfg = config_with(tmp_path, "smtpd_banner = $myhostname $no_such_thing\n")
    assert cfg.get("smtpd_banner").endswith(" ")
    assert "undefined parameter: $no_such_thing" in cfg.warnings


def test_recursive_expansion_is_an_error_naming_file_line_and_parameter(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_with(tmp_path, "\nmyorigin = $mydomain\nmydomain = $myorigin\n")
    text = str(error.value)
    assert "main.cf, line" in text
    assert "recursive parameter expansion" in text


def test_overrides_win_over_main_cf(tmp_path):
    cfg = config_with(tmp_path, "max_idle = 10s\n", ("max_idle=20s", "smtpd_banner = hi"))
    assert cfg.get_time("max_idle") == 20
    assert cfg.get("smtpd_banner") == "hi"
    assert "max_idle" in cfg.explicit()  # explicit() is main.cf alone
    assert cfg.overrides()["max_idle"].value == "20s"


def test_the_digest_names_the_main_cf_text_the_config_was_read_from(tmp_path):
    cfg = config_with(tmp_path, "max_idle = 10s\n")
    assert len(cfg.digest) == 16 and cfg.digest == main_cf_digest(tmp_path)
    (tmp_path / "main.cf").write_text("max_idle = 20s\n")
    assert main_cf_digest(tmp_path) != cfg.digest  # the running config still names its text
    assert load_config(tmp_path).digest == main_cf_digest(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("message_size_limit = 10M\n", 'line 1: message_size_limit: bad numerical value: "10M"'),
        ("\n\nmax_idle = soon\n", 'line 3: max_idle: bad time value: "soon"'),
        ("soft_bounce = maybe\n", 'line 1: soft_bounce: bad boolean value: "maybe"'),
        ("hopcount_limit = 0\n", "line 1: hopcount_limit: value 0 is less than the minimum 1"),
        ("just a line\n", "line 1: missing '=' after parameter name"),
        ("  indented = x\n", "line 1: continuation line without a parameter"),
        ("bad-name = 1\n", 'line 1: bad parameter name: "bad-name"'),
        ("x = ${myhostname\n", "line 1: x: missing"),
    ],
)
def test_bad_main_cf_names_file_line_and_parameter(tmp_path, text, expected):
    with pytest.raises(ConfigError) as error:
        config_with(tmp_path, text)
    assert str(tmp_path / "main.cf") in str(error.value)
    assert expected in str(error.value)


def test_bad_override_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="bad override"):
        config_with(tmp_path, "", ("no_equals_sign",))
    with pytest.raises(ConfigError, match="max_use: bad numerical value"):
        config_with(tmp_path, "", ("max_use=lots",))


def test_missing_main_cf_is_an_error_unless_allowed(tmp_path):
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_config(tmp_path)
    assert load_config(tmp_path, missing_ok=True).get("max_use") == "100"


def test_config_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "main.cf").write_text("relayhost = [env.example]\n")
    monkeypatch.setenv("SDMAIL_CONFIG_DIR", str(tmp_path))
    cfg = load_config()
    assert cfg.get("relayhost") == "[env.example]"
    assert cfg.get("config_directory") == str(tmp_path)


def test_time_units(tmp_path):
    cfg = config_with(
        tmp_path,
        "max_idle = 2m\nqueue_run_delay = 1h\nmaximal_queue_lifetime = 2\ndelay_warning_time = 4\n",
    )
    assert cfg.get_time("max_idle") == 120
    assert cfg.get_time("queue_run_delay") == 3600
    assert cfg.get_time("maximal_queue_lifetime") == 2 * 86400  # default unit: days
    assert cfg.get_time("delay_warning_time") == 4 * 3600  # default unit: hours


def test_reload_keeps_the_old_config_when_the_new_one_is_broken(tmp_path):
    cfg = config_with(tmp_path, "max_use = 5\n", ("max_idle=7s",))
    (tmp_path / "main.cf").write_text("max_use = 6\n")
    fresh = cfg.reload()
    assert fresh.get_int("max_use") == 6
    assert fresh.get_time("max_idle") == 7
    (tmp_path / "main.cf").write_text("max_use = six\n")
    with pytest.raises(ConfigError):
        fresh.reload()
    assert fresh.get_int("max_use") == 6


def test_bind_fills_a_frozen_dataclass_by_parameter_kind(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Settings:
        max_idle: int
        soft_bounce: bool
        mydestination: tuple[str, ...]
        myhostname: str

    cfg = config_with(tmp_path, "myhostname = h.example\nsoft_bounce = yes\n")
    bound = bind(Settings, cfg)
    assert bound == Settings(
        100, True, ("h.example", "localhost.localdomain", "localhost"), "h.example"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        bound.max_idle = 1  # type: ignore[misc]


def test_list_splitting_keeps_braced_groups_whole():
    assert split_list("a, b  c,,d") == ["a", "b", "c", "d"]
    assert split_list("inline:{ a=b, c=d }, hash:/x") == ["inline:{ a=b, c=d }", "hash:/x"]


def test_every_registered_default_converts(tmp_path):
    cfg = config_with(tmp_path, "")
    for name, param in PARAMS.items():
        getter = {
            Kind.INT: cfg.get_int,
            Kind.SIZE: cfg.get_size,
            Kind.TIME: cfg.get_time,
            Kind.BOOL: cfg.get_bool,
            Kind.LIST: cfg.get_list,
            Kind.STR: cfg.get,
        }[param.kind]
        getter(name)
        assert param.doc.endswith("."), name


# --- property tests: the parser never fails with anything but ConfigError ---------------
names = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
values = st.text(alphabet=string.ascii_letters + string.digits + " ,.$@{}:?/", max_size=30)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_main_cf_text_gives_settings_or_config_error(text):
    try:
        parse_main_cf(text)
    except ConfigError as error:
        assert "line" in str(error)


@settings(max_examples=200)
@given(st.dictionaries(names, values.map(str.strip), max_size=8))
def test_written_settings_read_back(entries):
    text = "".join(f"{name} = {value}\n" for name, value in entries.items())
    parsed = parse_main_cf(text)
    assert {name: s.value for name, s in parsed.items()} == entries
    assert [entry.name for entry in logical_lines(text)] == list(entries)


@settings(max_examples=200)
@given(st.dictionaries(names, values.map(str.strip), max_size=6))
def test_expansion_of_arbitrary_values_never_crashes(tmp_path_factory, entries):
    directory = tmp_path_factory.mktemp("cf")
    text = "".join(f"x_{name} = {value}\n" for name, value in entries.items())
    (directory / "main.cf").write_text(text)
    try:
        cfg = load_config(directory)
    except ConfigError:
        return
    for name in entries:
        assert isinstance(cfg.get(f"x_{name}"), str)
