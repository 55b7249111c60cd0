"""The values PIV commands carry, checked, encoded and decoded without a card: PINs and PUKs
(padded to 8 bytes), management keys (length and the block cipher of the mutual
authentication), key types, private keys for IMPORT KEY, public keys from GENERATE and
GET METADATA, certificates the card returned.

cryptography is imported inside the functions: it costs start-up time for every command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import BadResponseError, UsageError
from ..core.tlv import TlvError, parse_dict, tlv
from .constants import PIN_MAX, PIN_MIN, KeyType, MgmtKeyType, PinPolicy, TouchPolicy

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )


def pin_bytes(pin: bytes | str, what: str = "PIN") -> bytes:
    """Validate a PIN/PUK (6–8 bytes, SP 800-73-4 Part 2 §2.4.3) and pad it with FF to 8.

    Raises :class:`UsageError` before the card is touched, so a wrong length never costs a
    retry. The message never contains the value."""
    raw = pin.encode("utf-8") if isinstance(pin, str) else bytes(pin)
    if not PIN_MIN <= len(raw) <= PIN_MAX:
        raise UsageError(f"{what} must be {PIN_MIN}-{PIN_MAX} bytes, got {len(raw)}")
    if b"\xff" in raw:
        raise UsageError(f"{what} must not contain byte FF (it is the padding)")
    return raw.ljust(PIN_MAX, b"\xff")


def check_mgmt_key(key_type: MgmtKeyType, key: bytes) -> None:
    """Raise :class:`UsageError` unless *key* has the length *key_type* needs."""
    if len(key) != key_type.key_len:
        raise UsageError(f"a {key_type.label} management key is {key_type.key_len} bytes, "
                         f"got {len(key)}")


def mgmt_key_ecb(key_type: MgmtKeyType, key: bytes, block: bytes, encrypt: bool) -> bytes:
    """One block of the management key cipher in ECB mode (what the card uses)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    alg = TripleDES(key) if key_type is MgmtKeyType.TDES else algorithms.AES(key)
    cipher = Cipher(alg, modes.ECB())
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(block) + ctx.finalize()


def key_type_of(key: PublicKeyTypes | PrivateKeyTypes) -> KeyType:
    """The PIV key type of a cryptography key; :class:`UsageError` when a card cannot hold
    it."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        name = f"RSA{key.key_size}"
        if name in KeyType.__members__:
            return KeyType[name]
        raise UsageError(f"RSA-{key.key_size} keys do not fit a PIV slot")
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        names = {"secp256r1": KeyType.ECCP256, "secp384r1": KeyType.ECCP384}
        if key.curve.name in names:
            return names[key.curve.name]
        raise UsageError(f"EC curve {key.curve.name} does not fit a PIV slot")
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return KeyType.ED25519
    if isinstance(key, (x25519.X25519PublicKey, x25519.X25519PrivateKey)):
        return KeyType.X25519
    raise UsageError(f"unsupported key type {type(key).__name__}")


def policy_tlvs(pin_policy: PinPolicy, touch_policy: TouchPolicy) -> bytes:
    """The PIN and touch policy TLVs (AA, AB) of GENERATE and IMPORT KEY; a default policy
    is left out, so the card applies its own."""
    data = b""
    if pin_policy != PinPolicy.DEFAULT:
        data += tlv(0xAA, bytes((pin_policy,)))
    if touch_policy != TouchPolicy.DEFAULT:
        data += tlv(0xAB, bytes((touch_policy,)))
    return data


def import_key_data(private_key: PrivateKeyTypes, key_type: KeyType) -> bytes:
    """The private key TLVs of IMPORT KEY (YubiKey FE): RSA as the CRT parts 01-05, each as
    long as half the modulus; EC as the private value 06; Ed25519 07 and X25519 08 raw."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

    if isinstance(private_key, rsa.RSAPrivateKey):
        nums = private_key.private_numbers()
        ln = key_type.bits // 16
        if nums.public_numbers.e != 65537:
            raise UsageError("a YubiKey only takes RSA keys with exponent 65537")
        return b"".join(tlv(t, v.to_bytes(ln, "big")) for t, v in (
            (0x01, nums.p), (0x02, nums.q), (0x03, nums.dmp1), (0x04, nums.dmq1),
            (0x05, nums.iqmp)))
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        ln = key_type.bits // 8
        return tlv(0x06, private_key.private_numbers().private_value.to_bytes(ln, "big"))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return tlv(0x07, private_key.private_bytes(serialization.Encoding.Raw,
                                                   serialization.PrivateFormat.Raw,
                                                   serialization.NoEncryption()))
    if isinstance(private_key, x25519.X25519PrivateKey):
        return tlv(0x08, private_key.private_bytes(serialization.Encoding.Raw,
                                                   serialization.PrivateFormat.Raw,
                                                   serialization.NoEncryption()))
    raise UsageError("unsupported private key")  # pragma: no cover - key_type_of refused it


def parse_public_key(key_type: KeyType, encoded: bytes) -> PublicKeyTypes:
    """Decode the public key TLVs of GENERATE/METADATA (81 modulus + 82 exponent, or 86
    point) — SP 800-73-4 Part 2 Table 7."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

    try:
        items = parse_dict(encoded)
        if key_type.is_rsa:
            n = int.from_bytes(items[0x81], "big")
            e = int.from_bytes(items[0x82], "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        point = items[0x86]
        if key_type is KeyType.ED25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(point)
        if key_type is KeyType.X25519:
            return x25519.X25519PublicKey.from_public_bytes(point)
        curve = ec.SECP256R1() if key_type is KeyType.ECCP256 else ec.SECP384R1()
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except (TlvError, KeyError, ValueError) as e:
        raise BadResponseError(f"card returned a malformed {key_type.label} public key") from e


def parse_certificate(der: bytes, message: str = "the card returned data that is not a "
                                                  "certificate") -> x509.Certificate:
    """A certificate the card returned, or :class:`BadResponseError` (*message*). Any parse
    failure counts: cryptography raises ``InvalidVersion`` besides ``ValueError``, and parses
    subject and issuer only when first used, so they are touched here."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        cert.subject  # noqa: B018 - evaluated for its parse errors
        cert.issuer  # noqa: B018
    except (ValueError, x509.InvalidVersion) as e:
        raise BadResponseError(message) from e
    return cert
