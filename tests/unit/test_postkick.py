"""postkick (sdmail/postkick.py): a request to a real listening trigger socket, and refusals."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from sdmail.postkick import main


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "main.cf").write_text(f"socket_directory = {tmp_path}/run\n")
    return tmp_path


def listen(path: Path) -> tuple[socket.socket, list[bytes], threading.Thread]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(10)
    received: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            data = b""
            while chunk := connection.recv(64):
                data += chunk
            received.append(data)

    thread = threading.Thread(target=serve)
    thread.start()
    return listener, received, thread


@pytest.mark.parametrize("service_class", ["public", "private"])
def test_the_request_reaches_the_service_socket_as_it_is(config_dir, capsys, service_class):
    listener, received, thread = listen(config_dir / "run" / "qmgr")
    with listener:
        assert main(["-c", str(config_dir), service_class, "qmgr", "IDFA"]) == 0
        thread.join(10)
    assert received == [b"IDFA"]
    assert capsys.readouterr().err == ""


def test_a_service_nobody_listens_on_is_a_warning_and_exit_1(config_dir, capsys):
    assert main(["-c", str(config_dir), "public", "qmgr", "W"]) == 1
    assert capsys.readouterr().err == (
        "postkick: warning: Cannot contact class public service qmgr"
        " - perhaps the mail system is down\n"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["outside", "qmgr", "W"], "bad class: outside"),
        (["public", "../qmgr", "W"], "bad service name: ../qmgr"),
        (["public", "..", "W"], "bad service name: .."),
        (["public", "a/b", "W"], "bad service name: a/b"),
        (["public", "", "W"], "bad service name: "),
    ],
)
def test_a_bad_class_or_service_name_is_fatal_and_sends_nothing(config_dir, capsys, args, error):
    assert main(["-c", str(config_dir), *args]) == 1
    assert capsys.readouterr().err == f"postkick: fatal: {error}\n"


def test_the_wrong_number_of_arguments_is_a_usage_error(config_dir, capsys):
    assert main(["-c", str(config_dir), "public", "qmgr"]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("postkick: fatal: the following arguments are required: request")
    assert "usage: postkick [-c config_dir] [-v] class service request" in err


def test_help_exits_0_with_the_usage_text(capsys):
    assert main(["--help"]) == 0
    assert "USAGE\n    postkick [-v] [-c DIR] class service request" in capsys.readouterr().out
