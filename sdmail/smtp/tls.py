"""TLS in the smtp and lmtp clients: contexts per security level, and what a certificate must
match (Postfix's smtp_tls_security_level).

Levels: `none` (no STARTTLS), `may` (STARTTLS when offered, no certificate check; a failed
handshake leaves the connection unusable and the next server is tried), `encrypt`
(STARTTLS required, no certificate check), `verify` (required, the certificate chain is
checked against smtp_tls_CAfile/CApath or the system's authorities and a name in
smtp_tls_verify_cert_match must match: `hostname` is the MX host), `secure` (the same with
smtp_tls_secure_cert_match: `nexthop` is the destination domain, `dot-nexthop` any name
below it), `dane` (opportunistic DANE: with DNSSEC-validated TLSA records the certificate
must match one of them, with TLSA records none of which is usable TLS is still required
(encrypt), and without validated TLSA records it is `may`), `dane-only` (TLSA records
required). TLSA records are usable with selector 0 (the whole certificate) or 1 (its
public key) and matching type 0, 1 (SHA-256) or 2 (SHA-512), and usage DANE-EE (3) or
DANE-TA (2), as in Postfix, whose DANE is OpenSSL's (RFC 7672): the PKIX usages (0, 1)
are not for SMTP and count as unusable, as do all records when the TLSA RRset is not
DNSSEC-validated. DANE-EE: the server's certificate matches the record; no name, date or
chain check. DANE-TA: a certificate of the chain the server sent (not the server's own)
matches the record, the server certificate validates up to that trust anchor
(smtp/chain.py: OpenSSL's path validation, dates included), and it names the MX host
(the TLSA base domain) or the next-hop domain, Postfix's "hostname, nexthop". Python's
ssl module gives the server's chain through the SSLObject's `_sslobj.get_unverified_chain()`
(public only from Python 3.13); without it, or without a usable libcrypto, DANE-TA
records count as unusable.

Failure modes: `TlsContexts(settings)` raises ConfigError-free `ssl.SSLError`/`OSError`
when a certificate, key or CA file cannot be loaded (the service turns that into a
configuration error at start); `certificate_matches`, `dane_matches` and `dane_verified`
never raise.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable, Sequence
from typing import Final

from sdmail.core.dns import TlsaRecord
from sdmail.smtp import chain
from sdmail.smtp.settings import TlsSettings

REQUIRED_LEVELS: Final = frozenset({"encrypt", "dane", "dane-only", "verify", "secure"})
DANE_TA = 2
DANE_EE = 3


class TlsContexts:
    """One SSLContext that checks nothing (may, encrypt, dane) and one that checks the chain
    (verify, secure), made once per configuration: loading authorities is slow."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.opportunistic = self._context(verify=False)
        self._verifying: ssl.SSLContext | None = None

    def for_level(self, level: str) -> ssl.SSLContext:
        if level in ("verify", "secure"):
            if self._verifying is None:
                self._verifying = self._context(verify=True)
            return self._verifying
        return self.opportunistic

    def _context(self, *, verify: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # names are matched here, by the level's rules
        if verify:
            context.verify_mode = ssl.CERT_REQUIRED
            s = self.settings
            if s.ca_file or s.ca_path:
                context.load_verify_locations(cafile=s.ca_file or None, capath=s.ca_path or None)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.verify_mode = ssl.CERT_NONE
        if self.settings.cert_file:
            context.load_cert_chain(self.settings.cert_file, self.settings.key_file or None)
        return context


def match_names(level: str, settings: TlsSettings, host: str, nexthop: str) -> list[str]:
    """The names a certificate may carry at LEVEL (verify: the MX HOST by default; secure:
    NEXTHOP and, written `.NEXTHOP`, the names below it)."""
    rules = settings.verify_cert_match if level == "verify" else settings.secure_cert_match
    names = []
    for rule in rules:
        if rule == "hostname":
            names.append(host)
        elif rule == "nexthop":
            names.append(nexthop)
        elif rule == "dot-nexthop":
            names.append("." + nexthop)
        else:
            names.append(rule)
    return [n.lower().rstrip(".") for n in names if n]


def certificate_matches(fields: dict[str, object], wanted: Sequence[str]) -> bool:
    """Whether a verified certificate (ssl's getpeercert() dict) names one of WANTED; a
    wanted name `.example.org` matches any name below example.org."""
    presented = list(_dns_names(fields))
    for name in presented:
        for candidate in wanted:
            if _name_matches(name, candidate):
                return True
    return False


def _dns_names(fields: dict[str, object]) -> Iterable[str]:
    alt_names = fields.get("subjectAltName")
    dns_names = []
    if isinstance(alt_names, tuple):
        dns_names = [str(v) for k, v in alt_names if k == "DNS"]
    if dns_names:
        return [n.lower().rstrip(".") for n in dns_names]
    subject = fields.get("subject")
    common = []
    if isinstance(subject, tuple):
        for rdn in subject:
            for key, value in rdn:
                if key == "commonName":
                    common.append(str(value).lower().rstrip("."))
    return common


def _name_matches(presented: str, wanted: str) -> bool:
    if wanted.startswith("."):
        base = wanted[1:]
        if presented.startswith("*."):
            return presented[2:] == base or presented[2:].endswith(wanted)
        return presented.endswith(wanted)
    if presented.startswith("*."):
        _, dot, rest = wanted.partition(".")
        return bool(dot) and rest == presented[2:]
    return presented == wanted


def usable_tlsa(records: Iterable[TlsaRecord]) -> list[TlsaRecord]:
    """The TLSA records this client can check (see the module docstring)."""
    usages = (DANE_TA, DANE_EE) if chain.available() else (DANE_EE,)
    return [
        r
        for r in records
        if r.usage in usages and r.selector in (0, 1) and r.matching_type in (0, 1, 2)
    ]


def dane_matches(der: bytes, records: Iterable[TlsaRecord]) -> bool:
    """Whether the server certificate DER matches one of the DANE-EE RECORDS."""
    return any(r.usage == DANE_EE and _record_matches(der, r) for r in usable_tlsa(records))


def dane_verified(
    certificates: Sequence[bytes],
    leaf_fields: dict[str, object],
    records: Iterable[TlsaRecord],
    names: Sequence[str],
) -> bool:
    """Whether the chain the server sent (CERTIFICATES, DER, its own first; LEAF_FIELDS its
    certificate's fields as ssl decodes them) satisfies one of the usable RECORDS: DANE-EE
    by the server certificate alone, DANE-TA by a trust anchor in the chain, the server
    certificate validating up to it and naming one of NAMES."""
    if not certificates:
        return False
    usable = usable_tlsa(records)
    leaf, issuers = certificates[0], certificates[1:]
    if dane_matches(leaf, usable):
        return True
    anchors = [r for r in usable if r.usage == DANE_TA]
    for depth, candidate in enumerate(issuers):
        if not any(_record_matches(candidate, r) for r in anchors):
            continue
        if not certificate_matches(leaf_fields, names):
            return False  # the name does not depend on which anchor matched
        if chain.chains_to(leaf, issuers[:depth], candidate):
            return True
    return False


def _record_matches(der: bytes, record: TlsaRecord) -> bool:
    """Whether certificate DER (selector 0) or its public key (selector 1) is RECORD's."""
    if record.selector == 0:
        subject = der
    else:
        spki = subject_public_key_info(der)
        if spki is None:
            return False
        subject = spki
    if record.matching_type == 0:
        digest = subject
    elif record.matching_type == 1:
        digest = hashlib.sha256(subject).digest()
    else:
        digest = hashlib.sha512(subject).digest()
    return digest == record.data


def subject_public_key_info(der: bytes) -> bytes | None:
    """The DER SubjectPublicKeyInfo of certificate DER (RFC 5280 4.1), or None if malformed.

    Certificate ::= SEQUENCE { tbsCertificate, ... }; tbsCertificate ::= SEQUENCE {
    [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject,
    subjectPublicKeyInfo, ... }"""
    certificate = _tlv(der, 0)
    if certificate is None or certificate[0] != 0x30:
        return None
    tbs = _tlv(der, certificate[1])
    if tbs is None or tbs[0] != 0x30:
        return None
    position = tbs[1]
    first = _tlv(der, position)
    if first is None:
        return None
    if first[0] == 0xA0:  # explicit version
        position = first[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        element = _tlv(der, position)
        if element is None:
            return None
        position = element[2]
    spki = _tlv(der, position)
    if spki is None or spki[0] != 0x30:
        return None
    return der[position : spki[2]]


def _tlv(data: bytes, position: int) -> tuple[int, int, int] | None:
    """The DER element at POSITION: (tag, start of its value, end of the element)."""
    if position + 2 > len(data):
        return None
    tag, length = data[position], data[position + 1]
    start = position + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            return None
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        return None
    return tag, start, end
