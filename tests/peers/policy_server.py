"""A Postfix policy server for tests (SMTPD_POLICY_README's protocol), as a process of its own.

`PolicyServer(folder, answers)` runs this file with Python: it listens on `unix:PATH` or
`inet:127.0.0.1:PORT` (`where`), reads requests (name=value lines, an empty line), records
each as one JSON line in `folder/requests.jsonl` with the number of the connection it came
on, and answers `action=...` plus an empty line. ANSWERS maps a recipient (or the
protocol_state, when no recipient matches) to the action; anything else gets `DUNNO`.
`behaviour` makes it misbehave on demand: "garbage" answers lines without `action=`, "slow"
waits `delay` seconds before each answer, "close" hangs up instead of answering.
`requests()` gives the recorded requests (dicts with `_connection`).
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path


class PolicyServer:
    def __init__(
        self,
        folder: Path,
        answers: dict[str, str] | None = None,
        *,
        unix: Path | None = None,
        behaviour: str = "normal",
        delay: float = 0.0,
    ) -> None:
        self.folder = folder
        self.record = folder / "requests.jsonl"
        config = folder / "policy.json"
        if unix is not None:
            self.where = f"unix:{unix}"
            listen = str(unix)
        else:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            self.where = f"inet:127.0.0.1:{port}"
            listen = f"127.0.0.1:{port}"
        config.write_text(
            json.dumps(
                {
                    "listen": listen,
                    "record": str(self.record),
                    "answers": answers or {},
                    "behaviour": behaviour,
                    "delay": delay,
                }
            )
        )
        ready = folder / "policy.ready"
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(config), str(ready)], stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the policy server did not start")
            time.sleep(0.02)

    def requests(self) -> list[dict[str, str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


# --------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------
def _serve(config_path: str, ready: str) -> None:
    config = json.loads(Path(config_path).read_text())
    lock = threading.Lock()
    counter = iter(range(1, 1_000_000))

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            with lock:
                connection = next(counter)
            while True:
                request: dict[str, str | int] = {}
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    text = line.decode().rstrip("\n")
                    if not text:
                        break
                    name, _, value = text.partition("=")
                    request[name] = value
                request["_connection"] = connection
                with lock, open(config["record"], "a") as record:
                    record.write(json.dumps(request) + "\n")
                behaviour = config["behaviour"]
                if behaviour == "close":
                    return
                if behaviour == "slow":
                    time.sleep(config["delay"])
                if behaviour == "garbage":
                    self.wfile.write(b"hello there\nthis is no answer\n\n")
                    continue
                answers = config["answers"]
                action = answers.get(request.get("recipient"))
                action = action or answers.get(request.get("protocol_state"), "DUNNO")
                self.wfile.write(f"action={action}\n\n".encode())

    listen = config["listen"]
    server: socketserver.BaseServer
    if listen.startswith("/"):
        socketserver.ThreadingUnixStreamServer.daemon_threads = True
        server = socketserver.ThreadingUnixStreamServer(listen, Handler)
        os.chmod(listen, 0o666)
    else:
        host, _, port = listen.rpartition(":")
        socketserver.ThreadingTCPServer.daemon_threads = True
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer((host, int(port)), Handler)
    Path(ready).touch()
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
