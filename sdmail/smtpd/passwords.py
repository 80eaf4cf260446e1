"""Hashed passwords of the table AUTH backend: checking a password against its stored hash.

A stored hash is written as Dovecot writes it, `{SCHEME}hash`, or as crypt(3) writes it:

    {SHA512-CRYPT}$6$salt$hash     {SHA256-CRYPT}$5$salt$hash     {CRYPT}$6$...
    $6$salt$hash                   $6$rounds=50000$salt$hash      (and $5$ alike)

which is what `doveadm pw -s SHA512-CRYPT`, `mkpasswd -m sha-512` (package whois) and
`openssl passwd -6` print, and what /etc/shadow holds: an administrator moves users from
Dovecot's passwd-file or from shadow without re-hashing anything. Why SHA-crypt and not
Python's `crypt` module or a new `{PBKDF2}`-style format: `crypt` is deprecated and is gone
from Python 3.13 (Debian 13's), and a format of sdmail's own would need a tool of its own to
make hashes that no admin has; SHA-crypt (Ulrich Drepper's published algorithm, done here
with hashlib) is salted, has a work factor (rounds, default 5000), and every tool above makes
it. Plain-text passwords are not accepted.

Failure modes: `verify` returns False for a wrong password and raises `PasswordHashError`
(its text says what is wrong, never the hash) for a stored value it cannot read: an unknown
scheme, a malformed hash. The caller logs that as a configuration problem of the table.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MAX_SALT = 16
_DEFAULT_ROUNDS = 5000
_MIN_ROUNDS = 1000
_MAX_ROUNDS = 999_999_999
_ROUNDS_PREFIX = "rounds="

# The order in which crypt(3) emits the digest's bytes, three at a time (the spec's table).
_SHA512_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54),
    (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60),
    (40, 61, 19), (62, 20, 41),
)  # fmt: skip
_SHA256_ORDER = (
    (0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5), (6, 16, 26),
    (27, 7, 17), (18, 28, 8), (9, 19, 29),
)  # fmt: skip


class PasswordHashError(Exception):
    """A stored password hash that cannot be read."""


@dataclass(frozen=True)
class _Variant:
    ident: str
    digest: Callable[[bytes], hashlib._Hash]
    size: int
    order: tuple[tuple[int, int, int], ...]


_SHA512 = _Variant("6", hashlib.sha512, 64, _SHA512_ORDER)
_SHA256 = _Variant("5", hashlib.sha256, 32, _SHA256_ORDER)
_BY_IDENT = {"6": _SHA512, "5": _SHA256}
_SCHEMES = {"SHA512-CRYPT": ("6",), "SHA256-CRYPT": ("5",), "CRYPT": ("5", "6")}


def verify(password: str | bytes, stored: str) -> bool:
    """Whether PASSWORD matches STORED; PasswordHashError if STORED cannot be read."""
    encoded = password.encode("utf-8") if isinstance(password, str) else password
    text = stored.strip()
    allowed: tuple[str, ...] = tuple(_BY_IDENT)
    if text.startswith("{"):
        scheme, brace, text = text[1:].partition("}")
        if not brace or scheme.upper() not in _SCHEMES:
            raise PasswordHashError(f"unsupported password scheme {{{scheme[:20]}}}")
        allowed = _SCHEMES[scheme.upper()]
    variant, salt, rounds, rounds_given = _parse(text, allowed)
    expected = sha_crypt(encoded, salt, variant.ident, rounds if rounds_given else None)
    return hmac.compare_digest(expected.encode("ascii"), text.encode("ascii", "replace"))


def _parse(text: str, allowed: tuple[str, ...]) -> tuple[_Variant, str, int, bool]:
    parts = text.split("$")
    if len(parts) not in (4, 5) or parts[0] or parts[1] not in allowed:
        raise PasswordHashError("not a SHA-crypt hash ($5$ or $6$)")
    variant = _BY_IDENT[parts[1]]
    rounds, rounds_given = _DEFAULT_ROUNDS, False
    if len(parts) == 5:
        if not parts[2].startswith(_ROUNDS_PREFIX) or not parts[2][7:].isdigit():
            raise PasswordHashError("malformed rounds= in a SHA-crypt hash")
        rounds, rounds_given = int(parts[2][7:]), True
    salt = parts[-2]
    if not salt or len(salt) > _MAX_SALT or not parts[-1] or not salt.isascii():
        raise PasswordHashError("malformed salt or hash in a SHA-crypt hash")
    return variant, salt, rounds, rounds_given


def sha_crypt(password: bytes, salt: str, ident: str = "6", rounds: int | None = None) -> str:
    """crypt(3)'s SHA-crypt of PASSWORD: `$6$[rounds=N$]salt$hash` (IDENT 5: SHA-256).

    ROUNDS None is the default 5000, not written in the result; others are clamped to
    1000..999999999 as the spec says. A salt longer than 16 characters is cut."""
    variant = _BY_IDENT[ident]
    salt_bytes = salt.encode("ascii")[:_MAX_SALT]
    count = _DEFAULT_ROUNDS if rounds is None else min(max(rounds, _MIN_ROUNDS), _MAX_ROUNDS)
    final = _digest(variant, password, salt_bytes, count)
    prefix = f"${ident}$" if rounds is None else f"${ident}${_ROUNDS_PREFIX}{count}$"
    return f"{prefix}{salt_bytes.decode('ascii')}${_encode(variant, final)}"


def _digest(variant: _Variant, password: bytes, salt: bytes, rounds: int) -> bytes:
    size = variant.size
    alternate = variant.digest(password + salt + password).digest()
    first = variant.digest(password + salt)
    first.update(_repeat(alternate, len(password)))
    length = len(password)
    while length:
        first.update(alternate if length & 1 else password)
        length >>= 1
    result = first.digest()
    password_bytes = _repeat(variant.digest(password * len(password)).digest(), len(password))
    salt_bytes = _repeat(variant.digest(salt * (16 + result[0])).digest(), len(salt))
    for round_number in range(rounds):
        step = variant.digest(password_bytes if round_number & 1 else result)
        if round_number % 3:
            step.update(salt_bytes)
        if round_number % 7:
            step.update(password_bytes)
        step.update(result if round_number & 1 else password_bytes)
        result = step.digest()
    assert len(result) == size
    return result


def _repeat(block: bytes, length: int) -> bytes:
    """BLOCK repeated to LENGTH bytes (the spec's "sequence P" and "sequence S")."""
    return (block * (length // len(block) + 1))[:length]


def _encode(variant: _Variant, final: bytes) -> str:
    out = []
    for high, middle, low in variant.order:
        out.append(_b64_24bit(final[high], final[middle], final[low], 4))
    if variant is _SHA512:
        out.append(_b64_24bit(0, 0, final[63], 2))
    else:
        out.append(_b64_24bit(0, final[31], final[30], 3))
    return "".join(out)


def _b64_24bit(high: int, middle: int, low: int, count: int) -> str:
    word = (high << 16) | (middle << 8) | low
    chars = []
    for _ in range(count):
        chars.append(_B64[word & 0x3F])
        word >>= 6
    return "".join(chars)
