"""Private-key operations of the virtual card, on ``cryptography`` key objects.

The card does what the chip does and no more: raw RSA (the host pads), ECDSA over a hash
the host supplies, Ed25519 over the message, ECDH / X25519 returning the shared secret.
"""

from __future__ import annotations

from typing import TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from .apdu import Sw, SwError
from .consts import KeyType
from .tlv import tlv

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | x25519.X25519PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | x25519.X25519PublicKey
)

RSA_EXPONENT = 65537


def generate(key_type: KeyType) -> PrivateKey:
    """A fresh key of ``key_type`` (RSA with e=65537, as a YubiKey generates)."""
    if key_type.is_rsa:
        return rsa.generate_private_key(RSA_EXPONENT, key_type.rsa_bits)
    if key_type is KeyType.ECCP256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.ECCP384:
        return ec.generate_private_key(ec.SECP384R1())
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return x25519.X25519PrivateKey.generate()


def to_pem(key: PrivateKey) -> str:
    """PKCS#8 PEM, unencrypted: the state file is the card's secure storage (mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def from_pem(pem: str) -> PrivateKey:
    """Load a key stored by :func:`to_pem`."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            x25519.X25519PrivateKey,
        ),
    ):
        raise ValueError("unsupported key type in state")
    return key


def key_type_of(key: PrivateKey) -> KeyType | None:
    """The PIV algorithm id of ``key``, or None if a PIV card cannot hold it."""
    if isinstance(key, rsa.RSAPrivateKey):
        return {
            1024: KeyType.RSA1024,
            2048: KeyType.RSA2048,
            3072: KeyType.RSA3072,
            4096: KeyType.RSA4096,
        }.get(key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": KeyType.ECCP256, "secp384r1": KeyType.ECCP384}.get(key.curve.name)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return KeyType.ED25519
    return KeyType.X25519


def public_key_tlvs(key: PrivateKey) -> bytes:
    """Public key as the card encodes it inside 7F49 and in GET METADATA tag 04.

    RSA: 81 modulus, 82 public exponent. EC: 86 uncompressed point (04 || X || Y).
    Ed25519 / X25519: 86 raw 32-byte public key.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.public_key().public_numbers()
        n = nums.n.to_bytes((key.key_size + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        return tlv(0x81, n) + tlv(0x82, e)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return tlv(0x86, point)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return tlv(0x86, raw)


def rsa_raw(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """Textbook RSA private operation (sign or decrypt; the host did the padding)."""
    size = (key.key_size + 7) // 8
    if len(data) != size:
        raise SwError(Sw.INCORRECT_DATA)
    priv = key.private_numbers()
    n = priv.public_numbers.n
    c = int.from_bytes(data, "big")
    if c >= n:
        raise SwError(Sw.INCORRECT_DATA)
    # CRT: four times faster than pow(c, d, n), which matters for RSA 4096 in tests.
    m1 = pow(c, priv.dmp1, priv.p)
    m2 = pow(c, priv.dmq1, priv.q)
    h = (priv.iqmp * (m1 - m2)) % priv.p
    return (m2 + h * priv.q).to_bytes(size, "big")


def ecdsa_sign(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """DER ECDSA signature over a host-supplied hash.

    The input is used as the integer e of ECDSA: shorter hashes are left-padded with
    zeros, longer ones truncated to the field size (the standard's leftmost-bits rule for
    these byte-aligned curves).
    """
    field_len = (key.curve.key_size + 7) // 8
    if not digest:
        raise SwError(Sw.INCORRECT_DATA)
    e = digest[:field_len].rjust(field_len, b"\x00")
    algo: hashes.HashAlgorithm = hashes.SHA256() if field_len == 32 else hashes.SHA384()
    return key.sign(e, ec.ECDSA(Prehashed(algo)))


def ecdh(key: ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey, peer: bytes) -> bytes:
    """Shared secret with the peer's public point (uncompressed EC point or raw X25519)."""
    try:
        if isinstance(key, x25519.X25519PrivateKey):
            if len(peer) != 32:
                raise SwError(Sw.INCORRECT_DATA)
            return key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        field_len = (key.curve.key_size + 7) // 8
        if len(peer) != 1 + 2 * field_len or peer[0] != 0x04:
            raise SwError(Sw.INCORRECT_DATA)
        pub = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, peer)
        return key.exchange(ec.ECDH(), pub)
    except ValueError:
        # Point not on the curve, low-order X25519 point, ...
        raise SwError(Sw.INCORRECT_DATA) from None


def import_key(key_type: KeyType, fields: dict[int, bytes]) -> PrivateKey:
    """Build a private key from IMPORT KEY (INS FE) tags.

    RSA: 01 p, 02 q, 03 dp, 04 dq, 05 qinv (e is always 65537). EC: 06 private scalar.
    Ed25519: 07 seed, X25519: 08 scalar.
    """
    try:
        if key_type.is_rsa:
            half = key_type.rsa_bits // 16
            parts = [fields[t] for t in (1, 2, 3, 4, 5)]
            if any(len(p) > half for p in parts):
                raise SwError(Sw.INCORRECT_DATA)
            p, q, dp, dq, qinv = (int.from_bytes(v, "big") for v in parts)
            n = p * q
            if n.bit_length() != key_type.rsa_bits:
                raise SwError(Sw.INCORRECT_DATA)
            d = pow(RSA_EXPONENT, -1, (p - 1) * (q - 1))
            if dp != d % (p - 1) or dq != d % (q - 1) or qinv != pow(q, -1, p):
                raise SwError(Sw.INCORRECT_DATA)
            pub = rsa.RSAPublicNumbers(RSA_EXPONENT, n)
            return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qinv, pub).private_key()
        if key_type in (KeyType.ECCP256, KeyType.ECCP384):
            curve: ec.EllipticCurve = (
                ec.SECP256R1() if key_type is KeyType.ECCP256 else ec.SECP384R1()
            )
            raw = fields[6]
            if len(raw) != (curve.key_size + 7) // 8:
                raise SwError(Sw.INCORRECT_DATA)
            return ec.derive_private_key(int.from_bytes(raw, "big"), curve)
        if key_type is KeyType.ED25519:
            return ed25519.Ed25519PrivateKey.from_private_bytes(fields[7])
        return x25519.X25519PrivateKey.from_private_bytes(fields[8])
    except (KeyError, ValueError, ArithmeticError):
        # Missing fields, non-invertible values, keys OpenSSL rejects: all bad key data.
        raise SwError(Sw.INCORRECT_DATA) from None
