"""systemd as master: the sockets it passes in, and the state notifications it expects back.

systemd, not a master daemon, opens sdmail's listening sockets; it hands them to the
service as file descriptors 3, 4, ... and says so in LISTEN_FDS, LISTEN_PID and
LISTEN_FDNAMES (each socket unit's `FileDescriptorName=`). `listen_fds` reads them the
way sd_listen_fds(3) does and removes the variables, so that a program this process starts
does not take the sockets for its own. A service tells systemd how it is doing by datagrams
of `KEY=value` lines to $NOTIFY_SOCKET (sd_notify(3)): READY=1 when it serves, RELOADING=1
with MONOTONIC_USEC while it re-reads its configuration (systemd 253's Type=notify-reload;
systemd 252 ignores what it does not know), STOPPING=1, STATUS=..., WATCHDOG=1.

This module owns nothing else: it does not log, read main.cf or install signal handlers.

Failure modes:
- `listen_fds` raises SystemdError for malformed LISTEN_* variables (not numbers, a name
  count that does not match, a descriptor that is not open). Variables meant for another
  process (LISTEN_PID is not ours) or absent give an empty list.
- The notify functions return False when $NOTIFY_SOCKET is not set (not run by systemd, or
  a unit type that does not listen) and True when the datagram was sent. They raise
  SystemdError when $NOTIFY_SOCKET is malformed or the datagram cannot be sent, and
  ValueError for a field name that is not upper case or a value with a line break.
- `watchdog_interval` returns None when no watchdog is asked for (or it is meant for
  another process) and raises SystemdError for a malformed WATCHDOG_USEC.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from typing import Final, NamedTuple

LISTEN_FDS_START: Final = 3
_LISTEN_VARIABLES: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_UNNAMED: Final = "unknown"  # sd_listen_fds_with_names(3)'s name for an unnamed socket
_FIELD_NAME: Final = re.compile(r"[A-Z0-9_]+")


class SystemdError(Exception):
    """What systemd passed or where it listens is not usable; the text says which variable."""


class ListenFd(NamedTuple):
    """A socket systemd passed: its descriptor and its FileDescriptorName=."""

    fd: int
    name: str


def listen_fds(unset_environment: bool = True) -> list[ListenFd]:
    """The sockets systemd passed to this process, in order, from descriptor 3 on.

    Each descriptor is made close-on-exec. UNSET_ENVIRONMENT removes LISTEN_PID,
    LISTEN_FDS and LISTEN_FDNAMES afterwards, whatever they held.
    """
    try:
        return _read_listen_fds()
    finally:
        if unset_environment:
            for name in _LISTEN_VARIABLES:
                os.environ.pop(name, None)


def _read_listen_fds() -> list[ListenFd]:
    pid_text = os.environ.get("LISTEN_PID")
    count_text = os.environ.get("LISTEN_FDS")
    if pid_text is None or count_text is None:
        return []
    if _positive_int("LISTEN_PID", pid_text) != os.getpid():
        return []
    count = _positive_int("LISTEN_FDS", count_text, zero_ok=True)
    if count == 0:
        return []
    names_text = os.environ.get("LISTEN_FDNAMES")
    names = names_text.split(":") if names_text is not None else [_UNNAMED] * count
    if len(names) != count:
        raise SystemdError(
            f"LISTEN_FDNAMES names {len(names)} sockets but LISTEN_FDS passes {count}"
        )
    passed = []
    for fd, name in enumerate(names, start=LISTEN_FDS_START):
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError as exc:
            raise SystemdError(f"LISTEN_FDS: descriptor {fd} is not open: {exc.strerror}") from None
        passed.append(ListenFd(fd, name or _UNNAMED))
    return passed


def _positive_int(variable: str, text: str, *, zero_ok: bool = False) -> int:
    if not text.isascii() or not text.isdigit() or (int(text) == 0 and not zero_ok):
        raise SystemdError(f"{variable}={text!r} is not a {'' if zero_ok else 'positive '}number")
    return int(text)


# --------------------------------------------------------------------------------------
# sd_notify
# --------------------------------------------------------------------------------------
def notify(**fields: str | int) -> bool:
    """Send `KEY=value` lines to $NOTIFY_SOCKET; False when there is none to send to."""
    address = _notify_address()
    if address is None:
        return False
    message = "".join(f"{name}={_field_value(name, value)}\n" for name, value in fields.items())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:
        raise SystemdError(
            f"cannot notify systemd at NOTIFY_SOCKET={os.environ['NOTIFY_SOCKET']}: "
            f"{exc.strerror or exc}"
        ) from None
    return True


def _notify_address() -> str | bytes | None:
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return None
    if where.startswith("@"):
        return b"\0" + where[1:].encode("utf-8")
    if where.startswith("/"):
        return where
    raise SystemdError(
        f"NOTIFY_SOCKET={where!r} is neither an absolute path nor an abstract socket (@name)"
    )


def _field_value(name: str, value: str | int) -> str:
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"bad notification field name {name!r}: upper case, digits and _ only")
    text = str(value)
    if "\n" in text:
        raise ValueError(f"notification field {name} holds a line break")
    return text


def notify_ready(status: str | None = None) -> bool:
    """READY=1: startup (or a reload) is finished and the service serves."""
    return notify(READY=1) if status is None else notify(READY=1, STATUS=status)


def notify_status(text: str) -> bool:
    """STATUS=...: the one line `systemctl status` shows."""
    return notify(STATUS=text)


def notify_reloading(status: str | None = None) -> bool:
    """RELOADING=1 with the monotonic time, which systemd 253+ needs to match the READY=1
    that ends the reload; systemd 252 ignores the MONOTONIC_USEC it does not know."""
    fields: dict[str, str | int] = {
        "RELOADING": 1,
        "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
    }
    if status is not None:
        fields["STATUS"] = status
    return notify(**fields)


def notify_stopping(status: str | None = None) -> bool:
    """STOPPING=1: the service has begun to exit."""
    return notify(STOPPING=1) if status is None else notify(STOPPING=1, STATUS=status)


def watchdog_interval() -> float | None:
    """Seconds within which systemd wants WATCHDOG=1 (WatchdogSec=), or None."""
    usec_text = os.environ.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    pid_text = os.environ.get("WATCHDOG_PID")
    if pid_text and _positive_int("WATCHDOG_PID", pid_text) != os.getpid():
        return None
    return _positive_int("WATCHDOG_USEC", usec_text) / 1_000_000


def notify_watchdog() -> bool:
    """WATCHDOG=1: the service is alive. Send it at least every half watchdog_interval()."""
    return notify(WATCHDOG=1)
