"""The fast-flush service's requests and answers, and the client side (Postfix's flush_clnt).

The flush service (sdmail/flush) keeps, per destination eligible under
`fast_flush_domains`, a log of the queue IDs of mail deferred for it, so that ETRN,
`postqueue -s` and `sendmail -qR` can make exactly that mail eligible for delivery.
Every request is one core/ipc frame on `$socket_directory/flush`:

    {"op": "add", "site": SITE, "queue_id": ID}   qmgr: ID was deferred for SITE
    {"op": "send_site", "site": SITE}             deliver the mail logged for SITE now
    {"op": "send_file", "queue_id": ID}           deliver the deferred message ID now
    {"op": "refresh"}                             send logs unread for long, purge old empty ones

and the answer (except to `add`, which qmgr sends without waiting, as a trigger) is
`{"status": S, "text": ...}` with S one of `FlushStatus` (Postfix's FLUSH_STAT_*, plus
`refused` for a caller authorized_flush_users keeps out and `notfound` for a queue ID
that is not a deferred message).

`FlushDomains` answers whether a site is eligible, the same way on both sides: qmgr
asks it before it sends an `add`, so that mail for other destinations costs no
connection; the service asks again and is the authority.

Failure modes: no function here raises for a service that is down or answers
nonsense: `add` returns False, the others a `FlushReply` with status `fail`.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sdmail.core.address import AddressError, is_valid_hostname, parse_address_literal
from sdmail.core.ipc import ProtocolError, encode_frame, request
from sdmail.core.match_list import DomainList, TableOpener

SOCKET_NAME: Final = "flush"
OP_ADD: Final = "add"
OP_SEND_SITE: Final = "send_site"
OP_SEND_FILE: Final = "send_file"
OP_REFRESH: Final = "refresh"
ADD_TIMEOUT: Final = 2.0  # seconds an `add` may take to hand over; it never waits for work


class FlushStatus(enum.StrEnum):
    OK = "ok"
    BAD = "bad"  # a malformed request or parameter
    DENY = "deny"  # the site is not eligible (fast_flush_domains)
    FAIL = "fail"  # the service is down or failed
    REFUSED = "refused"  # authorized_flush_users refuses the caller
    NOT_FOUND = "notfound"  # send_file: no deferred message with that queue ID


@dataclass(frozen=True)
class FlushReply:
    status: FlushStatus
    text: str = ""

    def header(self) -> dict[str, Any]:
        return {"status": self.status.value, "text": self.text}

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> FlushReply:
        try:
            status = FlushStatus(str(header.get("status")))
        except ValueError:
            return cls(FlushStatus.FAIL, f"unknown status {header.get('status')!r}")
        text = header.get("text", "")
        return cls(status, text if isinstance(text, str) else "")


def etrn_site(argument: str) -> str:
    """The site an ETRN argument names: RFC 1985's `@domain` and `#queue` lose their mark,
    as Postfix drops any non-alphanumeric first character."""
    if argument and not argument[0].isalnum():
        return argument[1:]
    return argument


def valid_site(site: str) -> bool:
    """A destination the flush service takes, as Postfix checks `postqueue -s` and ETRN:
    a host name, or an address literal (`[192.0.2.1]`, Postfix's extension of RFC 1985)."""
    if site.startswith("["):
        try:
            parse_address_literal(site)
        except AddressError:
            return False
        return True
    return site.isascii() and is_valid_hostname(site)


class FlushDomains:
    """`fast_flush_domains`: which sites get a fast-flush log."""

    def __init__(
        self,
        items: str | Iterable[str],
        parent_domain_matches_subdomains: Iterable[str] = (),
        table_opener: TableOpener | None = None,
    ) -> None:
        self._list = DomainList(
            items,
            "fast_flush_domains" in set(parent_domain_matches_subdomains),
            table_opener,
            name="fast_flush_domains",
        )

    def eligible(self, site: str) -> bool:
        """True when SITE matches; a table that fails counts as not eligible (logged by
        the caller from the raised error)."""
        return self._list.matches(site.lower())


# -- the client side --------------------------------------------------------------------------
def socket_path(socket_directory: str) -> str:
    return str(Path(socket_directory) / SOCKET_NAME)


def add(socket_directory: str, site: str, queue_id: str, *, timeout: float = ADD_TIMEOUT) -> bool:
    """Tell the service QUEUE_ID was deferred for SITE, without waiting for the work;
    False when the service cannot be reached."""
    frame = encode_frame({"op": OP_ADD, "site": site, "queue_id": queue_id})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path(socket_directory))
            sock.sendall(frame)
    except OSError:
        return False
    return True


def _ask(socket_directory: str, header: dict[str, Any], timeout: float) -> FlushReply:
    try:
        frame = request(socket_path(socket_directory), header, timeout=timeout, max_payload=0)
    except (OSError, ProtocolError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return FlushReply(FlushStatus.FAIL, why)
    return FlushReply.from_header(frame.header)


def send_site(socket_directory: str, site: str, *, timeout: float) -> FlushReply:
    """Ask for delivery of the mail deferred for SITE (ETRN, postqueue -s)."""
    return _ask(socket_directory, {"op": OP_SEND_SITE, "site": site}, timeout)


def send_file(socket_directory: str, queue_id: str, *, timeout: float) -> FlushReply:
    """Ask for delivery of the deferred message QUEUE_ID (postqueue -i)."""
    return _ask(socket_directory, {"op": OP_SEND_FILE, "queue_id": queue_id}, timeout)


def refresh(socket_directory: str, *, timeout: float) -> FlushReply:
    """Ask the service to send logs unread for fast_flush_refresh_time and to remove
    empty ones older than fast_flush_purge_time."""
    return _ask(socket_directory, {"op": OP_REFRESH}, timeout)
