#!/usr/bin/env python3
"""sdbox: a throwaway systemd container with the sdmail package installed in it.

The development and CI machines are containers whose PID 1 is not systemd, so
sdmail's units cannot run on them directly.  sdbox boots a real systemd (with
journald, socket, path and timer units) in a container made of an overlay of
this machine's own root — nothing on the host changes, nothing is downloaded
for the image — in a network namespace of its own (only loopback: the box's
port 25 is its own), installs the .deb with the dependencies it lacks
(downloaded on the host first: the box has no network), and lets tests and
people run commands inside.

    tools/sdbox.py up dist/sdmail_VERSION_all.deb   # boot, install, print how to reach it
    tools/sdbox.py run -- systemctl status sdmail   # a command inside the running box
    tools/sdbox.py down                             # power off and remove everything

`Box` is the same as a library for tests/system/.  Needs root, systemd-nspawn
(Debian's systemd-container, installed on demand) and overlayfs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATE = Path("/var/tmp/sdbox.json")
MASKED = ("postfix.service", "postfix@-.service", "exim4.service", "postgresql.service")
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BoxError(Exception):
    """The box could not be made, booted, or given the package."""


class Box:
    def __init__(self, root: Path, nspawn_pid: int, pid: int) -> None:
        self.dir = root
        self.nspawn_pid = nspawn_pid
        self.pid = pid
        self.process: subprocess.Popen[bytes] | None = None  # when this process booted it

    @property
    def root(self) -> Path:
        return self.dir / "root"

    # -- making one ---------------------------------------------------------------------
    @classmethod
    def boot(cls, name: str = "sdbox") -> Box:
        _need_tools()
        directory = Path(tempfile.mkdtemp(prefix="sdbox.", dir="/var/tmp"))
        for part in ("upper", "work", "root"):
            (directory / part).mkdir()
        _run(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir=/,upperdir={directory}/upper,workdir={directory}/work",
            str(directory / "root"),
        )
        root = directory / "root"
        for unit in MASKED:
            target = root / "etc/systemd/system" / unit
            target.unlink(missing_ok=True)
            target.symlink_to("/dev/null")
        (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
        with open(directory / "boot.log", "wb") as log:  # nspawn keeps its own copy
            nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "-D",
                    str(root),
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    "-M",
                    f"{name}{os.getpid()}",
                    "-b",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        box = cls(directory, nspawn.pid, 0)
        box.process = nspawn
        try:
            box.pid = _wait_for_init(nspawn.pid)
            box.run("systemctl", "is-system-running", "--wait", check=False, timeout=120)
        except BaseException:
            box.destroy()
            raise
        return box

    def install(self, deb: Path) -> None:
        """Install DEB and whatever it needs that the box lacks (fetched on the host)."""
        packages = self.root / "var/tmp/sdbox-pkgs"
        packages.mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, packages)
        # A fresh folder each time: what the host lacks now, nothing older from a cache.
        deps = self.dir / "debs"
        (deps / "partial").mkdir(parents=True, exist_ok=True)
        fetch = [
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--download-only",
            "-o",
            f"Dir::Cache::archives={deps}",
            str(deb.resolve()),
        ]
        if subprocess.run(fetch, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            result = subprocess.run(fetch, capture_output=True, text=True)
            if result.returncode != 0:
                raise BoxError(f"cannot download what {deb.name} needs: {result.stderr.strip()}")
        for extra in deps.glob("*.deb"):
            shutil.copy(extra, packages)
        result = self.run(
            "bash",
            "-c",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /var/tmp/sdbox-pkgs/*.deb",
            check=False,
            timeout=600,
        )
        if result.returncode != 0:
            raise BoxError(f"install failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")

    # -- using one ----------------------------------------------------------------------
    def run(
        self,
        *command: str,
        check: bool = True,
        timeout: float = 300,
        input: str | None = None,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        if user is not None:
            command = ("runuser", "-u", user, "--", *command)
        full = [
            "nsenter",
            "-t",
            str(self.pid),
            "-a",
            "env",
            "-i",
            f"PATH={INSIDE_PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            *command,
        ]
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise BoxError(
                f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
            )
        return result

    def wait_for(self, command: str, timeout: float = 30) -> bool:
        """Poll the shell COMMAND inside the box until it succeeds; False after TIMEOUT."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("bash", "-c", command, check=False).returncode == 0:
                return True
            time.sleep(0.5)
        return False

    # -- ending one ---------------------------------------------------------------------
    def destroy(self) -> None:
        if self.pid:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.run("systemctl", "poweroff", check=False, timeout=30)
        deadline = time.monotonic() + 30
        while _alive(self.nspawn_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(self.nspawn_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nspawn_pid, 9)
            time.sleep(1)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        subprocess.run(["umount", str(self.root)], capture_output=True)
        if os.path.ismount(self.root):
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def save(self) -> None:
        STATE.write_text(
            json.dumps({"dir": str(self.dir), "nspawn": self.nspawn_pid, "pid": self.pid})
        )

    @classmethod
    def load(cls) -> Box:
        try:
            state = json.loads(STATE.read_text())
        except (OSError, ValueError):
            raise BoxError("no box is up (tools/sdbox.py up DEB first)") from None
        return cls(Path(state["dir"]), state["nspawn"], state["pid"])


def _need_tools() -> None:
    if os.geteuid() != 0:
        raise BoxError("sdbox needs root")
    if shutil.which("systemd-nspawn") is None:
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "systemd-container"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BoxError(f"cannot install systemd-container: {result.stderr.strip()}")


def _wait_for_init(nspawn_pid: int, timeout: float = 60) -> int:
    """The PID of the box's systemd: the child of the systemd-nspawn process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children")
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        if not _alive(nspawn_pid):
            raise BoxError("systemd-nspawn exited before the box booted")
        time.sleep(0.2)
    raise BoxError("the box did not boot in time")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours is not alive either.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    return True


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BoxError(f"{' '.join(command)}: {result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdbox", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot a box and install the package")
    up.add_argument("deb", type=Path)
    run = sub.add_parser("run", help="run a command inside the box")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("down", help="power the box off and remove it")
    options = parser.parse_args(argv)
    try:
        if options.command == "up":
            if STATE.exists():
                raise BoxError("a box is already up (tools/sdbox.py down first)")
            box = Box.boot()
            box.save()
            box.install(options.deb)
            print(f"sdmail is up in a systemd container (its PID 1 is {box.pid} on this host).")
            print("Reach it with:")
            print(f"  nsenter -t {box.pid} -a bash          # a shell inside")
            print("  tools/sdbox.py run -- systemctl status sdmail")
            print("  tools/sdbox.py down                     # when done")
            return 0
        box = Box.load()
        if options.command == "run":
            command = [a for a in options.argv if a != "--"] or ["bash"]
            if command == ["bash"]:
                return subprocess.call(["nsenter", "-t", str(box.pid), "-a", "bash"])
            result = box.run(*command, check=False, timeout=3600)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.returncode
        box.destroy()
        STATE.unlink(missing_ok=True)
        return 0
    except BoxError as exc:
        print(f"sdbox: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
