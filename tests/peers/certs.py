"""Certificates for TLS tests, made with the openssl command: a CA, and server certificates
signed by it or by themselves, with the names asked for."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str = "Test CA") -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return CertFiles(cert, key)


def make_intermediate(directory: Path, ca: CertFiles, name: str = "Test Intermediate") -> CertFiles:
    """A CA certificate NAME signed by CA (an intermediate authority)."""
    extensions = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
    return _signed(directory, "ca", name, ca, extensions)


def chain_file(path: Path, leaf: CertFiles, *issuers: CertFiles) -> CertFiles:
    """LEAF's certificate followed by ISSUERS' in one PEM file (what a server sends), with
    LEAF's key."""
    path.write_text("".join(c.cert.read_text() for c in (leaf, *issuers)))
    return CertFiles(path, leaf.key)


def make_server_cert(
    directory: Path, names: list[str], ca: CertFiles | None = None, stem: str = "server"
) -> CertFiles:
    """A certificate for NAMES (subjectAltName DNS), signed by CA or by itself."""
    san = ",".join(f"DNS:{n}" for n in names)
    if ca is not None:
        return _signed(directory, stem, names[0], ca, f"subjectAltName={san}\n")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={names[0]}", "-keyout", str(key), "-out", str(cert),
        "-addext", f"subjectAltName={san}",
        cwd=directory,
    )  # fmt: skip
    return CertFiles(cert, key)


def _signed(directory: Path, stem: str, name: str, ca: CertFiles, extensions: str) -> CertFiles:
    """A new key and a certificate for common name NAME with EXTENSIONS, signed by CA."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, csr, ext = (directory / f"{stem}.{x}" for x in ("pem", "key", "csr", "ext"))
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(csr),
        cwd=directory,
    )  # fmt: skip
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
        cwd=directory,
    )  # fmt: skip
    return CertFiles(cert, key)


def spki_der(cert: Path) -> bytes:
    """The certificate's SubjectPublicKeyInfo, DER, as openssl extracts it."""
    pem = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
        check=True,
        capture_output=True,
    ).stdout
    return subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem, check=True, capture_output=True
    ).stdout


def cert_der(cert: Path) -> bytes:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True
    ).stdout


def any_certificate_client() -> ssl.SSLContext:
    """A client context that takes any certificate, as opportunistic SMTP clients do."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
