"""Private keys that live on the card.

Each class subclasses cryptography's own private-key type, so the standard
``CertificateSigningRequestBuilder.sign()`` / ``CertificateBuilder.sign()`` call our ``sign()``
and the signature is made on the card — no dummy-key splicing. Operations that would reveal
the key (``private_numbers``, ``private_bytes``) raise, as the card does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.utils import Buffer

from ..core.errors import UsageError
from .constants import KeyType, Slot
from .encoding import key_type_of
from .padding import digest, emsa_pkcs1_v15_raw, pad_for_signature, unpad_decrypted

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

    from .session import PivSession


def _no_export(*_: Any) -> NoReturn:
    raise UsageError("the private key stays on the card and cannot be exported")


class _CardKey:
    """Shared state: the borrowed session, the slot and the key type."""

    def __init__(self, session: PivSession, slot: Slot, key_type: KeyType) -> None:
        self._session = session
        self.slot = slot
        self.key_type = key_type

    def _op(self, data: bytes, exponentiation: bool = False) -> bytes:
        return self._session.general_authenticate(self.slot, self.key_type, data,
                                                  exponentiation)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    private_bytes = _no_export


class PivRsaPrivateKey(_CardKey, rsa.RSAPrivateKey):
    """An RSA key in a PIV slot: padding is done here, the raw private operation on the card."""

    def __init__(self, session: PivSession, slot: Slot, public_key: rsa.RSAPublicKey) -> None:
        super().__init__(session, slot, key_type_of(public_key))
        self._public = public_key

    @property
    def key_size(self) -> int:
        """Modulus size in bits."""
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        """The slot's public key."""
        return self._public

    def sign(self, data: Buffer, padding: apad.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo) -> bytes:
        """Sign on the card with PKCS#1 v1.5 or PSS padding built on the host."""
        if isinstance(algorithm, NoDigestInfo):
            em = emsa_pkcs1_v15_raw(bytes(data), (self.key_size + 7) // 8)
        else:
            em = pad_for_signature(bytes(data), padding, algorithm, self.key_size)
        return self._op(em).rjust(self.key_size // 8, b"\x00")

    def decrypt(self, ciphertext: Buffer, padding: apad.AsymmetricPadding) -> bytes:
        """Raw RSA decryption on the card, then unpadding (PKCS#1 v1.5 or OAEP) here."""
        k = self.key_size // 8
        if len(ciphertext) != k:
            raise UsageError("ciphertext length does not match the key size")
        return unpad_decrypted(self._op(bytes(ciphertext)).rjust(k, b"\x00"), padding)

    private_numbers = _no_export


class PivEcPrivateKey(_CardKey, ec.EllipticCurvePrivateKey):
    """A P-256/P-384 key in a PIV slot: ECDSA and ECDH on the card."""

    def __init__(self, session: PivSession, slot: Slot,
                 public_key: ec.EllipticCurvePublicKey) -> None:
        super().__init__(session, slot, key_type_of(public_key))
        self._public = public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        """The key's curve."""
        return self._public.curve

    @property
    def key_size(self) -> int:
        """Curve size in bits."""
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The slot's public key."""
        return self._public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
             ) -> bytes:
        """ECDSA on the card over the hash (truncated to the curve size, FIPS 186-4 §6.4);
        returns a DER signature as cryptography does."""
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UsageError("only ECDSA signatures are supported")
        alg = signature_algorithm.algorithm
        mhash, _ = digest(bytes(data), alg)
        n = (self.key_size + 7) // 8
        return self._op(mhash[:n].rjust(n, b"\x00"))

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey
                 ) -> bytes:
        """ECDH on the card with an uncompressed peer point."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        point = peer_public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return self._op(point, exponentiation=True)

    private_numbers = _no_export


class PivEd25519PrivateKey(_CardKey, ed25519.Ed25519PrivateKey):
    """An Ed25519 key in a PIV slot (YubiKey 5.7+): the card signs the whole message."""

    def __init__(self, session: PivSession, slot: Slot,
                 public_key: ed25519.Ed25519PublicKey) -> None:
        super().__init__(session, slot, KeyType.ED25519)
        self._public = public_key

    def public_key(self) -> ed25519.Ed25519PublicKey:
        """The slot's public key."""
        return self._public

    def sign(self, data: Buffer) -> bytes:
        """Ed25519 signature made on the card."""
        return self._op(bytes(data))

    private_bytes_raw = _no_export


class PivX25519PrivateKey(_CardKey, x25519.X25519PrivateKey):
    """An X25519 key in a PIV slot (YubiKey 5.7+): key agreement on the card."""

    def __init__(self, session: PivSession, slot: Slot,
                 public_key: x25519.X25519PublicKey) -> None:
        super().__init__(session, slot, KeyType.X25519)
        self._public = public_key

    def public_key(self) -> x25519.X25519PublicKey:
        """The slot's public key."""
        return self._public

    def exchange(self, peer_public_key: x25519.X25519PublicKey) -> bytes:
        """X25519 on the card."""
        return self._op(peer_public_key.public_bytes_raw(), exponentiation=True)

    private_bytes_raw = _no_export


def card_private_key(session: PivSession, slot: Slot, public_key: PublicKeyTypes
                     ) -> PrivateKeyTypes:
    """The card-backed private key class matching *public_key*."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return PivRsaPrivateKey(session, slot, public_key)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return PivEcPrivateKey(session, slot, public_key)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return PivEd25519PrivateKey(session, slot, public_key)
    if isinstance(public_key, x25519.X25519PublicKey):
        return PivX25519PrivateKey(session, slot, public_key)
    raise UsageError(f"unsupported public key type {type(public_key).__name__}")
