"""smtpd's policy delegation: check_policy_service, Postfix's SMTPD_POLICY_README protocol.

A restriction `check_policy_service unix:/path` (a relative path is below queue_directory,
as `unix:private/policy` is in Postfix), `check_policy_service inet:host:port`, or the
Postfix 3.0 form with per-service settings, `check_policy_service { inet:host:port,
timeout=10s, default_action=DUNNO }` (names without the `smtpd_policy_service_` prefix:
timeout, max_idle, max_ttl, try_limit, retry_delay, request_limit, default_action,
policy_context; items separated by commas), asks a policy server what to do with the
command at hand. The request is `name=value` lines (request=smtpd_access_policy,
protocol_state, protocol_name, helo_name, queue_id, sender, recipient, recipient_count,
client_address, client_name, reverse_client_name, instance, sasl_*, size, encryption_*,
client_port, server_address, server_port, policy_context, mail_version, ...) ended by an
empty line; the answer is `action=...` (other attributes ignored) ended by an empty line.
checks.py reads the action as an access(5) table result.

Connections: each `PolicyClient` keeps idle connections to its server and reuses them for
the next request of any session (sessions run in worker threads, so one connection serves
one request at a time and a busy moment opens more). A connection is closed after
`max_idle` seconds unused, after `max_ttl` seconds of age, after `request_limit` requests
(0: no limit), and after any error. A request that fails (no connection, an error, no
complete answer within `timeout` seconds, an answer without `action=`, an answer too long)
is tried again on a new connection after `retry_delay` seconds, `try_limit` times in all;
then it is logged and `default_action` is the answer (Postfix's `451 4.3.5 Server
configuration problem`).

Failure modes: `parse_service` raises PolicyError for a malformed service or setting (the
caller makes it a ConfigError naming the parameter). `PolicyClient.ask` never raises: it
answers the server's action or the default action. It blocks its worker thread for at most
try_limit x (timeout + retry_delay) seconds.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sdmail.core.config import convert_int, convert_time

if TYPE_CHECKING:
    from sdmail.smtpd.checks import Facts

log = logging.getLogger("sdmail.smtpd")

_MAX_REPLY = 64 * 1024  # an answer is one short attribute: more is a server gone astray
_PREFIX = "smtpd_policy_service_"
_TIMES = ("timeout", "max_idle", "max_ttl", "retry_delay")
_NUMBERS = ("try_limit", "request_limit")


class PolicyError(Exception):
    """A policy service written in a way Postfix would not take."""


@dataclass(frozen=True)
class PolicySettings:
    """The smtpd_policy_service_* parameters; field names are parameter names."""

    smtpd_policy_service_timeout: int
    smtpd_policy_service_max_idle: int
    smtpd_policy_service_max_ttl: int
    smtpd_policy_service_try_limit: int
    smtpd_policy_service_retry_delay: int
    smtpd_policy_service_request_limit: int
    smtpd_policy_service_default_action: str
    smtpd_policy_service_policy_context: str
    queue_directory: str
    mail_version: str


@dataclass(frozen=True)
class Limits:
    """One service's settings (main.cf's, with the service's own overrides)."""

    timeout: float
    max_idle: float
    max_ttl: float
    try_limit: int
    retry_delay: float
    request_limit: int
    default_action: str
    policy_context: str

    @classmethod
    def of(cls, s: PolicySettings) -> Limits:
        return cls(
            timeout=s.smtpd_policy_service_timeout,
            max_idle=s.smtpd_policy_service_max_idle,
            max_ttl=s.smtpd_policy_service_max_ttl,
            try_limit=max(1, s.smtpd_policy_service_try_limit),
            retry_delay=s.smtpd_policy_service_retry_delay,
            request_limit=s.smtpd_policy_service_request_limit,
            default_action=s.smtpd_policy_service_default_action,
            policy_context=s.smtpd_policy_service_policy_context,
        )


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: a UNIX-domain path, or a host and port."""

    text: str
    path: str | None = None
    host: str = ""
    port: int = 0

    def connect(self, timeout: float) -> socket.socket:
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection((self.host, self.port), timeout=timeout)


def parse_service(text: str, settings: PolicySettings) -> tuple[Endpoint, Limits]:
    """`unix:PATH`, `inet:HOST:PORT` or `{ SERVICE, name=value, ... }`; PolicyError if bad."""
    limits = Limits.of(settings)
    name = text.strip()
    if name.startswith("{"):
        if not name.endswith("}"):
            raise PolicyError(f"missing '}}' in {text!r}")
        items = [item.strip() for item in name[1:-1].split(",") if item.strip()]
        if not items:
            raise PolicyError(f"no policy server in {text!r}")
        name = items[0]
        limits = _overridden(limits, items[1:], text)
    return _endpoint(name, settings.queue_directory), limits


def _overridden(limits: Limits, items: Sequence[str], text: str) -> Limits:
    changes: dict[str, object] = {}
    for item in items:
        key, equals, value = item.partition("=")
        key, value = key.strip().removeprefix(_PREFIX), value.strip()
        try:
            if not equals:
                raise ValueError(f"expected name=value, not {item!r}")
            if key in _TIMES:
                changes[key] = convert_time(value)
            elif key in _NUMBERS:
                changes[key] = convert_int(value)
            elif key in ("default_action", "policy_context"):
                changes[key] = value
            else:
                raise ValueError(f"unknown setting {key!r}")
        except ValueError as exc:
            raise PolicyError(f"{text!r}: {exc}") from None
    return replace(limits, **changes)  # type: ignore[arg-type]


def _endpoint(name: str, queue_directory: str) -> Endpoint:
    kind, colon, where = name.partition(":")
    if colon and kind == "unix" and where:
        return Endpoint(name, path=os.path.join(queue_directory, where))
    if colon and kind == "inet":
        host, colon, port = where.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if colon and host and port.isdigit() and 0 < int(port) < 65536:
            return Endpoint(name, host=host, port=int(port))
    raise PolicyError(f"bad policy server {name!r}: expected unix:PATH or inet:HOST:PORT")


# --------------------------------------------------------------------------------------
# The request
# --------------------------------------------------------------------------------------
def request_attributes(facts: Facts, limits: Limits, mail_version: str) -> list[tuple[str, str]]:
    """The attributes Postfix's smtpd sends, in its order, for FACTS."""
    tls = facts.tls
    return [
        ("request", "smtpd_access_policy"),
        ("protocol_state", facts.state),
        ("protocol_name", facts.protocol_name),
        ("helo_name", facts.helo or ""),
        ("queue_id", ""),  # sdmail's queue ID exists only once cleanup has the message
        ("sender", facts.sender or ""),
        ("recipient", facts.recipient or ""),
        ("recipient_count", str(facts.recipient_count)),
        ("client_address", facts.client_address),
        ("client_name", facts.client_name),
        ("reverse_client_name", facts.client_name),
        ("instance", facts.instance),
        ("sasl_method", facts.sasl_method or ""),
        ("sasl_username", facts.sasl_username or ""),
        ("sasl_sender", ""),
        ("size", str(facts.size)),
        ("ccert_subject", ""),
        ("ccert_issuer", ""),
        ("ccert_fingerprint", ""),
        ("ccert_pubkey_fingerprint", ""),
        ("encryption_protocol", tls.protocol if tls else ""),
        ("encryption_cipher", tls.cipher if tls else ""),
        ("encryption_keysize", str(tls.bits) if tls else "0"),
        ("etrn_domain", ""),
        ("stress", ""),
        ("client_port", "" if facts.client_port is None else str(facts.client_port)),
        ("policy_context", limits.policy_context),
        ("server_address", facts.server_address or ""),
        ("server_port", "" if facts.server_port is None else str(facts.server_port)),
        ("mail_version", mail_version),
    ]


