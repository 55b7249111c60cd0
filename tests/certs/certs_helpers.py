"""Helpers shared by the pivtool.certs tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

NOW = dt.datetime(2026, 1, 15, 12, 0, 0, tzinfo=dt.timezone.utc)

# openssl is part of the test set-up (scripts/dev installs it): missing is a failure,
# never a skip.
requires_openssl = pytest.mark.usefixtures("openssl_cli")


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI; stdout and stderr captured as text."""
    return subprocess.run(
        ["openssl", *args],
        input=input.decode() if input else None,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def name(*rdns: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    """An x509.Name with RDNs in the given (encoded) order, one attribute each."""
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in rdns])


ISSUER = name(
    (NameOID.COUNTRY_NAME, "US"),
    (NameOID.ORGANIZATION_NAME, "Contoso"),
    (NameOID.COMMON_NAME, "Contoso Issuing CA"),
)


def build_cert(
    signer: CertificateIssuerPrivateKeyTypes,
    public_key: CertificatePublicKeyTypes,
    *,
    subject: x509.Name | None = None,
    issuer: x509.Name = ISSUER,
    serial: int = 0x1234,
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate with exactly the given extensions, signed by ``signer``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject if subject is not None else name((NameOID.COMMON_NAME, "Alice")))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


def pem(
    obj: x509.Certificate | x509.CertificateSigningRequest | x509.CertificateRevocationList,
) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
