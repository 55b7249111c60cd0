"""Load certificates and keys from bytes, and summarise certificates.

Every loader raises :class:`~.errors.CertInputError` with a one-line message on malformed
input or a wrong password — never a bare ``ValueError`` — and never puts the password in the
message.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

# The two enums from cryptography's own module rather than its serialization package, whose
# __init__ loads the SSH key format, bcrypt and the cipher modules (about thirty modules
# that `pivtool info` never uses); key and PKCS#12 loading import the package where used.
from cryptography.hazmat.primitives._serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)

from .errors import CertInputError

__all__ = [
    "SUMMARY_SCHEMA",
    "CertSummary",
    "crl_distribution_points",
    "get_emails",
    "get_extension",
    "get_upns",
    "iso_utc",
    "key_algorithm_name",
    "load_certificate",
    "load_certificates",
    "load_pkcs12",
    "load_private_key",
    "public_key_matches",
    "serial_hex",
    "spki_der",
    "summarize",
]

#: Identifies the layout of :meth:`CertSummary.to_json`; bumped on incompatible changes.
SUMMARY_SCHEMA = "pivtool.cert-summary/1"

_E = TypeVar("_E", bound=x509.ExtensionType)

# ykman's key-type names (yubikit.piv.KeyType, lower-cased), so JSON from pivtool and ykman
# can be compared directly.
_EC_NAMES = {"secp256r1": "eccp256", "secp384r1": "eccp384"}


# --------------------------------------------------------------------------- loading


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def _password_bytes(password: bytes | str | None) -> bytes | None:
    if password is None:
        return None
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data[:4096]


def parsed(cert: x509.Certificate) -> x509.Certificate:
    """*cert*, with the parts cryptography parses lazily (subject, issuer) checked: a
    malformed name must fail here as :class:`CertInputError`, not later as a ValueError in
    a summary."""
    try:
        cert.subject  # noqa: B018 - evaluated for its parse errors
        cert.issuer  # noqa: B018
    except ValueError as e:
        raise CertInputError("malformed certificate: its subject or issuer name does not "
                             "parse") from e
    return cert


def load_certificate(data: bytes | str) -> x509.Certificate:
    """Load one X.509 certificate from PEM or DER bytes (the first one of a PEM bundle)."""
    raw = _as_bytes(data)
    if not raw.strip():
        raise CertInputError("certificate data is empty")
    if _is_pem(raw):
        try:
            return parsed(x509.load_pem_x509_certificate(raw))
        except (ValueError, x509.InvalidVersion) as e:
            raise CertInputError("malformed PEM certificate (expected BEGIN CERTIFICATE)") from e
    try:
        return parsed(x509.load_der_x509_certificate(raw))
    except (ValueError, x509.InvalidVersion) as e:
        raise CertInputError("data is neither a PEM nor a DER X.509 certificate") from e


def load_certificates(data: bytes | str) -> list[x509.Certificate]:
    """Load every certificate from a PEM bundle, or the single certificate of DER data."""
    raw = _as_bytes(data)
    if not raw.strip():
        raise CertInputError("certificate data is empty")
    if _is_pem(raw):
        try:
            certs = x509.load_pem_x509_certificates(raw)
        except (ValueError, x509.InvalidVersion) as e:
            raise CertInputError("malformed PEM certificate bundle") from e
        return [parsed(c) for c in certs]
    return [load_certificate(raw)]


def load_private_key(data: bytes | str, password: bytes | str | None = None) -> PrivateKeyTypes:
    """Load a software private key from PEM or DER (PKCS#8, PKCS#1, SEC1, OpenSSH PEM)."""
    from cryptography.hazmat.primitives import serialization

    raw = _as_bytes(data)
    pw = _password_bytes(password)
    if not raw.strip():
        raise CertInputError("private key data is empty")
    try:
        if _is_pem(raw):
            if b"OPENSSH PRIVATE KEY" in raw:
                return serialization.load_ssh_private_key(raw, pw)
            return serialization.load_pem_private_key(raw, pw)
        return serialization.load_der_private_key(raw, pw)
    except TypeError as e:
        # cryptography signals "password needed / not needed" with TypeError.
        if pw is None:
            raise CertInputError("private key is encrypted: a password is required") from e
        raise CertInputError("private key is not encrypted: do not give a password") from e
    except UnsupportedAlgorithm as e:
        raise CertInputError("unsupported private key type or encryption") from e
    except ValueError as e:
        if pw is not None:
            raise CertInputError(
                "could not load private key: wrong password or malformed data"
            ) from e
        raise CertInputError("malformed private key (expected PEM or DER)") from e


def load_pkcs12(
    data: bytes, password: bytes | str | None
) -> tuple[PrivateKeyTypes | None, x509.Certificate | None, list[x509.Certificate]]:
    """Load a PKCS#12 (.pfx/.p12) file: ``(key or None, certificate or None, other certs)``.

    The key is returned as the plain ``cryptography`` private-key type it holds.
    """
    from cryptography.hazmat.primitives.serialization import pkcs12

    raw = bytes(data)
    pw = _password_bytes(password)
    if not raw:
        raise CertInputError("PKCS#12 data is empty")
    if raw[0] != 0x30:
        # Every PFX is a DER SEQUENCE; anything else is the wrong file, not a wrong password.
        raise CertInputError("data is not PKCS#12 (expected DER, .pfx/.p12)")
    candidates = [pw] if pw is not None else [None, b""]
    last: Exception | None = None
    for candidate in candidates:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(raw, candidate)
        except (ValueError, TypeError) as e:
            last = e
            continue
        except UnsupportedAlgorithm as e:
            raise CertInputError("PKCS#12 uses an unsupported algorithm") from e
        return key, parsed(cert) if cert is not None else None, [parsed(c) for c in extra]
    if pw is None:
        raise CertInputError(
            "could not read PKCS#12: a password is required or the file is corrupt"
        ) from last
    raise CertInputError("could not read PKCS#12: wrong password or corrupt file") from last


# --------------------------------------------------------------------------- fields


def spki_der(key: x509.Certificate | CertificatePublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo of a certificate's (or a public key's) key."""
    public_key = key.public_key() if isinstance(key, x509.Certificate) else key
    return public_key.public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )


def public_key_matches(
    cert_or_pubkey: x509.Certificate | CertificatePublicKeyTypes,
    pubkey: x509.Certificate | CertificatePublicKeyTypes,
) -> bool:
    """True if both arguments carry the same public key (compared as DER SubjectPublicKeyInfo)."""
    return spki_der(cert_or_pubkey) == spki_der(pubkey)


def key_algorithm_name(public_key: CertificatePublicKeyTypes) -> str:
    """The key type in ykman's names: rsa1024/rsa2048/rsa3072/rsa4096, eccp256, eccp384,
    ed25519, x25519; other keys get a descriptive name such as ``ec-secp521r1``."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _EC_NAMES.get(public_key.curve.name, f"ec-{public_key.curve.name}")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, x25519.X25519PublicKey):
        return "x25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "ed448"
    if isinstance(public_key, x448.X448PublicKey):
        return "x448"
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"dsa{public_key.key_size}"
    return "unknown"


def get_extension(cert: x509.Certificate, ext_type: type[_E]) -> _E | None:
    """The value of ``cert``'s extension of class ``ext_type``, or None if absent.

    Raises :class:`CertInputError` if the extension (or another one) cannot be parsed.
    """
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as e:
        raise CertInputError(f"certificate has a malformed extension: {str(e)[:120]}") from e


def get_upns(cert: x509.Certificate, *, strict: bool = False) -> list[str]:
    """UPNs from the SAN otherName 1.3.6.1.4.1.311.20.2.3 (decoded DER UTF8String).

    Undecodable values are skipped, or raise :class:`CertInputError` when ``strict``.
    """
    san = get_extension(cert, x509.SubjectAlternativeName)
    if san is None:
        return []
    # Imported here: the Entra profile module is not needed for a certificate without a SAN.
    from .profile import UPN_OID, decode_upn

    upns: list[str] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != UPN_OID:
            continue
        try:
            upns.append(decode_upn(other.value))
        except CertInputError:
            if strict:
                raise
    return upns


def get_emails(cert: x509.Certificate) -> list[str]:
    """rfc822Name entries of the SAN (the subject's emailAddress attribute is not used)."""
    san = get_extension(cert, x509.SubjectAlternativeName)
    return list(san.get_values_for_type(x509.RFC822Name)) if san is not None else []


def crl_distribution_points(cert: x509.Certificate) -> list[str]:
    """Every URI in the CRL distribution points extension, in order (HTTP, LDAP, ...)."""
    cdp = get_extension(cert, x509.CRLDistributionPoints)
    urls: list[str] = []
    for point in cdp or []:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                urls.append(name.value)
    return urls


def serial_hex(serial: int) -> str:
    """Serial number as lower-case big-endian hex, even length, no separators."""
    text = format(serial, "x")
    return text if len(text) % 2 == 0 else "0" + text


def iso_utc(moment: _dt.datetime) -> str:
    """ISO 8601 UTC with a ``Z`` suffix and whole seconds (``2025-01-31T12:00:00Z``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class CertSummary:
    """What people ask about a certificate on a PIV slot, as plain data."""

    subject: str
    issuer: str
    upns: list[str]
    emails: list[str]
    serial: str
    not_before: str
    not_after: str
    sha256: str
    sha1: str
    key_algorithm: str
    ekus: list[str]
    crl_distribution_points: list[str]
    policies: list[str]
    is_ca: bool
    self_issued: bool
    subject_key_identifier: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict. Keys are stable (see :data:`SUMMARY_SCHEMA`): ``schema``,
        ``subject``, ``issuer`` (RFC 4514), ``upns``, ``emails``, ``serial`` (hex),
        ``not_before``/``not_after`` (ISO 8601 UTC), ``sha256``/``sha1`` (hex fingerprints of
        the DER certificate), ``key_algorithm`` (ykman names), ``ekus`` (dotted OIDs),
        ``crl_distribution_points`` (URIs), ``policies`` (dotted OIDs), ``is_ca``,
        ``self_issued``, ``subject_key_identifier`` (hex or null)."""
        data = asdict(self)
        return {"schema": SUMMARY_SCHEMA, **data}


def _cert_key_algorithm(cert: x509.Certificate) -> str:
    try:
        return key_algorithm_name(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        # e.g. a key type this OpenSSL build does not know; still summarise the rest.
        return "unknown"


def summarize(cert: x509.Certificate) -> CertSummary:
    """Summarise ``cert``. Raises :class:`CertInputError` if an extension is malformed."""
    der = cert.public_bytes(Encoding.DER)
    eku = get_extension(cert, x509.ExtendedKeyUsage)
    policies = get_extension(cert, x509.CertificatePolicies)
    basic = get_extension(cert, x509.BasicConstraints)
    ski = get_extension(cert, x509.SubjectKeyIdentifier)
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        upns=get_upns(cert),
        emails=get_emails(cert),
        serial=serial_hex(cert.serial_number),
        not_before=iso_utc(cert.not_valid_before_utc),
        not_after=iso_utc(cert.not_valid_after_utc),
        sha256=hashlib.sha256(der).hexdigest(),
        sha1=hashlib.sha1(der).hexdigest(),
        key_algorithm=_cert_key_algorithm(cert),
        ekus=[oid.dotted_string for oid in eku] if eku is not None else [],
        crl_distribution_points=crl_distribution_points(cert),
        policies=[p.policy_identifier.dotted_string for p in policies] if policies else [],
        is_ca=bool(basic.ca) if basic is not None else False,
        self_issued=cert.subject == cert.issuer,
        subject_key_identifier=ski.digest.hex() if ski is not None else None,
    )
