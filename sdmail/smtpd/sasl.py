"""SMTP AUTH (RFC 4954) in smtpd: the PLAIN and LOGIN exchanges, and who checks a password.

A listener with `smtpd_sasl_auth_enable = yes` offers `AUTH PLAIN LOGIN`, over TLS only
when `smtpd_tls_auth_only = yes` or `smtpd_tls_security_level = encrypt` (Postfix's default
for smtpd_tls_auth_only is no; Debian's and Postfix's usual submission service sets it).
`smtpd_sasl_security_options` (and, over TLS, `smtpd_sasl_tls_security_options`) with
`noplaintext` offers neither: both mechanisms send the password itself. The exchange is done
here (`Exchange`); the password is then checked by one of two backends, chosen with
`smtpd_sasl_type`:

  dovecot   `smtpd_sasl_path` is Dovecot's auth socket (a relative path is taken below
            queue_directory, as Postfix's chrooted smtpd sees `private/auth`). Each check is
            one connection speaking Dovecot's auth protocol 1.x: VERSION and CPID, the
            server's MECH list up to DONE, then `AUTH 1 PLAIN service=smtp nologin lip= rip=
            [secured] resp=BASE64`, answered OK (with user=, the name Dovecot knows the user
            by), FAIL (reason=, temp) or, wrongly for PLAIN, CONT.
  table     `smtpd_sasl_path` is a lookup table (`texthash:/etc/sdmail/sasl_passwd`,
            `hash:...`) whose key is the login name and whose value is the password hash
            (passwords.py: `{SHA512-CRYPT}$6$...`, as doveadm pw, mkpasswd and openssl
            passwd make it). sdmail's own name: Postfix has no such backend.

PAM is not a backend: a process that is not root cannot check other users' passwords with it.

Failure modes: `build_sasl` raises ConfigError (naming the parameter) for an unknown
smtpd_sasl_type, an empty smtpd_sasl_path, an unknown security option. At run time nothing
raises: `Backend.check` returns a `Checked`; a backend that cannot be reached (no socket, a
table that does not open, a hash that cannot be read) gives a temporary failure whose
reason is logged as a warning. `Exchange.step` answers malformed client input with a
`Malformed` step.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sdmail.core.config import Config, ConfigError, bind
from sdmail.core.tables import open_table
from sdmail.core.tables.table import Table, TableError
from sdmail.smtpd.passwords import PasswordHashError, verify

log = logging.getLogger("sdmail.smtpd")

MECHANISMS = ("PLAIN", "LOGIN")
_SECURITY_OPTIONS = frozenset(
    {"noanonymous", "noplaintext", "nodictionary", "noactive", "mutual_auth", "forward_secrecy"}
)
_USERNAME_CHALLENGE = base64.b64encode(b"Username:").decode("ascii")
_PASSWORD_CHALLENGE = base64.b64encode(b"Password:").decode("ascii")
_DOVECOT_MAJOR = "1"
_DOVECOT_MINOR = "1"
_DOVECOT_LINE_LIMIT = 16384
_REQUEST_ID = "1"


@dataclass(frozen=True)
class SaslSettings:
    """The parameters of AUTH; field names are parameter names."""

    smtpd_sasl_auth_enable: bool
    smtpd_sasl_type: str
    smtpd_sasl_path: str
    smtpd_sasl_service: str
    smtpd_sasl_security_options: tuple[str, ...]
    smtpd_sasl_tls_security_options: tuple[str, ...]
    smtpd_tls_auth_only: bool
    smtpd_timeout: int
    queue_directory: str


# --------------------------------------------------------------------------------------
# The exchange with the client
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """What the client gave: the identity to act as (AUTHZID, often empty), login, password."""

    authzid: str
    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """Send `334 TEXT` (TEXT is base64) and wait for the client's next line."""

    text: str


@dataclass(frozen=True)
class Malformed:
    """The client's response cannot be decoded."""

    reason: str


Step = Credentials | Challenge | Malformed


class Exchange:
    """One AUTH exchange, PLAIN or LOGIN: feed it the client's responses until Credentials."""

    def __init__(self, mechanism: str) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"unsupported mechanism {mechanism}")
        self.mechanism = mechanism
        self._username: str | None = None
        self._started = False

    def step(self, response: str | None) -> Step:
        """The next step after RESPONSE (None: AUTH came without an initial response)."""
        first = not self._started
        self._started = True
        if response is None:
            if not first:
                return Malformed("Invalid base64 data in continued response")
            return Challenge("" if self.mechanism == "PLAIN" else _USERNAME_CHALLENGE)
        decoded = _decode(response)
        if decoded is None:
            which = "initial" if first else "continued"
            return Malformed(f"Invalid base64 data in {which} response")
        if self.mechanism == "PLAIN":
            return _plain(decoded)
        if self._username is None:
            self._username = decoded
            return Challenge(_PASSWORD_CHALLENGE)
        return Credentials("", self._username, decoded)


