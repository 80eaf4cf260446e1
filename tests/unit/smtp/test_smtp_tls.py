"""smtp/tls.py: certificate name matching and DANE-EE checks, on real certificates."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.dns import TlsaRecord
from sdmail.smtp.settings import TlsSettings
from sdmail.smtp.tls import (
    certificate_matches,
    dane_matches,
    match_names,
    subject_public_key_info,
    usable_tlsa,
)
from tests.peers.certs import cert_der, make_server_cert, spki_der


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory):
    return make_server_cert(tmp_path_factory.mktemp("tls"), ["mx.example.test"])


def settings(**changes) -> TlsSettings:
    values = dict(
        level="verify",
        ca_file="",
        ca_path="",
        cert_file="",
        key_file="",
        loglevel=0,
        verify_cert_match=("hostname",),
        secure_cert_match=("nexthop", "dot-nexthop"),
        connection_reuse=False,
        handshake_timeout=300.0,
    )
    values.update(changes)
    return TlsSettings(**values)


def test_the_spki_extracted_is_the_one_openssl_extracts(server_cert) -> None:
    assert subject_public_key_info(cert_der(server_cert.cert)) == spki_der(server_cert.cert)


def test_dane_ee_records_match_by_spki_or_certificate(server_cert) -> None:
    der = cert_der(server_cert.cert)
    spki = spki_der(server_cert.cert)
    assert dane_matches(der, [TlsaRecord(3, 1, 1, hashlib.sha256(spki).digest())])
    assert dane_matches(der, [TlsaRecord(3, 0, 2, hashlib.sha512(der).digest())])
    assert dane_matches(der, [TlsaRecord(3, 0, 0, der)])
    assert not dane_matches(der, [TlsaRecord(3, 1, 1, b"\0" * 32)])


def test_only_dane_ee_records_are_usable() -> None:
    records = [TlsaRecord(2, 0, 1, b"x"), TlsaRecord(1, 1, 1, b"x"), TlsaRecord(3, 1, 1, b"x")]
    assert usable_tlsa(records) == [TlsaRecord(3, 1, 1, b"x")]
    assert usable_tlsa([TlsaRecord(3, 2, 1, b"x"), TlsaRecord(3, 1, 9, b"x")]) == []


def test_verify_matches_the_mx_hostname_and_secure_the_domain() -> None:
    tls = settings()
    assert match_names("verify", tls, "mx.example.test", "example.test") == ["mx.example.test"]
    assert match_names("secure", tls, "mx.example.test", "example.test") == [
        "example.test",
        ".example.test",
    ]


def peer(*names: str) -> dict[str, object]:
    return {"subjectAltName": tuple(("DNS", n) for n in names), "subject": ()}


def test_certificate_names_exact_wildcard_and_below_the_domain() -> None:
    assert certificate_matches(peer("mx.example.test"), ["mx.example.test"])
    assert certificate_matches(peer("*.example.test"), ["mx.example.test"])
    assert not certificate_matches(peer("*.example.test"), ["a.mx.example.test"])
    assert certificate_matches(peer("mx.example.test"), [".example.test"])
    assert not certificate_matches(peer("example.test.evil"), [".example.test"])
    assert not certificate_matches(peer("other.test"), ["mx.example.test"])


def test_the_common_name_counts_only_without_alt_names() -> None:
    fields = {"subject": ((("commonName", "mx.example.test"),),)}
    assert certificate_matches(fields, ["mx.example.test"])


@given(st.binary(max_size=400))
def test_any_bytes_give_an_spki_or_none(data: bytes) -> None:
    result = subject_public_key_info(data)
    assert result is None or result in data
