"""The virtual card's attestation PKI: its own root CA, the f9 intermediate, and leaves.

A real YubiKey ships with a key in slot f9 and an intermediate certificate (object
5FFF01) issued by Yubico's PIV root CA. The emulator plays both roles: every virtual card
gets its own root CA (kept in its state, never on the card) so tests can verify an
attestation chain end to end.

Attestation leaf format follows Yubico's (developers.yubico.com/PIV/Introduction/
PIV_attestation.html): subject ``CN=YubiKey PIV Attestation <slot>``, issuer and validity
copied from the f9 certificate, and the Yubico extensions

* 1.3.6.1.4.1.41482.3.3 firmware version, three raw bytes (major, minor, patch)
* 1.3.6.1.4.1.41482.3.7 serial number, DER INTEGER (firmware 5+)
* 1.3.6.1.4.1.41482.3.8 two raw bytes: PIN policy, touch policy
* 1.3.6.1.4.1.41482.3.9 one raw byte: form factor (firmware 5+)
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from .state import CardState

OID_FIRMWARE = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.3")
OID_SERIAL = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.7")
OID_POLICY = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.8")
OID_FORM_FACTOR = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.9")

# Validity of Yubico's f9 intermediates (2016-03-14 .. 2052-04-17); copied into leaves.
_NOT_BEFORE = datetime.datetime(2016, 3, 14, tzinfo=datetime.timezone.utc)
_NOT_AFTER = datetime.datetime(2052, 4, 17, tzinfo=datetime.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: PrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519/Ed448 signers take no separate hash; everything else signs with SHA-256,
    # as Yubico's attestation certificates do.
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _pem(key: PrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def make_attestation_pki(serial: int) -> tuple[str, bytes, str, bytes]:
    """New root CA and f9 intermediate for a card.

    Returns ``(root_key_pem, root_cert_der, f9_key_pem, f9_cert_der)``. EC P-256 keeps
    card creation fast (real cards use RSA 2048 or EC; clients accept both).
    """
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"pivtool sim PIV Root CA Serial {serial}")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(root_key, hashes.SHA256())
    )
    f9_key = ec.generate_private_key(ec.SECP256R1())
    f9 = (
        x509.CertificateBuilder()
        .subject_name(_name("pivtool sim PIV Attestation"))
        .issuer_name(root_name)
        .public_key(f9_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.UnrecognizedExtension(OID_SERIAL, _der_integer(serial)), False)
        .sign(root_key, hashes.SHA256())
    )
    return (
        _pem(root_key),
        root.public_bytes(serialization.Encoding.DER),
        _pem(f9_key),
        f9.public_bytes(serialization.Encoding.DER),
    )


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return bytes([0x02, len(body)]) + body


def attestation_root_ca(state: CardState) -> x509.Certificate:
    """The root CA certificate that issued this virtual card's f9 intermediate."""
    return x509.load_der_x509_certificate(state.attestation_root_cert)


def attest(
    *,
    slot: int,
    public_key: CertificatePublicKeyTypes,
    pin_policy: int,
    touch_policy: int,
    firmware: tuple[int, int, int],
    serial: int,
    form_factor: int,
    f9_key: PrivateKeyTypes,
    f9_cert_der: bytes | None,
) -> bytes:
    """DER attestation certificate for ``public_key`` in ``slot``, signed by the f9 key."""
    if f9_cert_der:
        try:
            f9_cert = x509.load_der_x509_certificate(f9_cert_der)
            issuer = f9_cert.subject
            not_before = f9_cert.not_valid_before_utc
            not_after = f9_cert.not_valid_after_utc
        except ValueError:
            issuer, not_before, not_after = _name("Yubico PIV Attestation"), _NOT_BEFORE, _NOT_AFTER
    else:
        issuer, not_before, not_after = _name("Yubico PIV Attestation"), _NOT_BEFORE, _NOT_AFTER
    if not isinstance(
        f9_key,
        (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey),
    ):
        raise ValueError("f9 key cannot sign")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"YubiKey PIV Attestation {slot:02x}"))
        .issuer_name(issuer)
        .public_key(public_key)
        # Yubico uses a random 16-byte serial; keep it positive and non-zero.
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1 | 1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.UnrecognizedExtension(OID_FIRMWARE, bytes(firmware)), False)
    )
    if firmware >= (5, 0, 0):
        builder = builder.add_extension(
            x509.UnrecognizedExtension(OID_SERIAL, _der_integer(serial)), False
        )
    builder = builder.add_extension(
        x509.UnrecognizedExtension(OID_POLICY, bytes([pin_policy, touch_policy])), False
    )
    if firmware >= (5, 0, 0):
        builder = builder.add_extension(
            x509.UnrecognizedExtension(OID_FORM_FACTOR, bytes([form_factor])), False
        )
    cert = builder.sign(f9_key, _hash_for(f9_key))
    return cert.public_bytes(serialization.Encoding.DER)
