"""Host-side RSA padding (RFC 8017). A PIV card does raw RSA only, so the host builds the
encoded message before signing and strips the padding after decrypting.

Written out rather than borrowed from a throw-away key, so the bytes sent to the card are
exactly the ones the standard defines and can be tested against golden vectors.
"""

from __future__ import annotations

import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..core.errors import UsageError

#: DER DigestInfo prefixes (RFC 8017 §9.2 note 1).
DIGEST_INFO_PREFIX: dict[str, bytes] = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def digest(message: bytes, algorithm: hashes.HashAlgorithm | Prehashed) -> tuple[bytes,
                                                                                 hashes.HashAlgorithm]:
    """Hash *message* unless it is already a digest (``Prehashed``)."""
    if isinstance(algorithm, Prehashed):
        alg = algorithm._algorithm
        if len(message) != alg.digest_size:
            raise UsageError("prehashed message has the wrong length for its hash")
        return message, alg
    h = hashes.Hash(algorithm)
    h.update(message)
    return h.finalize(), algorithm


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _mgf1(seed: bytes, length: int, alg: hashes.HashAlgorithm) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        h = hashes.Hash(alg)
        h.update(seed + counter.to_bytes(4, "big"))
        out += h.finalize()
        counter += 1
    return out[:length]


def emsa_pkcs1_v15_raw(t: bytes, em_len: int) -> bytes:
    """PKCS#1 v1.5 type-1 padding around *t* as given (no DigestInfo added)."""
    if em_len < len(t) + 11:
        raise UsageError("RSA key too short for this message")
    return b"\x00\x01" + b"\xff" * (em_len - len(t) - 3) + b"\x00" + t


def emsa_pkcs1_v15(mhash: bytes, alg: hashes.HashAlgorithm, em_len: int) -> bytes:
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2): 00 01 FF..FF 00 DigestInfo."""
    prefix = DIGEST_INFO_PREFIX.get(alg.name)
    if prefix is None:
        raise UsageError(f"hash {alg.name} is not supported for RSA PKCS#1 v1.5")
    return emsa_pkcs1_v15_raw(prefix + mhash, em_len)


def emsa_pss(mhash: bytes, alg: hashes.HashAlgorithm, mgf_alg: hashes.HashAlgorithm,
             salt_len: int, mod_bits: int) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1)."""
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    h_len = alg.digest_size
    if em_len < h_len + salt_len + 2:
        raise UsageError("RSA key too short for PSS with this hash and salt")
    salt = os.urandom(salt_len)
    h = hashes.Hash(alg)
    h.update(b"\x00" * 8 + mhash + salt)
    hh = h.finalize()
    db = b"\x00" * (em_len - salt_len - h_len - 2) + b"\x01" + salt
    mask = _mgf1(hh, em_len - h_len - 1, mgf_alg)
    masked = bytearray(_xor(db, mask))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    em = bytes(masked) + hh + b"\xbc"
    # The card takes a full modulus-length block; EM is one byte shorter when modBits-1 is a
    # multiple of 8 (always the case for the usual key sizes).
    return em.rjust((mod_bits + 7) // 8, b"\x00")


def pad_for_signature(message: bytes, pad: apad.AsymmetricPadding,
                      algorithm: hashes.HashAlgorithm | Prehashed, mod_bits: int) -> bytes:
    """Encode *message* for a raw RSA private operation per *pad*."""
    mhash, alg = digest(message, algorithm)
    if isinstance(pad, apad.PKCS1v15):
        return emsa_pkcs1_v15(mhash, alg, (mod_bits + 7) // 8)
    if isinstance(pad, apad.PSS):
        mgf = pad._mgf
        mgf_alg = mgf._algorithm if isinstance(mgf, apad.MGF1) else alg
        salt = pad._salt_length
        em_len = (mod_bits - 1 + 7) // 8
        if isinstance(salt, apad._MaxLength):
            salt_len = em_len - alg.digest_size - 2
        elif isinstance(salt, apad._DigestLength):
            salt_len = alg.digest_size
        elif isinstance(salt, int):
            salt_len = salt
        else:
            raise UsageError("unsupported PSS salt length")
        return emsa_pss(mhash, alg, mgf_alg, salt_len, mod_bits)
    raise UsageError(f"unsupported RSA signature padding {pad.name}")


def unpad_decrypted(em: bytes, pad: apad.AsymmetricPadding) -> bytes:
    """Strip PKCS#1 v1.5 type 2 or OAEP padding from a raw RSA decryption result.

    Failures raise one generic error so the caller cannot become a padding oracle."""
    fail = UsageError("decryption failed")
    if isinstance(pad, apad.PKCS1v15):
        if len(em) < 11 or em[0] != 0 or em[1] != 2:
            raise fail
        sep = em.find(b"\x00", 2)
        if sep < 10:
            raise fail
        return em[sep + 1:]
    if isinstance(pad, apad.OAEP):
        alg = pad._algorithm
        mgf = pad._mgf
        mgf_alg = mgf._algorithm if isinstance(mgf, apad.MGF1) else alg
        h_len = alg.digest_size
        if len(em) < 2 * h_len + 2 or em[0] != 0:
            raise fail
        masked_seed, masked_db = em[1:1 + h_len], em[1 + h_len:]
        seed = _xor(masked_seed, _mgf1(masked_db, h_len, mgf_alg))
        db = _xor(masked_db, _mgf1(seed, len(masked_db), mgf_alg))
        h = hashes.Hash(alg)
        h.update(pad._label or b"")
        if not hmac.compare_digest(db[:h_len], h.finalize()):
            raise fail
        rest = db[h_len:].lstrip(b"\x00")
        if not rest or rest[0] != 1:
            raise fail
        return rest[1:]
    raise UsageError(f"unsupported RSA decryption padding {pad.name}")
