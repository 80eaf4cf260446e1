"""The pipe service's own decisions: the per-transport time limit, and what the child
reports when it cannot even start the command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdmail.core.config import ConfigError, load_config
from sdmail.pipe.service import command_action, transport_time_limit


def config(tmp_path: Path, text: str):
    (tmp_path / "main.cf").write_text(text)
    return load_config(tmp_path)


def test_the_transport_time_limit_wins_over_command_time_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path, "maildrop_time_limit = 2m\n")
    assert transport_time_limit(cfg, "maildrop", 1000) == 120
    assert transport_time_limit(cfg, "uucp", 1000) == 1000


def test_a_transport_time_limit_that_is_no_time_names_file_line_and_parameter(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, "# x\nmaildrop_time_limit = soon\n")
    with pytest.raises(ConfigError, match=r"main\.cf, line 2: maildrop_time_limit: "):
        transport_time_limit(cfg, "maildrop", 1000)


def run(tmp_path: Path, argv: list[str], directory: str | None):
    here = os.getcwd()
    try:
        return command_action(
            argv,
            b"Subject: x\n\n",
            env={"PATH": "/usr/bin:/bin"},
            directory=directory,
            queue_directory=str(tmp_path / "no-queue-here"),
            time_limit=10,
            transport="maildrop",
        )()
    finally:
        os.chdir(here)  # the action changes directory, as it does in its child


def test_a_command_that_cannot_be_started_defers(tmp_path: Path) -> None:
    status = run(tmp_path, [str(tmp_path / "missing")], None)
    assert status.dsn == "4.3.0"
    assert status.text == f'cannot execute command "{tmp_path}/missing": No such file or directory'


def test_a_directory_that_cannot_be_entered_defers(tmp_path: Path) -> None:
    status = run(tmp_path, ["/bin/true"], str(tmp_path / "gone"))
    assert (status.dsn, status.text) == (
        "4.3.0",
        f"cannot change to directory {tmp_path}/gone: No such file or directory",
    )


def test_without_a_queue_directory_to_enter_the_command_runs_in_the_root(tmp_path: Path) -> None:
    status = run(tmp_path, ["/bin/sh", "-c", "pwd"], None)
    assert (status.dsn, status.text) == ("2.0.0", "delivered via maildrop service (/)")
