"""Loaders (malformed input, wrong passwords) and certificate summaries."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from certs_helpers import build_cert
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import pkcs12

from pivtool.certs.errors import CertInputError
from pivtool.certs.inspect import (
    SUMMARY_SCHEMA,
    key_algorithm_name,
    load_certificate,
    load_certificates,
    load_pkcs12,
    load_private_key,
    public_key_matches,
    summarize,
)
from pivtool.certs.profile import upn_other_name

SECRET = "Sup3r-s3cret-pw!"


@pytest.fixture
def cert(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    san = x509.SubjectAlternativeName(
        [upn_other_name("alice@contoso.com"), x509.RFC822Name("a@contoso.com")]
    )
    cdp = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://pki.test/x.crl")], None, None, None
            )
        ]
    )
    policies = x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier("1.2.3.4"), None)]
    )
    eku = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
    ski = x509.SubjectKeyIdentifier(bytes(range(20)))
    return build_cert(
        issuer_key,
        p256.public_key(),
        serial=0x0ABC,
        extensions=[(san, False), (cdp, False), (policies, False), (eku, False), (ski, False)],
    )


def test_load_certificate_pem_and_der(cert: x509.Certificate) -> None:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert load_certificate(pem) == cert
    assert load_certificate(pem.decode()) == cert
    assert load_certificate(der) == cert
    assert load_certificates(pem + pem) == [cert, cert]
    assert load_certificates(der) == [cert]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        b"\x30\x82\x01\x00garbage",
        b"hello world",
    ],
)
def test_load_certificate_malformed(data: bytes) -> None:
    with pytest.raises(CertInputError) as info:
        load_certificate(data)
    assert "\n" not in str(info.value)
    with pytest.raises(CertInputError):
        load_certificates(data)


def test_load_private_key(p256: ec.EllipticCurvePrivateKey) -> None:
    plain = p256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = p256.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    encrypted = p256.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(SECRET.encode()),
    )
    for data, password in (
        (plain, None),
        (der, None),
        (encrypted, SECRET),
        (encrypted, SECRET.encode()),
    ):
        key = load_private_key(data, password)
        assert public_key_matches(key.public_key(), p256.public_key())  # type: ignore[arg-type]

    with pytest.raises(CertInputError) as info:
        load_private_key(encrypted, "wrong-" + SECRET)
    assert SECRET not in str(info.value) and "wrong password" in str(info.value)
    with pytest.raises(CertInputError, match="password is required"):
        load_private_key(encrypted)
    with pytest.raises(CertInputError, match="not encrypted") as info:
        load_private_key(plain, SECRET)
    assert SECRET not in str(info.value)
    for bad in (
        b"",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\x30\x03\x02\x01\x00",
    ):
        with pytest.raises(CertInputError):
            load_private_key(bad)


def test_load_pkcs12(
    p256: ec.EllipticCurvePrivateKey, cert: x509.Certificate, issuer_key: Any
) -> None:
    extra = build_cert(issuer_key, issuer_key.public_key())
    blob = pkcs12.serialize_key_and_certificates(
        b"alice", p256, cert, [extra], serialization.BestAvailableEncryption(SECRET.encode())
    )
    key, leaf, chain = load_pkcs12(blob, SECRET)
    assert key is not None and public_key_matches(cert, key.public_key())  # type: ignore[arg-type]
    assert leaf == cert and chain == [extra]

    with pytest.raises(CertInputError) as info:
        load_pkcs12(blob, "not-" + SECRET)
    assert SECRET not in str(info.value) and "wrong password" in str(info.value)
    with pytest.raises(CertInputError):
        load_pkcs12(blob, None)

    unencrypted = pkcs12.serialize_key_and_certificates(
        None, p256, cert, None, serialization.NoEncryption()
    )
    key, leaf, chain = load_pkcs12(unencrypted, None)
    assert key is not None and leaf == cert and chain == []

    for bad in (
        b"",
        b"PFX?",
        b"\x30\x03\x02\x01\x03",
        cert.public_bytes(serialization.Encoding.PEM),
    ):
        with pytest.raises(CertInputError) as info:
            load_pkcs12(bad, SECRET)
        assert SECRET not in str(info.value)


def test_summary(cert: x509.Certificate) -> None:
    summary = summarize(cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    data = summary.to_json()
    assert data == {
        "schema": SUMMARY_SCHEMA,
        "subject": "CN=Alice",
        "issuer": "CN=Contoso Issuing CA,O=Contoso,C=US",
        "upns": ["alice@contoso.com"],
        "emails": ["a@contoso.com"],
        "serial": "0abc",
        "not_before": "2026-01-14T12:00:00Z",
        "not_after": "2027-01-15T12:00:00Z",
        "sha256": hashlib.sha256(der).hexdigest(),
        "sha1": hashlib.sha1(der).hexdigest(),
        "key_algorithm": "eccp256",
        "ekus": ["1.3.6.1.5.5.7.3.2"],
        "crl_distribution_points": ["http://pki.test/x.crl"],
        "policies": ["1.2.3.4"],
        "is_ca": False,
        "self_issued": False,
        "subject_key_identifier": bytes(range(20)).hex(),
    }
    json.dumps(data)  # JSON-serialisable as is


def test_key_algorithm_names(rsa1024: Any, rsa2048: Any, p256: Any, p384: Any, ed_key: Any) -> None:
    assert key_algorithm_name(rsa1024.public_key()) == "rsa1024"
    assert key_algorithm_name(rsa2048.public_key()) == "rsa2048"
    assert key_algorithm_name(p256.public_key()) == "eccp256"
    assert key_algorithm_name(p384.public_key()) == "eccp384"
    assert key_algorithm_name(ed_key.public_key()) == "ed25519"
    assert key_algorithm_name(x25519.X25519PrivateKey.generate().public_key()) == "x25519"
    assert (
        key_algorithm_name(ec.generate_private_key(ec.SECP521R1()).public_key()) == "ec-secp521r1"
    )


def test_summary_of_x25519_certificate(issuer_key: Any) -> None:
    # PIV key-management slots can hold X25519 keys; their certificates are signed by a CA.
    cert = build_cert(issuer_key, x25519.X25519PrivateKey.generate().public_key())
    assert summarize(cert).key_algorithm == "x25519"


def test_public_key_matches(cert: x509.Certificate, p256: Any, p384: Any) -> None:
    assert public_key_matches(cert, p256.public_key())
    assert public_key_matches(p256.public_key(), cert)
    assert not public_key_matches(cert, p384.public_key())
