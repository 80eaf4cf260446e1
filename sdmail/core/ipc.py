"""How sdmail's processes talk over UNIX sockets: framed, versioned records, and who is calling.

Every request and reply between sdmail's programs (sendmail -> postdrop, agents ->
cleanup, qmgr -> delivery agents, postqueue -> showq) is a FRAME: one line of
JSON (an object that carries `"v": PROTOCOL_VERSION` and, when bytes follow,
`"payload": N`), then exactly N bytes of payload (a message's content).  Data
crosses process boundaries, exceptions do not: a failure travels as a status in
the reply, never as a pickled object.

`peer_credentials(sock)` gives the (pid, uid, gid) the kernel reports for the
other end of a UNIX socket (SO_PEERCRED): services use it to learn who submits
mail and to refuse callers that are not sdmail.

Failure modes: `ProtocolError` for anything that is not a well-formed frame of a
known version (bad JSON, a header or payload over its limit, a connection that
ends inside a frame); `ConnectionClosed` (a ProtocolError) when the peer closes
before a frame starts.  OSError from the socket passes through.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import asyncio

PROTOCOL_VERSION: Final = 1
MAX_HEADER: Final = 1 << 20  # a frame's JSON line; recipients lists fit with room to spare


class ProtocolError(Exception):
    """A frame that cannot be read: not JSON, unknown version, too big, or cut short."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection before a frame began."""


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    payload: bytes = b""


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The process, user and group at the other end of the UNIX socket SOCK."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid, uid, gid)


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    fields = {"v": PROTOCOL_VERSION, **header}
    if payload:
        fields["payload"] = len(payload)
    line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return line.encode("utf-8", "surrogateescape") + b"\n" + payload


def parse_header(line: bytes, max_payload: int | None) -> tuple[dict[str, Any], int]:
    """The header of a frame and the length of its payload; ProtocolError when bad."""
    try:
        fields = json.loads(line.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed frame header: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("malformed frame header: not an object")
    version = fields.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version: {version!r}")
    length = fields.pop("payload", 0)
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ProtocolError(f"malformed payload length: {length!r}")
    if max_payload is not None and length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds the limit of {max_payload}")
    return fields, length


# -- blocking sockets -------------------------------------------------------------------------
def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    sock.sendall(encode_frame(header, payload))


def recv_frame(reader: Any, max_payload: int | None = None) -> Frame:
    """Read one frame from READER, a binary file from `sock.makefile("rb")`."""
    line = reader.readline(MAX_HEADER + 1)
    if not line:
        raise ConnectionClosed("connection closed")
    if len(line) > MAX_HEADER or not line.endswith(b"\n"):
        raise ProtocolError("frame header too long or cut short")
    fields, length = parse_header(line, max_payload)
    payload = reader.read(length) if length else b""
    if len(payload) != length:
        raise ProtocolError(f"payload cut short: {len(payload)} of {length} bytes")
    return Frame(fields, payload)


def request(
    path: str,
    header: dict[str, Any],
    payload: bytes = b"",
    *,
    timeout: float | None = None,
    max_payload: int | None = None,
) -> Frame:
    """Connect to the UNIX socket PATH, send one frame, and return the one-frame reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        send_frame(sock, header, payload)
        with sock.makefile("rb") as reader:
            return recv_frame(reader, max_payload)


# -- asyncio streams --------------------------------------------------------------------------
# asyncio is imported where it is used: sendmail, which only sends and receives on a
# blocking socket, would otherwise load it on every call (about a quarter of its start-up).
async def read_frame(reader: asyncio.StreamReader, max_payload: int | None = None) -> Frame:
    import asyncio  # noqa: PLC0415 (loaded already by whoever has a StreamReader)

    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionClosed("connection closed") from None
        raise ProtocolError("frame header cut short") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("frame header too long") from None
    fields, length = parse_header(line, max_payload)
    try:
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"payload cut short: {len(exc.partial)} of {length} bytes") from None
    return Frame(fields, payload)


async def write_frame(
    writer: asyncio.StreamWriter, header: dict[str, Any], payload: bytes = b""
) -> None:
    writer.write(encode_frame(header, payload))
    await writer.drain()
