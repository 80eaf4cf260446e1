"""smtpd/passwords.py: SHA-crypt hashes as Dovecot, mkpasswd, openssl and shadow write them."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdmail.smtpd.passwords import PasswordHashError, sha_crypt, verify

# The published test vectors of the SHA-crypt specification.
VECTORS = [
    (
        "6",
        "saltstring",
        None,
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "6",
        "saltstringsaltstring",
        10000,
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    ("5", "saltstring", None, "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "5",
        "saltstringsaltstring",
        10000,
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
]


@pytest.mark.parametrize(("ident", "salt", "rounds", "expected"), VECTORS)
def test_the_specifications_vectors(ident, salt, rounds, expected):
    assert sha_crypt(b"Hello world!", salt, ident, rounds) == expected
    assert verify("Hello world!", expected)
    assert not verify("Hello world?", expected)


@pytest.mark.parametrize("scheme", ["{SHA512-CRYPT}", "{sha512-crypt}", "{CRYPT}", ""])
def test_dovecot_schemes_and_bare_crypt_strings(scheme):
    stored = scheme + VECTORS[0][3]
    assert verify("Hello world!", stored)
    assert verify(b"Hello world!", stored)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
@pytest.mark.parametrize("flag", ["-6", "-5"])
def test_hashes_made_by_openssl_passwd(flag):
    made = subprocess.run(
        ["openssl", "passwd", flag, "correct horse"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert verify("correct horse", made)
    assert not verify("correct horsE", made)


@pytest.mark.skipif(shutil.which("doveadm") is None, reason="Dovecot is not installed")
def test_hashes_made_by_doveadm_pw():
    made = subprocess.run(
        ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", "pässwörd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert made.startswith("{SHA512-CRYPT}$6$")
    assert verify("pässwörd", made)


@pytest.mark.parametrize(
    "stored",
    [
        "{PLAIN}secret",
        "{SSHA512}abc",
        "secret",
        "$1$salt$hash",
        "$6$$hash",
        "$6$rounds=x$salt$hash",
        "{SHA256-CRYPT}" + VECTORS[0][3],
        "$6$salt$",
    ],
)
def test_hashes_that_cannot_be_read_are_errors_not_mismatches(stored):
    with pytest.raises(PasswordHashError) as caught:
        verify("secret", stored)
    assert "secret" not in str(caught.value).replace("SHA", "")


def test_rounds_are_clamped_and_salts_cut_as_the_specification_says():
    assert sha_crypt(b"x", "abc", "6", 10).startswith("$6$rounds=1000$abc$")
    assert sha_crypt(b"x", "0123456789abcdefXYZ", "6").startswith("$6$0123456789abcdef$")


@settings(max_examples=25, deadline=None)
@given(password=st.binary(max_size=80), salt=st.text("abcXYZ019./", min_size=1, max_size=16))
def test_any_password_verifies_against_its_own_hash_only(password, salt):
    stored = sha_crypt(password, salt, "6", 1000)
    assert verify(password, stored)
    assert not verify(password + b"!", stored)
