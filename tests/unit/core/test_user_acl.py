"""authorized_*_users checks by uid (core/user_acl.py)."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from sdmail.core.match_list import MatchListError
from sdmail.core.user_acl import exempt_uids, login_name, refused_user

NOBODY = pwd.getpwnam("nobody").pw_uid


def unused_uid() -> int:
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def test_static_anyone_lets_every_user_in():
    assert refused_user("static:anyone", NOBODY, parameter="authorized_mailq_users") is None
    assert refused_user("static:anyone", unused_uid(), parameter="p") is None


def test_any_static_value_lets_every_user_in_as_in_postfix():
    # A static table answers every key: static:root does not mean "only root".
    assert refused_user("static:root", NOBODY, parameter="p") is None


def test_a_name_list_lets_in_only_the_names_on_it():
    assert refused_user("root, nobody", NOBODY, parameter="p") is None
    assert refused_user("root", NOBODY, parameter="p") == "nobody"


def test_the_empty_list_refuses_everyone_but_root():
    assert refused_user("", NOBODY, parameter="p") == "nobody"
    assert refused_user("", 0, parameter="p") is None


def test_the_mail_owner_is_exempt_when_it_exists():
    assert refused_user("", NOBODY, parameter="p", exempt=exempt_uids("nobody")) is None
    assert exempt_uids("no-such-user-here") == frozenset({0})


def test_a_uid_without_passwd_entry_is_matched_as_unknown():
    uid = unused_uid()
    assert login_name(uid) == "unknown"
    assert refused_user("unknown", uid, parameter="p") is None
    assert refused_user("!unknown, inline:{ x=y }", uid, parameter="p") == "unknown"


def test_negation_and_tables_follow_match_list_rules(tmp_path: Path):
    users = tmp_path / "users"
    users.write_text("# admins\nnobody\n")
    assert refused_user(f"{users}", NOBODY, parameter="p") is None
    assert refused_user(f"!nobody, {users}", NOBODY, parameter="p") == "nobody"
    assert refused_user("inline:{ nobody=yes }", NOBODY, parameter="p") is None


def test_a_list_naming_a_missing_file_is_an_error_naming_the_parameter(tmp_path: Path):
    with pytest.raises(MatchListError, match="authorized_flush_users"):
        refused_user(f"{tmp_path}/none", NOBODY, parameter="authorized_flush_users")
