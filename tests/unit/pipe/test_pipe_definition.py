"""pipe.d/NAME.conf: Postfix's master.cf pipe attributes, with file and line in every error."""

from __future__ import annotations

import grp
import pwd
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.pipe.definition import (
    PipeDefinitionError,
    command_identity,
    definition_path,
    parse_definition,
    read_definition,
)
from sdmail.pipe.macros import Literal, Macro

PATH = "/etc/sdmail/pipe.d/maildrop.conf"


def parse(text: str):
    return parse_definition(text, PATH)


def test_a_master_cf_entry_copied_as_it_is_reads_back() -> None:
    definition = parse(
        "# maildrop, as in Postfix's master.cf\n"
        "  flags=DRhu user=vmail:mail size=1000\n"
        "  argv=/usr/bin/maildrop -d ${recipient}\n"
    )
    assert (definition.flags, definition.user, definition.group) == ("DRhu", "vmail", "mail")
    assert definition.size_limit == 1000
    assert definition.command == "/usr/bin/maildrop"
    assert definition.argv == (
        (Literal("/usr/bin/maildrop"),),
        (Literal("-d"),),
        (Macro("recipient"),),
    )
    assert (definition.eol, definition.null_sender, definition.directory) == (
        b"\n",
        "MAILER-DAEMON",
        None,
    )


def test_braces_make_one_argument_and_words_after_argv_are_all_arguments() -> None:
    definition = parse("user=nobody argv=/bin/sh -c { exec cat > /tmp/x } user=notanattribute\n")
    assert [part[0].text for part in definition.argv if isinstance(part[0], Literal)] == [
        "/bin/sh",
        "-c",
        "exec cat > /tmp/x",
        "user=notanattribute",
    ]


def test_optional_attributes() -> None:
    definition = parse(
        "FLAGS=F user=nobody eol=\\r\\n null_sender= directory=/srv/spool argv=/bin/true\n"
    )
    assert (definition.flags, definition.eol, definition.null_sender, definition.directory) == (
        "F",
        b"\r\n",
        "",
        "/srv/spool",
    )


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("user=nobody\nflags=DZ argv=/bin/true\n", 2, "unknown flag 'Z'"),
        ("user=nobody\n\nowner=x argv=/bin/true\n", 3, "unknown attribute: 'owner=x'"),
        ("argv=/bin/true\n", None, "missing user= attribute"),
        ("user=nobody\n", None, "missing argv= attribute"),
        ("user=nobody size=10k argv=/bin/true\n", 1, "bad size= value: '10k'"),
        ("user=nobody eol=\\q argv=/bin/true\n", 1, "bad escape in eol= value"),
        ("user=nobody\nchroot=/x argv=/bin/true\n", 2, "chroot= is not supported"),
        ("user=nobody user=x argv=/bin/true\n", 1, "user= given twice"),
        ("user=nobody argv=\n", 1, "argv= names no command"),
        ("user=:mail argv=/bin/true\n", 1, "user= names no user"),
        ("user=nobody\nargv=/bin/cmd\n  ${recipent}\n", 3, 'unknown macro name: "recipent"'),
        ("user=nobody argv=/bin/sh -c { echo\n", 1, "missing '}'"),
    ],
)
def test_every_problem_names_file_line_and_reason(text: str, line: int | None, why: str) -> None:
    with pytest.raises(PipeDefinitionError) as caught:
        parse(text)
    where = PATH if line is None else f"{PATH}, line {line}"
    assert str(caught.value).startswith(f"{where}: ")
    assert why in caught.value.message


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = definition_path(tmp_path, "maildrop")
    assert path == tmp_path / "pipe.d" / "maildrop.conf"
    with pytest.raises(PipeDefinitionError, match=re.escape(f"{path}: cannot read")):
        read_definition(path)


def test_a_file_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_bytes(b"user=nobody argv=/bin/\xff\n")
    with pytest.raises(PipeDefinitionError, match="not UTF-8"):
        read_definition(path)


@given(st.text())
def test_any_text_is_a_definition_or_a_clear_error(text: str) -> None:
    try:
        parse(text)
    except PipeDefinitionError as exc:
        assert str(exc).startswith(PATH)


# -- user= ---------------------------------------------------------------------------------
def test_the_command_runs_as_the_named_user_with_its_own_or_the_named_group() -> None:
    nobody = pwd.getpwnam("nobody")
    identity = command_identity(parse("user=nobody argv=/bin/true"), "sdmail")
    assert (identity.uid, identity.gid) == (nobody.pw_uid, nobody.pw_gid)
    mail_gid = grp.getgrnam("mail").gr_gid
    assert command_identity(parse("user=nobody:mail argv=/bin/true"), "sdmail").gid == mail_gid


@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("root", "commands never run as root"),
        ("nobody:root", "privileged group id 0"),
        ("no-such-user-here", "unknown user: no-such-user-here"),
        ("nobody:no-such-group", "unknown group: no-such-group"),
    ],
)
def test_privileged_or_unknown_users_are_refused(user: str, why: str) -> None:
    definition = parse(f"flags=R\nuser={user} argv=/bin/true")
    with pytest.raises(PipeDefinitionError, match=re.escape(why)) as caught:
        command_identity(definition, "sdmail")
    assert caught.value.line == 2


def test_the_mail_system_owner_is_refused() -> None:
    with pytest.raises(PipeDefinitionError, match="mail system owner nobody"):
        command_identity(parse("user=nobody argv=/bin/true"), "nobody")