def encode_request(attributes: Sequence[tuple[str, str]]) -> bytes:
    # A value never holds a line end (SMTP commands are lines); one would end the request.
    lines = [
        f"{name}={value.replace(chr(13), ' ').replace(chr(10), ' ')}\n"
        for name, value in attributes
    ]
    return ("".join(lines) + "\n").encode("utf-8", "surrogateescape")


def parse_reply(data: bytes) -> dict[str, str]:
    """The attributes of one answer (its lines up to the empty one)."""
    attributes: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            break
        name, equals, value = line.partition("=")
        if equals:
            attributes.setdefault(name.strip(), value.strip())
    return attributes


# --------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------
class _Failed(Exception):
    """One try did not give an answer; the text says why."""


@dataclass
class _Connection:
    sock: socket.socket
    opened: float
    used: float
    requests: int = 0
    buffer: bytearray = field(default_factory=bytearray)

    def close(self) -> None:
        self.sock.close()

    def reusable(self, limits: Limits, now: float) -> bool:
        if now - self.used >= limits.max_idle or now - self.opened >= limits.max_ttl:
            return False
        if limits.request_limit and self.requests >= limits.request_limit:
            return False
        # Anything readable now is an end of file or bytes nobody asked for: not reusable.
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable


class PolicyClient:
    """One policy server and its idle connections; see the module docstring."""

    def __init__(self, endpoint: Endpoint, limits: Limits, mail_version: str) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.mail_version = mail_version
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def ask(self, facts: Facts) -> str:
        """The server's action for FACTS, or the default action when it gave none."""
        request = encode_request(request_attributes(facts, self.limits, self.mail_version))
        limits = self.limits
        reason = ""
        for attempt in range(limits.try_limit):
            if attempt:
                time.sleep(limits.retry_delay)
            try:
                return self._exchange(request)
            except _Failed as exc:
                reason = str(exc)
        log.warning("problem talking to server %s: %s", self.endpoint.text, reason)
        return limits.default_action

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _exchange(self, request: bytes) -> str:
        connection = self._take()
        try:
            deadline = time.monotonic() + self.limits.timeout
            self._send(connection, request, deadline)
            reply = self._receive(connection, deadline)
        except BaseException:
            connection.close()
            raise
        connection.requests += 1
        connection.used = time.monotonic()
        self._give_back(connection)
        action = parse_reply(reply).get("action")
        if not action:
            raise _Failed(f"no action in the answer {_shown(reply)}")
        return action

    def _take(self) -> _Connection:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable(self.limits, now):
                    return connection
                connection.close()
        try:
            sock = self.endpoint.connect(self.limits.timeout)
        except OSError as exc:
            raise _Failed(_os_reason(exc)) from None
        return _Connection(sock, now, now)

    def _give_back(self, connection: _Connection) -> None:
        if self.limits.request_limit and connection.requests >= self.limits.request_limit:
            connection.close()
            return
        with self._lock:
            self._idle.append(connection)

    @staticmethod
    def _send(connection: _Connection, request: bytes, deadline: float) -> None:
        try:
            connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            connection.sock.sendall(request)
        except OSError as exc:
            raise _Failed(_os_reason(exc)) from None

    @staticmethod
    def _receive(connection: _Connection, deadline: float) -> bytes:
        """One answer: the bytes up to and with its empty line (the rest stays buffered)."""
        buffer = connection.buffer
        while True:
            end = _answer_end(buffer)
            if end is not None:
                answer = bytes(buffer[:end])
                del buffer[:end]
                return answer
            if len(buffer) > _MAX_REPLY:
                raise _Failed(f"an answer longer than {_MAX_REPLY} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Failed("timeout while reading the answer")
            try:
                connection.sock.settimeout(left)
                data = connection.sock.recv(4096)
            except TimeoutError:
                raise _Failed("timeout while reading the answer") from None
            except OSError as exc:
                raise _Failed(_os_reason(exc)) from None
            if not data:
                raise _Failed("the server closed the connection")
            buffer += data


def _answer_end(buffer: bytearray) -> int | None:
    """Where the first answer in BUFFER ends (after its empty line), None if not yet."""
    if buffer.startswith(b"\n"):
        return 1
    if buffer.startswith(b"\r\n"):
        return 2
    ends = [(found + len(end)) for end in (b"\n\n", b"\n\r\n") if (found := buffer.find(end)) >= 0]
    return min(ends) if ends else None


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return exc.strerror or str(exc)


def _shown(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return repr(text[:100])
