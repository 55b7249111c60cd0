"""The lab CA's directory on disk (pivtool/certs/ca.py): its file names, the lock every change
holds, JSON reads and writes, the index records, the encrypted key file, and the parsing of
what a caller passes in (serials, revocation reasons, URLs, key types)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)

from ..core.fileio import atomic_write
from .errors import CertInputError, LabCAError

#: Key types accepted for the root key (ykman's names).
CA_KEY_TYPES = ("eccp256", "eccp384", "rsa2048", "rsa3072", "rsa4096")

KEY_FILE, CERT_FILE, CONFIG_FILE, INDEX_FILE = "ca.key", "ca.pem", "ca.json", "index.json"
CERTS_DIR = "certs"
LOCK_FILE = ".lock"
ATTESTATION_ROOTS_FILE = "attestation-roots.pem"
FORMAT_VERSION = 1
# Clock skew allowance: a certificate that is "not yet valid" on a slightly slow client is a
# classic first sign-in failure.
BACKDATE = _dt.timedelta(minutes=5)
#: A new CA key's passphrase is at least this long (issue 16: one character was accepted).
MIN_PASSPHRASE = 12
#: RSA CSR keys below this are refused unless the CA was made with a lower minimum.
MIN_RSA_BITS = 2048
#: PBKDF2-HMAC-SHA256 rounds for the CA key (PKCS#8 PBES2; OWASP's 2023 figure, ~0.2 s per
#: opening) instead of the 2,048 ``BestAvailableEncryption`` writes for PKCS#8. Not scrypt:
#: OpenSSL refuses scrypt above 32 MiB, and a lab CA key must open with ``openssl pkey``.
KEY_PBKDF2_ROUNDS = 600_000


def der_tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def der_int(value: int) -> bytes:
    return der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def encrypt_key(key: CertificateIssuerPrivateKeyTypes, passphrase: bytes) -> bytes:
    """PEM ``ENCRYPTED PRIVATE KEY``: PKCS#8 under PBES2 with PBKDF2-HMAC-SHA256 and
    AES-256-CBC (``openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter N``;
    cryptography and OpenSSL read it back)."""
    import base64

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    salt, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    aes_key = PBKDF2HMAC(hashes.SHA256(), length=32, salt=salt,
                         iterations=KEY_PBKDF2_ROUNDS).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    data = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    pbes2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
    pbkdf2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
    hmac_sha256 = bytes.fromhex("06082a864886f70d020905 00".replace(" ", ""))
    aes256_cbc = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
    kdf = der_tlv(0x30, pbkdf2 + der_tlv(0x30, der_tlv(0x04, salt) + der_int(KEY_PBKDF2_ROUNDS)
                                   + der_tlv(0x30, hmac_sha256)))
    scheme = der_tlv(0x30, aes256_cbc + der_tlv(0x04, iv))
    algorithm = der_tlv(0x30, pbes2 + der_tlv(0x30, kdf + scheme))
    der = der_tlv(0x30, algorithm + der_tlv(0x04, data))
    b64 = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + "\n".join(lines)
            + "\n-----END ENCRYPTED PRIVATE KEY-----\n").encode("ascii")


@dataclass(frozen=True)
class IssuedRecord:
    """One line of the CA index."""

    serial: str
    subject: str
    upns: list[str]
    emails: list[str]
    not_before: str
    not_after: str
    sha256: str
    status: str = "valid"
    revoked_at: str | None = None
    reason: str | None = None
    #: What a checked key attestation said (YubiKey serial, policies, root), or None.
    attestation: dict[str, Any] | None = None

    @property
    def serial_number(self) -> int:
        """The serial as an int."""
        return int(self.serial, 16)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the same layout as in index.json)."""
        return asdict(self)


def utc_now(now: _dt.datetime | None) -> _dt.datetime:
    moment = now or _dt.datetime.now(_dt.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).replace(microsecond=0)


def check_http_url(url: str, what: str) -> str:
    value = url.strip()
    # Plain HTTP on purpose: CRLs and CA certificates are signed, and Windows (and the PKI
    # guidance Entra relies on) does not fetch CDP/AIA over HTTPS or wants LDAP avoided.
    if not value.lower().startswith("http://") or len(value) <= len("http://"):
        raise CertInputError(f"{what} must be an http:// URL: {value[:120]!r}")
    return value


def generate_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    if key_type == "eccp256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "eccp384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa") and key_type in CA_KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise CertInputError(
        f"unsupported CA key type {key_type!r} (use one of {', '.join(CA_KEY_TYPES)})"
    )


def parse_serial(serial: int | str) -> int:
    if isinstance(serial, int):
        return serial
    text = serial.strip().lower().replace(":", "")
    text = text.removeprefix("0x")
    try:
        return int(text, 16)
    except ValueError as e:
        raise CertInputError(f"serial must be hexadecimal: {serial[:60]!r}") from e


def parse_reason(reason: x509.ReasonFlags | str | None) -> x509.ReasonFlags:
    if reason is None:
        return x509.ReasonFlags.unspecified
    if isinstance(reason, x509.ReasonFlags):
        flag = reason
    else:
        wanted = reason.strip().replace("-", "_").replace(" ", "_").lower()
        matches = [f for f in x509.ReasonFlags if wanted in (f.name.lower(), f.value.lower())]
        if not matches:
            names = ", ".join(
                f.name for f in x509.ReasonFlags if f != x509.ReasonFlags.remove_from_crl
            )
            raise CertInputError(f"unknown revocation reason {reason[:40]!r} (use one of {names})")
        flag = matches[0]
    if flag == x509.ReasonFlags.remove_from_crl:
        raise CertInputError("removeFromCRL is only meaningful in delta CRLs")
    return flag


def write_public(path: Path, data: bytes) -> None:
    # Certificates, CRLs and the index are public (0644); only ca.key is 0600.
    atomic_write(path, data, 0o644)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_public(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the CA directory's write lock (blocking until other writers are done)."""
    try:
        # O_NOFOLLOW: a planted symlink must not make us create or lock another file.
        fd = os.open(directory / LOCK_FILE,
                     os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileNotFoundError as e:
        raise LabCAError(f"{directory} holds no CA") from e
    except OSError as e:
        raise LabCAError(f"cannot lock the CA in {directory}: {e.strerror}") from e
    try:
        try:
            import fcntl
        except ImportError:  # Windows: lock the first byte instead
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield  # the lock goes with the descriptor
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise LabCAError(f"{path.name} is missing in {path.parent}") from e
    except (OSError, ValueError) as e:
        raise LabCAError(f"{path.name} in {path.parent} is unreadable or not JSON") from e
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise LabCAError(f"{path.name} in {path.parent} has an unknown format")
    return data


def load_csr(csr: x509.CertificateSigningRequest | bytes) -> x509.CertificateSigningRequest:
    """A CSR object, or PEM/DER bytes parsed into one (a malformed one is bad input)."""
    if isinstance(csr, x509.CertificateSigningRequest):
        return csr
    raw = bytes(csr)
    try:
        if b"-----BEGIN" in raw:
            request = x509.load_pem_x509_csr(raw)
        else:
            request = x509.load_der_x509_csr(raw)
        request.subject  # noqa: B018 - parsed lazily: a bad name must fail here
        return request
    except (ValueError, x509.InvalidVersion) as e:
        raise CertInputError(
            "malformed certificate signing request (expected PEM or DER PKCS#10)"
        ) from e
