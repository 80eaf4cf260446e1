"""smtp/tls.py: certificate name matching and DANE-EE checks, on real certificates."""

from __future__ import annotations

import datetime
import hashlib
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.dns import TlsaRecord
from sdmail.smtp import chain
from sdmail.smtp.settings import TlsSettings
from sdmail.smtp.tls import (
    certificate_matches,
    dane_matches,
    dane_verified,
    match_names,
    subject_public_key_info,
    usable_tlsa,
)
from tests.peers.certs import cert_der, make_ca, make_intermediate, make_server_cert, spki_der


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


def test_dane_ta_and_dane_ee_records_are_usable_pkix_ones_are_not() -> None:
    # Postfix (RFC 7672 3.1.3): PKIX-TA (0) and PKIX-EE (1) are unusable for SMTP.
    records = [
        TlsaRecord(0, 0, 1, b"x"),
        TlsaRecord(2, 0, 1, b"x"),
        TlsaRecord(1, 1, 1, b"x"),
        TlsaRecord(3, 1, 1, b"x"),
    ]
    assert chain.available()
    assert usable_tlsa(records) == [TlsaRecord(2, 0, 1, b"x"), TlsaRecord(3, 1, 1, b"x")]
    assert usable_tlsa([TlsaRecord(3, 2, 1, b"x"), TlsaRecord(3, 1, 9, b"x")]) == []


# -- DANE-TA: a trust anchor in the server's chain -------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A root, an intermediate under it, a server certificate under the intermediate, and
    one under the root for another name; another root that signed nothing here."""
    d = tmp_path_factory.mktemp("dane-ta")
    root = make_ca(d / "root")
    intermediate = make_intermediate(d / "intermediate", root)
    leaf = make_server_cert(d / "leaf", ["mx.example.test"], intermediate)
    stranger = make_server_cert(d / "stranger", ["other.example.test"], root)
    other_root = make_ca(d / "other", "Other CA")
    return root, intermediate, leaf, stranger, other_root


def ta(files, *, selector: int = 0, matching: int = 1, usage: int = 2) -> TlsaRecord:
    data = cert_der(files.cert) if selector == 0 else spki_der(files.cert)
    digest = {0: data, 1: hashlib.sha256(data).digest(), 2: hashlib.sha512(data).digest()}
    return TlsaRecord(usage, selector, matching, digest[matching])


def presented(*files) -> tuple[list[bytes], dict]:
    """What a server sending FILES' certificates shows: the DER chain, its own fields."""
    return [cert_der(f.cert) for f in files], fields_of(files[0].cert)


def fields_of(cert) -> dict:
    return ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]


NAMES = ["mx.example.test", "example.test"]


@pytest.mark.parametrize("selector,matching", [(0, 0), (0, 1), (1, 1), (1, 2)])
def test_dane_ta_accepts_a_chain_up_to_the_anchor(pki, selector, matching) -> None:
    root, intermediate, leaf, _, _ = pki
    chain_der, fields = presented(leaf, intermediate, root)
    for anchor in (root, intermediate):
        record = ta(anchor, selector=selector, matching=matching)
        assert dane_verified(chain_der, fields, [record], NAMES)


def test_dane_ta_wants_the_mx_host_or_the_next_hop_domain(pki) -> None:
    root, intermediate, leaf, _, _ = pki
    chain_der, fields = presented(leaf, intermediate, root)
    assert dane_verified(chain_der, fields, [ta(root)], ["other.example.test", "mx.example.test"])
    assert not dane_verified(chain_der, fields, [ta(root)], ["mx2.example.test", "example.test"])


def test_dane_ta_refuses_another_host_certified_by_the_same_anchor(pki) -> None:
    # Without the name check any host the anchor certified could pose as the MX host.
    root, _, _, stranger, _ = pki
    chain_der, fields = presented(stranger, root)
    assert dane_verified(chain_der, fields, [ta(root)], ["other.example.test"])
    assert not dane_verified(chain_der, fields, [ta(root)], NAMES)


def test_dane_ta_refuses_an_anchor_that_did_not_issue_the_chain(pki) -> None:
    _, intermediate, leaf, _, other_root = pki
    # The server sends a certificate that matches the record but signed nothing of its.
    chain_der, fields = presented(leaf, intermediate, other_root)
    assert not dane_verified(chain_der, fields, [ta(other_root)], NAMES)


def test_dane_ta_refuses_a_chain_with_a_link_missing(pki) -> None:
    root, _, leaf, _, _ = pki
    chain_der, fields = presented(leaf, root)  # the intermediate was left out
    assert not dane_verified(chain_der, fields, [ta(root)], NAMES)


def test_dane_ta_never_takes_the_server_certificate_as_its_own_anchor(pki) -> None:
    _, intermediate, leaf, _, _ = pki
    chain_der, fields = presented(leaf, intermediate)
    assert not dane_verified(chain_der, fields, [ta(leaf)], NAMES)
    assert dane_verified(chain_der, fields, [ta(leaf, usage=3)], [])  # DANE-EE: no names


def test_pkix_ta_records_are_not_used_even_when_they_match(pki) -> None:
    root, intermediate, leaf, _, _ = pki
    chain_der, fields = presented(leaf, intermediate, root)
    assert not dane_verified(chain_der, fields, [ta(root, usage=0), ta(leaf, usage=1)], NAMES)


def test_dane_ta_refuses_an_expired_server_certificate(pki, tmp_path) -> None:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = pki[0]
    root_key = serialization.load_pem_private_key(root.key.read_bytes(), password=None)
    root_cert = x509.load_pem_x509_certificate(root.cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mx.example.test")]))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.example.test")]), False)
        .sign(root_key, hashes.SHA256())
    )
    path = tmp_path / "expired.pem"
    path.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    der = expired.public_bytes(serialization.Encoding.DER)
    assert not dane_verified([der, cert_der(root.cert)], fields_of(path), [ta(root)], NAMES)
    # The same certificate pinned by DANE-EE passes: no dates there (RFC 7672 3.1.1).
    pinned = TlsaRecord(3, 0, 1, hashlib.sha256(der).digest())
    assert dane_verified([der], fields_of(path), [pinned], [])


def test_chains_to_takes_no_garbage(pki) -> None:
    root = pki[0]
    assert not chain.chains_to(b"not a certificate", [], cert_der(root.cert))
    assert not chain.chains_to(cert_der(pki[2].cert) + b"\0", [], cert_der(root.cert))


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
