"""postfix check: the configuration and queue check sdmail.service runs before start and reload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sdmail.core.spool import Spool


def postfix(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdmail.postfix", "-c", str(config_dir), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SDMAIL_CONFIG_DIR": "/nonexistent"},
        timeout=60,
    )


def configured(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/q\n{extra}")
    (tmp_path / "q").mkdir(exist_ok=True)
    with Spool(tmp_path / "q") as spool:
        spool.create_directories()
    return tmp_path


def test_check_passes_on_a_good_configuration_and_queue(tmp_path):
    result = postfix(configured(tmp_path), "check")
    assert (result.returncode, result.stderr) == (0, "")


def test_check_names_file_line_and_parameter_of_a_broken_main_cf(tmp_path):
    configured(tmp_path, "max_use = plenty\n")
    result = postfix(tmp_path, "check")
    assert result.returncode == 78
    assert result.stderr == (
        f'postfix: fatal: {tmp_path}/main.cf, line 2: max_use: bad numerical value: "plenty"\n'
    )


def test_check_reports_a_broken_queue(tmp_path):
    configured(tmp_path)
    (tmp_path / "q" / "deferred").rmdir()
    (tmp_path / "q" / "hold").chmod(0o755)
    result = postfix(tmp_path, "check")
    assert result.returncode == 1
    assert f"postfix: warning: {tmp_path}/q/deferred: No such file or directory" in result.stderr
    assert f"postfix: warning: {tmp_path}/q/hold: mode 0755, should be 0700" in result.stderr


def test_unknown_command_is_a_usage_error(tmp_path):
    result = postfix(configured(tmp_path), "explode")
    assert result.returncode == 64
    assert "unknown command" in result.stderr
