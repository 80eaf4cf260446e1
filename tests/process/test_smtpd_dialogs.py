"""Replay the SMTP transcripts of tests/dialogs/ against the real smtpd socket."""

from __future__ import annotations

import ast
import re
import socket
from pathlib import Path

import pytest

from tests.peers.interpreters import interpreters

INTERPRETERS = interpreters("aiosmtpd")

DIALOGS = Path(__file__).resolve().parents[1] / "dialogs"


class DialogError(Exception):
    """A malformed dialogue file; the text names file and line."""


def parse_dialog(path: Path) -> tuple[list[str], list[tuple[int, str, str]]]:
    """(main.cf lines, steps as (line number, kind, text))."""
    main_cf: list[str] = []
    steps: list[tuple[int, str, str]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        kind, _, text = raw.partition(" ")
        if kind == "%":
            main_cf.append(text)
        elif kind in ("->", "->$", "<-", "<~", "=="):
            steps.append((number, kind, text))
        else:
            raise DialogError(f"{path}, line {number}: unknown line kind {kind!r}")
    return main_cf, steps


def client_bytes(kind: str, text: str) -> bytes:
    if kind == "->":
        return text.encode("utf-8") + b"\r\n"
    return ast.literal_eval("b'" + text.replace("'", "\\'") + "'")


def replay(path: Path, port: int, incoming: Path) -> None:
    _, steps = parse_dialog(path)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as reader,
    ):
        for number, kind, text in steps:
            where = f"{path.name}, line {number}"
            if kind in ("->", "->$"):
                sock.sendall(client_bytes(kind, text))
            elif kind == "==":
                count, _, queue = text.partition(" ")
                assert queue == "incoming", where
                assert len(list(incoming.iterdir())) == int(count), where
            elif text == "(closed)":
                assert reader.readline() == b"", f"{where}: connection still open"
            else:
                line = reader.readline().decode("utf-8", "replace").rstrip("\r\n")
                if kind == "<-":
                    assert line == text, f"{where}: got {line!r}"
                else:
                    assert re.fullmatch(text, line), f"{where}: {line!r} !~ {text!r}"


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("path", sorted(DIALOGS.glob("*.dialog")), ids=lambda p: p.stem)
def test_dialog(mailsys, path: Path, interpreter: str) -> None:
    main_cf, _ = parse_dialog(path)
    mailsys.write_main_cf("".join(line + "\n" for line in main_cf))
    aliases = mailsys.config_dir / "aliases"
    aliases.write_text("postmaster: root\nalias-user: root\n")
    built = mailsys.run("postalias", str(aliases))
    assert built.returncode == 0, built.stderr
    mailsys.start("smtpd", tcp=("smtpd",), interpreter=interpreter)
    replay(path, mailsys.tcp_ports["smtpd"], mailsys.queue_dir / "incoming")


def test_dialog_files_parse() -> None:
    assert sorted(DIALOGS.glob("*.dialog")), "no dialogues"
    for path in DIALOGS.glob("*.dialog"):
        parse_dialog(path)
