"""CSRs and self-signed certificates with software keys and a card-like key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from certs_helpers import openssl, pem, requires_openssl, write
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pivtool.certs.csr import build_csr, build_self_signed
from pivtool.certs.errors import CertInputError
from pivtool.certs.profile import CertRequest

POLICY = "1.3.6.1.4.1.99999.1.2"
KEYS = ["rsa2048", "p256", "p384", "ed_key"]
EXPECTED_HASH = {"rsa2048": "sha256", "p256": "sha256", "p384": "sha384", "ed_key": None}


def alice_request() -> CertRequest:
    return CertRequest.create(
        subject="CN=Alice Smith,OU=Users,O=Contoso,C=US",
        upns=["alice@contoso.com"],
        emails=["alice.smith@contoso.com"],
        policies=[POLICY],
    )


@pytest.fixture
def key(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("key", KEYS, indirect=True)
def test_build_csr(key: Any, request: pytest.FixtureRequest) -> None:
    key_name = request.node.callspec.params["key"]
    wanted = alice_request()
    csr = build_csr(key, wanted)
    assert csr.is_signature_valid
    assert csr.subject == wanted.subject
    hash_alg = csr.signature_hash_algorithm
    assert (hash_alg.name if hash_alg else None) == EXPECTED_HASH[key_name]

    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    (other,) = san.value.get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == "1.3.6.1.4.1.311.20.2.3"
    # DER UTF8String: tag 0x0C, length 17, "alice@contoso.com".
    assert other.value == b"\x0c\x11alice@contoso.com"
    assert san.value.get_values_for_type(x509.RFC822Name) == ["alice.smith@contoso.com"]

    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SMARTCARD_LOGON, ExtendedKeyUsageOID.CLIENT_AUTH]
    policies = csr.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [ObjectIdentifier(POLICY)]
    ku = csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert ku.value.key_encipherment == isinstance(key, rsa.RSAPrivateKey)


@requires_openssl
@pytest.mark.parametrize("key", ["rsa2048", "p256"], indirect=True)
def test_openssl_parses_and_verifies_csr(key: Any, tmp_path: Path) -> None:
    csr = build_csr(key, alice_request())
    result = openssl(
        "req", "-in", write(tmp_path / "req.pem", pem(csr)), "-noout", "-text", "-verify"
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "verify OK" in output
    # OpenSSL 3 names the UPN otherName "UPN"; older releases print the OID.
    assert "UPN::alice@contoso.com" in output or "1.3.6.1.4.1.311.20.2.3" in output
    assert "Microsoft Smartcard Login" in output or "1.3.6.1.4.1.311.20.2.2" in output
    assert "TLS Web Client Authentication" in output
    assert "email:alice.smith@contoso.com" in output
    assert POLICY in output


def test_hash_override_and_eddsa(p256: ec.EllipticCurvePrivateKey, ed_key: Any) -> None:
    csr = build_csr(p256, alice_request(), hashes.SHA384())
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha384"
    with pytest.raises(CertInputError, match="Ed25519"):
        build_csr(ed_key, alice_request(), hashes.SHA256())


@requires_openssl
def test_self_signed_is_not_a_ca(p256: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    cert = build_self_signed(p256, alice_request(), days=30)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    cert.verify_directly_issued_by(cert)
    result = openssl("x509", "-in", write(tmp_path / "c.pem", pem(cert)), "-noout", "-text")
    assert result.returncode == 0 and "CA:FALSE" in result.stdout
    with pytest.raises(CertInputError):
        build_self_signed(p256, alice_request(), days=0)


class CardLikeECKey(ec.EllipticCurvePrivateKey):
    """Stands in for a PIV-backed key: signs via a delegate, refuses to reveal itself."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner
        self.sign_calls = 0

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        self.sign_calls += 1
        assert not isinstance(signature_algorithm.algorithm, Prehashed)
        return self._inner.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise AssertionError("not used")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise AssertionError("the private key must never be read")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("the private key must never be serialised")

    def __copy__(self) -> CardLikeECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> CardLikeECKey:
        return self


class CardLikeRSAKey(rsa.RSAPrivateKey):
    """RSA variant of :class:`CardLikeECKey`."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self._inner = inner
        self.sign_calls = 0

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        self.sign_calls += 1
        return self._inner.sign(data, padding_, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._inner.public_key()

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def decrypt(self, ciphertext: bytes, padding_: padding.AsymmetricPadding) -> bytes:
        raise AssertionError("not used")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise AssertionError("the private key must never be read")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("the private key must never be serialised")

    def __copy__(self) -> CardLikeRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> CardLikeRSAKey:
        return self


def test_card_backed_keys_sign_through_their_sign_method(
    p256: ec.EllipticCurvePrivateKey, rsa2048: rsa.RSAPrivateKey
) -> None:
    for card_key in (CardLikeECKey(p256), CardLikeRSAKey(rsa2048)):
        csr = build_csr(card_key, alice_request())
        cert = build_self_signed(card_key, alice_request())
        assert card_key.sign_calls == 2
        assert csr.is_signature_valid
        cert.verify_directly_issued_by(cert)
        assert csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == card_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