def _decode(response: str) -> str | None:
    if response == "=":
        return ""
    try:
        raw = base64.b64decode(response.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw.decode("utf-8", "surrogateescape")


def _plain(decoded: str) -> Step:
    parts = decoded.split("\0")
    if len(parts) != 3 or not parts[1]:
        return Malformed("Invalid PLAIN response")
    return Credentials(parts[0], parts[1], parts[2])


# --------------------------------------------------------------------------------------
# Who checks the password
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    """The connection as a backend sees it (Dovecot's lip/rip, its `secured` flag)."""

    client_address: str
    local_address: str | None = None
    secured: bool = False


@dataclass(frozen=True)
class Checked:
    """A backend's answer: OK with the USERNAME it knows the user by, or why not."""

    ok: bool
    username: str = ""
    reason: str = ""
    temporary: bool = False


class Backend(Protocol):
    """The door to a password database."""

    def check(self, credentials: Credentials, peer: Peer) -> Checked: ...


_GENERIC_FAILURE = "authentication failure"
_UNAVAILABLE = "the authentication server is not available"


class DovecotBackend:
    """Passwords checked by Dovecot's auth server over its UNIX socket."""

    def __init__(self, path: str, service: str, timeout: float) -> None:
        self.path = path
        self.service = service
        self.timeout = timeout

    def check(self, credentials: Credentials, peer: Peer) -> Checked:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                with sock.makefile("rwb") as stream:
                    return self._converse(stream, credentials, peer)
        except (OSError, _ProtocolError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("SASL: connect to %s failed: %s", self.path, reason)
            return Checked(False, reason=_UNAVAILABLE, temporary=True)

    def _converse(self, stream: io.BufferedIOBase, credentials: Credentials, peer: Peer) -> Checked:
        stream.write(f"VERSION\t{_DOVECOT_MAJOR}\t{_DOVECOT_MINOR}\nCPID\t{os.getpid()}\n".encode())
        stream.flush()
        mechanisms = set()
        while True:
            fields = _read_fields(stream)
            if fields[0] == "VERSION" and (len(fields) < 2 or fields[1] != _DOVECOT_MAJOR):
                raise _ProtocolError(f"unsupported auth protocol version {fields[1:2]}")
            if fields[0] == "MECH" and len(fields) > 1:
                mechanisms.add(fields[1].upper())
            if fields[0] == "DONE":
                break
        if "PLAIN" not in mechanisms:
            raise _ProtocolError("the auth server does not offer PLAIN")
        stream.write(self._request(credentials, peer).encode("utf-8", "surrogateescape"))
        stream.flush()
        return _answer(_read_fields(stream), credentials)

    def _request(self, credentials: Credentials, peer: Peer) -> str:
        response = "\0".join([credentials.authzid, credentials.username, credentials.password])
        encoded = base64.b64encode(response.encode("utf-8", "surrogateescape")).decode("ascii")
        fields = ["AUTH", _REQUEST_ID, "PLAIN", f"service={_escape(self.service)}", "nologin"]
        if peer.local_address:
            fields.append(f"lip={_escape(peer.local_address)}")
        fields.append(f"rip={_escape(peer.client_address)}")
        if peer.secured:
            fields.append("secured")
        fields.append(f"resp={encoded}")
        return "\t".join(fields) + "\n"


class _ProtocolError(Exception):
    """The auth server said something the protocol does not allow here."""


def _read_fields(stream: io.BufferedIOBase) -> list[str]:
    line = stream.readline(_DOVECOT_LINE_LIMIT + 1)
    if not line:
        raise _ProtocolError("the auth server closed the connection")
    if not line.endswith(b"\n"):
        raise _ProtocolError("line from the auth server too long or cut")
    return [_unescape(part) for part in line[:-1].decode("utf-8", "replace").split("\t")]


def _answer(fields: list[str], credentials: Credentials) -> Checked:
    command = fields[0]
    if len(fields) < 2 or fields[1] != _REQUEST_ID or command not in ("OK", "FAIL", "CONT"):
        raise _ProtocolError(f"unexpected answer {command!r} from the auth server")
    options = dict(part.partition("=")[::2] for part in fields[2:])
    if command == "OK":
        return Checked(True, username=options.get("user") or credentials.username)
    if command == "CONT":
        raise _ProtocolError("the auth server wants more than PLAIN gives")
    temporary = "temp" in options
    reason = options.get("reason") or _GENERIC_FAILURE
    return Checked(False, reason=reason, temporary=temporary)


def _escape(value: str) -> str:
    """Dovecot's tab-escaping: \\001 before 1, t, r, n, 0 for \\001, TAB, CR, LF, NUL."""
    table = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\0": "\x010"}
    return "".join(table.get(char, char) for char in value)


def _unescape(value: str) -> str:
    if "\x01" not in value:
        return value
    table = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n", "0": "\0"}
    out = []
    chars = iter(value)
    for char in chars:
        if char == "\x01":
            following = next(chars, "")
            out.append(table.get(following, following))
        else:
            out.append(char)
    return "".join(out)


class TableBackend:
    """Passwords checked against a lookup table of hashes (smtpd_sasl_type = table)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._table: Table | None = None
        self._open_error = ""
        try:
            self._table = open_table(spec)
        except TableError as exc:
            self._open_error = str(exc)
            log.warning("smtpd_sasl_path: %s is unavailable: %s", spec, exc)

    def check(self, credentials: Credentials, peer: Peer) -> Checked:
        if self._table is None:
            return Checked(False, reason=_UNAVAILABLE, temporary=True)
        try:
            value = self._table.lookup(credentials.username)
        except TableError as exc:
            log.warning("SASL: lookup of %s in %s failed: %s", credentials.username, self.spec, exc)
            return Checked(False, reason=_UNAVAILABLE, temporary=True)
        if value is None or not value.split():
            return Checked(False, reason=_GENERIC_FAILURE)
        try:
            matches = verify(credentials.password, value.split()[0])
        except PasswordHashError as exc:
            log.warning("SASL: %s: the password of %s: %s", self.spec, credentials.username, exc)
            return Checked(False, reason=_UNAVAILABLE, temporary=True)
        if not matches:
            return Checked(False, reason=_GENERIC_FAILURE)
        return Checked(True, username=credentials.username)


# --------------------------------------------------------------------------------------
# A listener's AUTH
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sasl:
    """A listener's AUTH: which mechanisms it offers when, and the backend that checks."""

    backend: Backend
    tls_only: bool
    plaintext: bool
    tls_plaintext: bool

    def mechanisms(self, tls_active: bool) -> tuple[str, ...]:
        """The mechanisms EHLO offers now (none: no AUTH line, AUTH is not enabled)."""
        if self.tls_only and not tls_active:
            return ()
        allowed = self.tls_plaintext if tls_active else self.plaintext
        return MECHANISMS if allowed else ()


def build_sasl(cfg: Config, tls_required: bool) -> Sasl | None:
    """The AUTH of a listener under CFG (None: not enabled); raises ConfigError."""
    s = bind(SaslSettings, cfg)
    if not s.smtpd_sasl_auth_enable:
        return None
    for name in ("smtpd_sasl_security_options", "smtpd_sasl_tls_security_options"):
        unknown = [o for o in cfg.get_list(name) if o.lower() not in _SECURITY_OPTIONS]
        if unknown:
            raise ConfigError(f"unknown SASL security option {unknown[0]!r}", name=name)
    path = s.smtpd_sasl_path.strip()
    if not path:
        raise ConfigError("empty: name the auth socket or table", name="smtpd_sasl_path")
    kind = s.smtpd_sasl_type.strip().lower()
    backend: Backend
    if kind == "dovecot":
        socket_path = Path(s.queue_directory) / path
        backend = DovecotBackend(str(socket_path), s.smtpd_sasl_service, float(s.smtpd_timeout))
    elif kind == "table":
        backend = TableBackend(path)
    else:
        raise ConfigError(
            f"unknown SASL type {kind!r} (expected dovecot or table)", name="smtpd_sasl_type"
        )
    return Sasl(
        backend,
        tls_only=s.smtpd_tls_auth_only or tls_required,
        plaintext=_allows_plaintext(s.smtpd_sasl_security_options),
        tls_plaintext=_allows_plaintext(s.smtpd_sasl_tls_security_options),
    )


def _allows_plaintext(options: tuple[str, ...]) -> bool:
    return "noplaintext" not in {option.lower() for option in options}
