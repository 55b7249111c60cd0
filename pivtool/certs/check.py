"""Pure readiness checks of a certificate for Microsoft Entra certificate-based authentication.

Only the certificate (and optionally the CA bundle you will upload to Entra) is examined;
card-level checks (default PIN, touch policy, ...) live with the PIV code.

Every check yields a :class:`Finding` with a stable ``id``. A check that does not apply
(``upn.match`` without an expected UPN, ``chain`` without a bundle) yields nothing.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import CertInputError
from .inspect import (
    crl_distribution_points,
    get_extension,
    get_upns,
    key_algorithm_name,
    load_certificates,
)

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "IOS_KEY_ALGORITHMS",
    "Finding",
    "Status",
    "check_entra_certificate",
]

Status = Literal["pass", "warn", "fail"]

#: Key types iOS (CryptoTokenKit via Yubico Authenticator) can use for signing.
IOS_KEY_ALGORITHMS = frozenset({"rsa1024", "rsa2048", "eccp256", "eccp384"})
#: A certificate expiring sooner than this gets a warning.
EXPIRY_WARNING_DAYS = 30
_MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: ``status`` is "pass", "warn" or "fail"; ``fix`` says what
    to do about a warn/fail (empty for a pass)."""

    id: str
    status: Status
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with keys id, status, message, fix."""
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


def _pass(id_: str, message: str) -> Finding:
    return Finding(id_, "pass", message)


# --------------------------------------------------------------------------- checks


def _check_eku(cert: x509.Certificate) -> list[Finding]:
    eku = get_extension(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return [
            Finding(
                "eku.present",
                "fail",
                "certificate has no extended key usage extension",
                "issue a certificate with EKU Client Authentication and Smart Card Logon",
            )
        ]
    findings = [_pass("eku.present", "extended key usage extension present")]
    oids = set(eku)
    if ExtendedKeyUsageOID.CLIENT_AUTH in oids:
        findings.append(_pass("eku.client-auth", "EKU includes Client Authentication"))
    else:
        findings.append(
            Finding(
                "eku.client-auth",
                "fail",
                "EKU lacks Client Authentication (1.3.6.1.5.5.7.3.2): "
                "browsers won't offer it for TLS client auth",
                "reissue with EKU Client Authentication",
            )
        )
    if ExtendedKeyUsageOID.SMARTCARD_LOGON in oids:
        findings.append(_pass("eku.smartcard-logon", "EKU includes Smart Card Logon"))
    else:
        findings.append(
            Finding(
                "eku.smartcard-logon",
                "warn",
                "EKU lacks Smart Card Logon (1.3.6.1.4.1.311.20.2.2): "
                "Windows smart-card sign-in won't use it",
                "reissue with EKU Smart Card Logon if the card is also used to sign in to Windows",
            )
        )
    return findings


def _check_upn(cert: x509.Certificate, expected_upn: str | None) -> list[Finding]:
    try:
        upns = get_upns(cert, strict=True)
    except CertInputError as e:
        return [
            Finding(
                "upn.present",
                "fail",
                f"the SAN UPN is malformed: {e}",
                "reissue with the UPN as a UTF8String otherName (1.3.6.1.4.1.311.20.2.3)",
            )
        ]
    if not upns:
        return [
            Finding(
                "upn.present",
                "fail",
                "no UPN (SAN otherName 1.3.6.1.4.1.311.20.2.3): "
                "Entra's default username binding can't find the user",
                "reissue with the user's UPN in the SAN, "
                "or bind another field in certificateUserIds",
            )
        ]
    findings = [_pass("upn.present", f"SAN UPN: {', '.join(upns)}")]
    if expected_upn is not None:
        wanted = expected_upn.strip().casefold()
        if any(u.casefold() == wanted for u in upns):
            findings.append(_pass("upn.match", f"UPN matches {expected_upn.strip()}"))
        else:
            findings.append(
                Finding(
                    "upn.match",
                    "fail",
                    f"UPN {', '.join(upns)} does not match the expected {expected_upn.strip()}",
                    "reissue for the right user, or check the user's userPrincipalName in Entra",
                )
            )
    return findings


def _check_key_usage(cert: x509.Certificate) -> Finding:
    ku = get_extension(cert, x509.KeyUsage)
    if ku is None:
        return Finding(
            "key-usage",
            "warn",
            "no key usage extension (any usage is implied; some clients are stricter)",
            "reissue with key usage digitalSignature",
        )
    if not ku.digital_signature:
        return Finding(
            "key-usage",
            "fail",
            "key usage lacks digitalSignature: the key can't sign the TLS handshake",
            "reissue with key usage digitalSignature",
        )
    return _pass("key-usage", "key usage includes digitalSignature")


def _check_validity(cert: x509.Certificate, now: _dt.datetime) -> Finding:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return Finding(
            "validity",
            "fail",
            f"not valid until {start:%Y-%m-%d %H:%M}Z",
            "check the clock of the issuing CA and of this computer, or wait",
        )
    if now > end:
        return Finding(
            "validity", "fail", f"expired on {end:%Y-%m-%d %H:%M}Z", "request a new certificate"
        )
    left = end - now
    if left < _dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return Finding(
            "validity",
            "warn",
            f"expires in {left.days} day(s), on {end:%Y-%m-%d}",
            "renew the certificate before it expires",
        )
    return _pass("validity", f"valid until {end:%Y-%m-%d}")


def _check_cdp(cert: x509.Certificate) -> Finding:
    urls = crl_distribution_points(cert)
    http = [u for u in urls if u.lower().startswith("http://")]
    fix = "issue from a CA that writes exactly one http:// CRL distribution point"
    if not urls:
        return Finding(
            "crl.distribution-point",
            "warn",
            "no CRL distribution point: relying parties can't check revocation "
            "(Entra uses the CRL URL configured on the CA in its trust store)",
            fix,
        )
    if not http:
        kinds = ", ".join(sorted({u.split(":", 1)[0].lower() for u in urls}))
        return Finding(
            "crl.distribution-point",
            "fail",
            f"CRL distribution point is not plain HTTP ({kinds}); "
            "Entra and clients outside the domain can't fetch it",
            fix,
        )
    if len(urls) > 1:
        return Finding(
            "crl.distribution-point",
            "warn",
            f"{len(urls)} CRL distribution points; one internet-facing http:// URL is expected",
            fix,
        )
    return _pass("crl.distribution-point", f"one HTTP CRL distribution point: {http[0]}")


def _check_key(cert: x509.Certificate) -> list[Finding]:
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return [
            Finding(
                "key-algorithm.ios",
                "fail",
                "the public key type is not supported",
                "use RSA 2048 or ECC P-256",
            )
        ]
    name = key_algorithm_name(public_key)
    findings: list[Finding] = []
    if name in IOS_KEY_ALGORITHMS:
        findings.append(_pass("key-algorithm.ios", f"{name} is usable on iOS"))
    else:
        findings.append(
            Finding(
                "key-algorithm.ios",
                "warn",
                f"{name} can't be used on iOS (RSA 1024/2048 and ECC P-256/P-384 only)",
                "generate an RSA 2048 or ECC P-256 key if the card is used with iPhone/iPad",
            )
        )
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
        findings.append(
            Finding(
                "key-strength",
                "warn",
                f"RSA {public_key.key_size} is weak",
                "generate an RSA 2048 or ECC P-256 key",
            )
        )
    else:
        findings.append(_pass("key-strength", f"{name} is of adequate strength"))
    return findings


def _check_basic_constraints(cert: x509.Certificate) -> Finding:
    basic = get_extension(cert, x509.BasicConstraints)
    if basic is not None and basic.ca:
        return Finding(
            "basic-constraints",
            "fail",
            "this is a CA certificate, not a user certificate",
            "load the user's end-entity certificate instead",
        )
    return _pass("basic-constraints", "end-entity certificate")


def _check_signature_hash(cert: x509.Certificate) -> Finding:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return Finding(
            "signature-algorithm",
            "warn",
            "signature algorithm is not recognised",
            "reissue from a CA that signs with SHA-256 or better",
        )
    if algorithm is not None and algorithm.name in ("sha1", "md5"):
        return Finding(
            "signature-algorithm",
            "warn",
            f"signed with {algorithm.name.upper()}, which is deprecated",
            "reissue from a CA that signs with SHA-256 or better",
        )
    return _pass("signature-algorithm", "signature algorithm is current")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_chain(cert: x509.Certificate, bundle: list[x509.Certificate]) -> Finding:
    fix = "upload every CA certificate up to the root to Entra and include them in the bundle"
    current, path = cert, []
    for _ in range(_MAX_CHAIN_DEPTH):
        candidates = [c for c in bundle if c.subject == current.issuer]
        if not candidates:
            return Finding(
                "chain",
                "fail",
                f"issuer {current.issuer.rfc4514_string()} is not in the CA bundle",
                fix,
            )
        issuer = next((c for c in candidates if _signed_by(current, c)), None)
        if issuer is None:
            return Finding(
                "chain",
                "fail",
                f"signature of {current.subject.rfc4514_string()} does not verify with "
                f"{current.issuer.rfc4514_string()} from the bundle",
                "the bundle holds a different CA with the same name; get the right CA certificate",
            )
        basic = get_extension(issuer, x509.BasicConstraints)
        if basic is None or not basic.ca:
            return Finding(
                "chain", "fail", f"{issuer.subject.rfc4514_string()} is not a CA certificate", fix
            )
        path.append(issuer.subject.rfc4514_string())
        if issuer.subject == issuer.issuer:
            return _pass("chain", "chains to " + " -> ".join(path))
        current = issuer
    return Finding("chain", "fail", "certificate chain is too long or loops", fix)


# --------------------------------------------------------------------------- entry point


def check_entra_certificate(
    cert: x509.Certificate,
    expected_upn: str | None = None,
    ca_bundle: Iterable[x509.Certificate] | bytes | None = None,
    now: _dt.datetime | None = None,
) -> list[Finding]:
    """Check ``cert`` for use with Entra CBA; return one :class:`Finding` per check.

    ``expected_upn`` adds ``upn.match`` (case-insensitive). ``ca_bundle`` (certificates or
    PEM bytes) adds ``chain``: each signature up to a self-signed root in the bundle is
    verified. ``now`` defaults to the current UTC time.
    """
    moment = now or _dt.datetime.now(_dt.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    findings: list[Finding] = []
    findings += _check_eku(cert)
    findings += _check_upn(cert, expected_upn)
    findings.append(_check_key_usage(cert))
    findings.append(_check_validity(cert, moment))
    findings.append(_check_cdp(cert))
    findings += _check_key(cert)
    findings.append(_check_basic_constraints(cert))
    findings.append(_check_signature_hash(cert))
    if ca_bundle is not None:
        bundle = load_certificates(ca_bundle) if isinstance(ca_bundle, bytes) else list(ca_bundle)
        findings.append(_check_chain(cert, bundle))
    return findings
