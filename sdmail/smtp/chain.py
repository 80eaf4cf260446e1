"""Whether a server certificate chains to a trust anchor: OpenSSL's own path validation
(X509_verify_cert) through ctypes, for DANE-TA (TLSA usage 2; smtp/tls.py).

Python's ssl module validates chains only during a handshake, against authorities loaded
before it; a DANE-TA trust anchor is known only after the handshake, when one certificate
of the server's chain matched a TLSA record. So this module asks the libcrypto that
Python's ssl module itself is linked with (found in /proc/self/maps, else by name) to
validate the chain with that one certificate as the only trust anchor and partial chains
allowed: signatures, validity dates, CA constraints and the SSL server purpose are checked
as in Postfix, whose DANE support is OpenSSL's. Names are not checked here.

Failure modes: `chains_to` never raises: False for a chain that does not validate, for
bytes that are not DER certificates, and when no libcrypto can be used (then DANE-TA
records are unusable; `available()` says which).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import ssl  # noqa: F401 (loads the libcrypto that /proc/self/maps then shows)
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

log = logging.getLogger("sdmail")

_X509_V_FLAG_PARTIAL_CHAIN = 0x80000  # x509_vfy.h: a non-self-signed trust anchor ends the path
_X509_PURPOSE_SSL_SERVER = 2
_MAPS = Path("/proc/self/maps")

_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "d2i_X509": (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long],
    ),
    "X509_free": (None, [ctypes.c_void_p]),
    "X509_STORE_new": (ctypes.c_void_p, []),
    "X509_STORE_free": (None, [ctypes.c_void_p]),
    "X509_STORE_add_cert": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
    "OPENSSL_sk_new_null": (ctypes.c_void_p, []),
    "OPENSSL_sk_push": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
    "OPENSSL_sk_free": (None, [ctypes.c_void_p]),
    "X509_STORE_CTX_new": (ctypes.c_void_p, []),
    "X509_STORE_CTX_free": (None, [ctypes.c_void_p]),
    "X509_STORE_CTX_init": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
    ),
    "X509_STORE_CTX_set_flags": (None, [ctypes.c_void_p, ctypes.c_ulong]),
    "X509_STORE_CTX_set_purpose": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "X509_verify_cert": (ctypes.c_int, [ctypes.c_void_p]),
}


@functools.cache
def _libcrypto() -> ctypes.CDLL | None:
    """The libcrypto Python's ssl module uses, with the prototypes declared; None: none."""
    path = _loaded_libcrypto() or ctypes.util.find_library("crypto")
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        for name, (restype, argtypes) in _PROTOTYPES.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
    except (OSError, AttributeError) as exc:
        log.warning("DANE-TA is unavailable: cannot use %s: %s", path, exc)
        return None
    return lib


def _loaded_libcrypto() -> str | None:
    try:
        with _MAPS.open() as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and "/libcrypto.so" in fields[-1]:
                    return fields[-1]
    except OSError:
        pass
    return None


def available() -> bool:
    """Whether chains can be validated here (a usable libcrypto was found)."""
    return _libcrypto() is not None


def chains_to(leaf: bytes, intermediates: Sequence[bytes], anchor: bytes) -> bool:
    """Whether the DER certificate LEAF validates, through any of INTERMEDIATES, up to the
    DER certificate ANCHOR taken as the one trusted authority."""
    lib = _libcrypto()
    if lib is None:
        return False
    with ExitStack() as cleanup:
        certificates = []
        for der in (leaf, anchor, *intermediates):
            pointer = _certificate(lib, der)
            if not pointer:
                return False
            cleanup.callback(lib.X509_free, pointer)
            certificates.append(pointer)
        leaf_x509, anchor_x509, *chain = certificates
        store = lib.X509_STORE_new()
        untrusted = lib.OPENSSL_sk_new_null()
        context = lib.X509_STORE_CTX_new()
        for pointer, free in (
            (store, lib.X509_STORE_free),
            (untrusted, lib.OPENSSL_sk_free),
            (context, lib.X509_STORE_CTX_free),
        ):
            if not pointer:
                return False
            cleanup.callback(free, pointer)
        if lib.X509_STORE_add_cert(store, anchor_x509) != 1:
            return False
        if any(lib.OPENSSL_sk_push(untrusted, pointer) <= 0 for pointer in chain):
            return False
        if lib.X509_STORE_CTX_init(context, store, leaf_x509, untrusted) != 1:
            return False
        lib.X509_STORE_CTX_set_flags(context, _X509_V_FLAG_PARTIAL_CHAIN)
        lib.X509_STORE_CTX_set_purpose(context, _X509_PURPOSE_SSL_SERVER)
        return bool(lib.X509_verify_cert(context) == 1)


def _certificate(lib: ctypes.CDLL, der: bytes) -> int | None:
    """A new X509 object decoded from all of DER (the caller frees it), or None."""
    buffer = ctypes.create_string_buffer(der, len(der))
    cursor = ctypes.c_void_p(ctypes.addressof(buffer))
    pointer = lib.d2i_X509(None, ctypes.byref(cursor), len(der))
    if pointer and cursor.value != ctypes.addressof(buffer) + len(der):
        lib.X509_free(pointer)  # trailing bytes: not one certificate
        return None
    return pointer or None
