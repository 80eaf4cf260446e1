"""Wake-up requests to a service's trigger socket (Postfix's mail_trigger).

A trigger is a few bytes written to a UNIX stream socket, each byte one request,
as Postfix's: to qmgr `W` (wake up: scan incoming), `I` (scan incoming), `D` (scan
deferred), `A` (ignore retry times on the next deferred scan), `F` (forget dead
destinations); to pickup `W`.  The sender connects, writes, and closes without
waiting for an answer: a trigger that cannot be delivered only delays mail,
because every service also rescans on a timer.

`trigger(path, requests)` returns False (and raises nothing) when the service is
not reachable.
"""

from __future__ import annotations

import socket

WAKEUP, SCAN_INCOMING, SCAN_DEFERRED, SCAN_ALL, FLUSH_DEAD = b"W", b"I", b"D", b"A", b"F"
FLUSH_QUEUE = FLUSH_DEAD + SCAN_ALL + SCAN_DEFERRED + SCAN_INCOMING  # postqueue -f


def trigger(path: str, requests: bytes, *, timeout: float = 5.0) -> bool:
    """Write REQUESTS to the trigger socket PATH; False if nobody listens there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(requests)
    except OSError:
        return False
    return True
