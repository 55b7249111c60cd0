"""Pure readiness checks of a certificate for Microsoft Entra certificate-based authentication.

Only the certificate (and optionally the CA bundle you will upload to Entra) is examined;
card-level checks (default PIN, touch policy, ...) live with the PIV code.

Every check yields a :class:`Finding` with a stable ``id``. A check that could not be made
(``upn.match`` without an expected UPN, ``chain`` without a CA bundle, ``revocation``
without a CRL) yields a ``skip`` finding saying what it needs: nothing unchecked looks
checked.
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

Status = Literal["pass", "warn", "fail", "skip"]

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
    if expected_upn is None:
        findings.append(Finding("upn.match", "skip",
                                "not checked: no expected UPN given",
                                "give the user's UPN (--upn USER@DOMAIN)"))
    else:
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


def _check_chain(cert: x509.Certificate, bundle: list[x509.Certificate],
                 moment: _dt.datetime) -> Finding:
    """Path validation with cryptography's verifier (RFC 5280: signatures, validity of
    every certificate at *moment*, CA basicConstraints, keyCertSign, pathLen, name
    chaining), up to a self-signed root in *bundle*; the leaf's own extensions are
    checked by the Entra findings, so the verifier takes them as they are. Each CA on the
    path found is then described (and re-checked) in the message."""
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    fix = "upload every CA certificate up to the root to Entra and include them in the bundle"
    roots = [c for c in bundle if c.subject == c.issuer]
    intermediates = [c for c in bundle if c.subject != c.issuer]
    if not roots:
        return Finding("chain", "fail", "the CA bundle holds no root (self-signed) "
                       "certificate to end the chain at", fix)
    try:
        verifier = (PolicyBuilder().store(Store(roots)).time(moment)
                    .max_chain_depth(_MAX_CHAIN_DEPTH)
                    .extension_policies(ca_policy=_ca_policy(),
                                        ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        chain = verifier.verify(cert, intermediates).chain
    except VerificationError as e:
        return Finding("chain", "fail", f"the chain does not verify: {_why(e, cert, bundle)}",
                       fix)
    problems = [p for ca_index, ca in enumerate(chain[1:])
                for p in _ca_problems(ca, ca_index, moment)]
    if problems:  # the verifier should have refused: belt and braces, and a clearer reason
        return Finding("chain", "fail", problems[0], fix)
    path = " -> ".join(c.subject.rfc4514_string() for c in chain[1:])
    return _pass("chain", f"chains to {path} (validity, keyCertSign and pathLen of each CA "
                          "checked)")


def _ca_policy() -> Any:
    """The Web PKI CA profile, relaxed where enterprise and lab CAs commonly differ from it
    without harm: key usage and authority key identifier may be absent (keyCertSign, when a
    key usage is there, is checked by :func:`_ca_problems`)."""
    from cryptography.x509.verification import Criticality, ExtensionPolicy

    return (ExtensionPolicy.webpki_defaults_ca()
            .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, None)
            .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None))


def _ca_problems(ca: x509.Certificate, below: int, moment: _dt.datetime) -> list[str]:
    """What makes *ca* unfit to issue a chain with *below* CAs under it."""
    name = ca.subject.rfc4514_string()
    out = []
    if not ca.not_valid_before_utc <= moment <= ca.not_valid_after_utc:
        out.append(f"CA {name} is not valid now ({ca.not_valid_before_utc:%Y-%m-%d} to "
                   f"{ca.not_valid_after_utc:%Y-%m-%d})")
    basic = get_extension(ca, x509.BasicConstraints)
    if basic is None or not basic.ca:
        out.append(f"{name} is not a CA certificate")
    elif basic.path_length is not None and below > basic.path_length:
        out.append(f"CA {name} allows {basic.path_length} CA(s) below it (pathLen), the "
                   f"chain has {below}")
    usage = get_extension(ca, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        out.append(f"CA {name} lacks keyCertSign in its key usage")
    return out


def _why(error: Exception, cert: x509.Certificate, bundle: list[x509.Certificate]) -> str:
    """The verifier's reason, made concrete where pivtool can say more."""
    if not any(c.subject == cert.issuer for c in bundle):
        return f"issuer {cert.issuer.rfc4514_string()} is not in the CA bundle"
    for ca in bundle:
        if ca.subject == cert.issuer and not _signed_by(cert, ca):
            return (f"signature of {cert.subject.rfc4514_string()} does not verify with "
                    f"{cert.issuer.rfc4514_string()} from the bundle")
    return str(error)


# --------------------------------------------------------------------------- entry point


def check_entra_certificate(
    cert: x509.Certificate,
    expected_upn: str | None = None,
    ca_bundle: Iterable[x509.Certificate] | bytes | None = None,
    now: _dt.datetime | None = None,
    crl: x509.CertificateRevocationList | None = None,
) -> list[Finding]:
    """Check ``cert`` for use with Entra CBA; return one :class:`Finding` per check.

    ``expected_upn`` makes ``upn.match`` (case-insensitive). ``ca_bundle`` (certificates or
    PEM bytes) makes ``chain``: path validation up to a self-signed root in the bundle.
    ``crl`` makes ``revocation``. Each of the three is a ``skip`` finding without its
    input. ``now`` defaults to the current UTC time.
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
    bundle: list[x509.Certificate] | None = None
    if ca_bundle is not None:
        bundle = load_certificates(ca_bundle) if isinstance(ca_bundle, bytes) else list(ca_bundle)
        findings.append(_check_chain(cert, bundle, moment))
    else:
        findings.append(Finding("chain", "skip", "not checked: no CA bundle given",
                                "give the CA certificates uploaded to Entra (--ca-bundle FILE)"))
    findings.append(_check_revocation(cert, crl, bundle, moment))
    return findings


def _check_revocation(cert: x509.Certificate, crl: x509.CertificateRevocationList | None,
                      bundle: list[x509.Certificate] | None, moment: _dt.datetime) -> Finding:
    """Is *cert* on *crl*? The CRL must come from the certificate's issuer (name, and
    signature when the issuer is in *bundle*); a CRL past its nextUpdate is a warning."""
    if crl is None:
        return Finding("revocation", "skip", "not checked: no CRL given",
                       "give the issuing CA's current CRL (--crl FILE; a lab CA keeps it "
                       "in DIR/crl.pem)")
    if crl.issuer != cert.issuer:
        return Finding("revocation", "fail",
                       f"the CRL is from {crl.issuer.rfc4514_string()}, not from the "
                       f"certificate's issuer {cert.issuer.rfc4514_string()}",
                       "give the CRL of the CA that issued the certificate")
    issuers = [c for c in bundle or [] if c.subject == crl.issuer]
    if issuers and not any(_crl_signed_by(crl, c) for c in issuers):
        return Finding("revocation", "fail", "the CRL's signature does not verify with the "
                       "issuing CA from the bundle", "get the CRL from the CA itself")
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is not None:
        return Finding("revocation", "fail",
                       f"the certificate (serial {cert.serial_number:x}) is revoked "
                       f"since {entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC",
                       "enroll again: pivtool enroll --upn USER@DOMAIN --force")
    signed = " (signature checked)" if issuers else ""
    nxt = crl.next_update_utc
    if nxt is not None and nxt < moment:
        return Finding("revocation", "warn",
                       f"not on the CRL{signed}, but the CRL expired on {nxt:%Y-%m-%d}",
                       "get the CA's current CRL")
    return _pass("revocation", f"not revoked: not on the CRL of {crl.issuer.rfc4514_string()}"
                               f"{signed}")


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return bool(crl.is_signature_valid(issuer.public_key()))  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm):
        return False
