"""forward_path expansion, users' files read as their reader, and the targets they list."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.agent import Identity, run_as
from sdmail.core.dsn import TempFail
from sdmail.core.tables.aliases import AliasTarget, TargetKind
from sdmail.local.dotforward import (
    MAX_USER_FILE,
    expand_macros,
    parse_targets,
    parse_user_file,
    read_user_file,
)

VALUES = {"home": "/home/joe", "user": "joe", "extension": "", "recipient_delimiter": "+"}
FORWARD_PATH = "$home/.forward${recipient_delimiter}${extension}"


def test_forward_path_with_extension_names_the_extension_file() -> None:
    values = {**VALUES, "extension": "lists"}
    assert expand_macros(FORWARD_PATH, values, strict=True) == "/home/joe/.forward+lists"


def test_forward_path_without_extension_is_skipped() -> None:
    assert expand_macros(FORWARD_PATH, VALUES, strict=True) is None
    assert expand_macros("$home/.forward", VALUES, strict=True) == "/home/joe/.forward"


def test_conditional_forms_and_dollar() -> None:
    assert expand_macros("${extension?+$extension}x", VALUES, strict=True) == "x"
    assert expand_macros("${extension:none}", VALUES, strict=True) == "none"
    assert expand_macros("${user?{[$user]}}", VALUES, strict=True) == "[joe]"
    assert expand_macros("$(user)$$", VALUES, strict=True) == "joe$"


def test_lenient_expansion_leaves_unknown_names_empty() -> None:
    assert expand_macros("a${nosuch}b$", VALUES, strict=False) == "ab$"


@given(st.text(alphabet="${}():?abc_ ", max_size=40))
def test_expansion_of_any_text_never_raises(template: str) -> None:
    result = expand_macros(template, {"abc": "X", "a": ""}, strict=True)
    assert result is None or isinstance(result, str)


def test_targets_one_or_more_per_line_comments_skipped() -> None:
    targets, problems = parse_targets('# me\n\\joe, bob\n\n"|/usr/bin/vacation joe"\n/tmp/x\n')
    assert problems == []
    assert targets == [
        AliasTarget(TargetKind.ADDRESS, "\\joe"),
        AliasTarget(TargetKind.ADDRESS, "bob"),
        AliasTarget(TargetKind.COMMAND, "/usr/bin/vacation joe"),
        AliasTarget(TargetKind.FILE, "/tmp/x"),
    ]


def test_bad_line_is_reported_and_the_rest_kept() -> None:
    targets, problems = parse_targets('bob\n"unbalanced\ncarol\n')
    assert [t.text for t in targets] == ["bob", "carol"]
    assert len(problems) == 1 and problems[0].startswith("line 2: ")


@given(st.text(max_size=200))
def test_any_forward_text_gives_targets_or_problems(text: str) -> None:
    targets, problems = parse_targets(text)
    assert all(isinstance(t, AliasTarget) for t in targets)
    assert all(p.startswith("line ") for p in problems)


ME = Identity.from_passwd(pwd.getpwuid(os.getuid()))


def test_user_file_comes_back_with_owner_and_mode(tmp_path: Path) -> None:
    path = tmp_path / ".forward"
    path.write_text("bob\n")
    path.chmod(0o640)
    found = parse_user_file(run_as(ME, lambda: read_user_file(str(path))))
    assert found is not None
    assert (found.owner, stat.S_IMODE(found.mode), found.text) == (os.getuid(), 0o640, "bob\n")
    assert found.regular


def test_missing_user_file_is_nothing(tmp_path: Path) -> None:
    result = run_as(ME, lambda: read_user_file(str(tmp_path / "nope" / ".forward")))
    assert result.status.is_success and parse_user_file(result) is None


def test_fifo_is_reported_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    found = parse_user_file(run_as(ME, lambda: read_user_file(str(tmp_path / "fifo"))))
    assert found is not None and not found.regular and found.text == ""


def test_huge_user_file_is_a_temporary_failure(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * (MAX_USER_FILE + 1))
    with pytest.raises(TempFail, match="larger than"):
        read_user_file(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_file_the_reader_may_not_read_is_a_temporary_failure(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    result = run_as(Identity.named("nobody"), lambda: read_user_file(str(secret)))
    assert result.status.dsn == "4.3.0" and "Permission denied" in result.status.text
