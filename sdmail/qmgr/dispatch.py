"""Handing one delivery request to a delivery agent (Postfix's qmgr_deliver).

`deliver(socket_directory, request, timeout=...)` connects to the agent's socket,
`$socket_directory/<transport>`, sends the request as one core/deliver_request
frame and returns the agent's `DeliveryResult`.  One connection per request, as
the agents are socket-activated services that count their uses.

The two ways it fails are the two ways Postfix's qmgr tells apart: the agent
cannot be reached at all (no socket, refused, a transport name that cannot be a
socket's) is `TransportUnavailable` (4.3.0 mail transport unavailable); the
connection ends, times out or carries something that is not a result before the
agent answered is `TransportFailed` (4.3.0 unknown mail transport error).  Both
mean the recipients are deferred and the transport rests.

Failure modes: only those two exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from sdmail.core.deliver_request import DeliveryRequest, DeliveryResult
from sdmail.core.dsn import Status
from sdmail.core.ipc import MAX_HEADER, ProtocolError, read_frame, write_frame

TRANSPORT_UNAVAILABLE = Status("4.3.0", "mail transport unavailable")
TRANSPORT_ERROR = Status("4.3.0", "unknown mail transport error")
_TRANSPORT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class TransportUnavailable(Exception):
    """The agent's socket is missing or refuses connections."""


class TransportFailed(Exception):
    """The agent took the request but gave no valid answer."""


def socket_path(socket_directory: str | Path, transport: str) -> Path:
    """The agent socket of TRANSPORT; TransportUnavailable for a name no socket may have."""
    if not _TRANSPORT_NAME.fullmatch(transport):
        raise TransportUnavailable(f"transport name {transport!r} cannot name a socket")
    return Path(socket_directory) / transport


async def deliver(
    socket_directory: str | Path, request: DeliveryRequest, *, timeout: float
) -> DeliveryResult:
    """Ask the agent of REQUEST's transport to deliver it; see the module docstring."""
    path = socket_path(socket_directory, request.transport)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_HEADER + 1)
    except OSError as exc:
        raise TransportUnavailable(f"connect to transport {path}: {exc.strerror or exc}") from None
    try:
        await write_frame(writer, request.to_header())
        frame = await asyncio.wait_for(read_frame(reader), timeout)
        return DeliveryResult.from_header(frame.header)
    except TimeoutError:
        raise TransportFailed(f"{path}: no answer within {timeout:g} s") from None
    except ProtocolError as exc:
        raise TransportFailed(f"{path}: {exc}") from None
    except OSError as exc:
        raise TransportFailed(f"{path}: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
