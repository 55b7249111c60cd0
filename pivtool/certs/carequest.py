"""What the lab CA (pivtool/certs/ca.py) checks in a request before it signs anything.

The CSR's key (proof of possession, supported types and sizes), its SAN (the UPNs and
e-mails the certificate will carry) and policies, the certificate policies the CA copies,
and the CA's optional attestation requirement (the key must have been generated on a
YubiKey with at least the CA's PIN and touch policies). Pure checks: they raise
:class:`CertRequestRefusedError` (or :class:`CertInputError` for bad settings) and never touch
the CA's index.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from .cafiles import ATTESTATION_ROOTS_FILE, load_csr
from .errors import CertInputError, CertRequestRefusedError, LabCAError
from .profile import UPN_OID, decode_upn, parse_email, parse_upn

#: An attestation given with a request: (attestation certificate, [f9 certificate, ...]).
AttestationChain = tuple[x509.Certificate, list[x509.Certificate]]


def check_request_key(request: x509.CertificateSigningRequest,
                      min_rsa_bits: int) -> CertificatePublicKeyTypes:
    """The CSR's public key once its signature verifies and its type and size are ones the
    CA issues for (RSA of at least *min_rsa_bits*, ECC P-256/384/521, Ed25519)."""
    try:
        public_key = request.public_key()
        valid = request.is_signature_valid
    except Exception as e:  # any parse failure means "refuse"
        raise CertRequestRefusedError("CSR public key or signature cannot be processed") from e
    if not valid:
        raise CertRequestRefusedError(
            "CSR signature does not verify (proof of possession failed)"
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 1024:
            raise CertRequestRefusedError(f"RSA key of {public_key.key_size} bits is too small")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise CertRequestRefusedError(f"EC curve {public_key.curve.name} is not supported")
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise CertRequestRefusedError(
            "CSR key type is not supported (use RSA, ECC P-256/P-384 or Ed25519)"
        )
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < min_rsa_bits:
        raise CertRequestRefusedError(
            f"RSA key of {public_key.key_size} bits is too small (this CA wants at least "
            f"{min_rsa_bits}; 'ca init --min-rsa-bits 1024' makes one that takes less)")
    return public_key


def check_request_extensions(
    request: x509.CertificateSigningRequest,
) -> tuple[list[str], list[str], list[x509.PolicyInformation]]:
    """The CSR's UPNs, e-mails (at least one of them) and requested policy OIDs."""
    try:
        extensions = request.extensions
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as e:
        raise CertRequestRefusedError(
            "CSR has no subject alternative name (UPN or e-mail needed)"
        ) from e
    except ValueError as e:
        raise CertRequestRefusedError("CSR has a malformed extension") from e
    upns: list[str] = []
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id != UPN_OID:
            continue
        try:
            upns.append(parse_upn(decode_upn(other.value)))
        except CertInputError as e:
            raise CertRequestRefusedError(f"CSR UPN rejected: {e}") from e
    emails: list[str] = []
    for email in san.get_values_for_type(x509.RFC822Name):
        try:
            emails.append(parse_email(email))
        except CertInputError as e:
            raise CertRequestRefusedError(f"CSR e-mail rejected: {e}") from e
    if not upns and not emails:
        raise CertRequestRefusedError("CSR SAN has neither a UPN nor an e-mail address")
    policies: list[x509.PolicyInformation] = []
    with contextlib.suppress(x509.ExtensionNotFound):
        requested = extensions.get_extension_for_class(x509.CertificatePolicies).value
        # Copy the policy OIDs only: qualifiers (CPS URLs, notices) are the CA's to set.
        policies = [x509.PolicyInformation(p.policy_identifier, None) for p in requested]
    return upns, emails, policies


def dropped_policies(csr: x509.CertificateSigningRequest | bytes,
                     allowed: list[str]) -> list[str]:
    """The policy OIDs *csr* asks for that are not on the CA's allow-list *allowed*."""
    try:
        requested = load_csr(csr).extensions.get_extension_for_class(
            x509.CertificatePolicies).value
    except (x509.ExtensionNotFound, ValueError, CertInputError):
        return []
    keep = set(allowed)
    return [p.policy_identifier.dotted_string for p in requested
            if p.policy_identifier.dotted_string not in keep]


def attestation_requirement(roots_pem: bytes | None, min_pin_policy: str | None,
                            min_touch_policy: str | None) -> dict[str, Any]:
    """The CA's attestation setting (``ca.json``'s ``attestation``) once its values are
    checked: known policy names, a roots file that holds at least one PEM certificate."""
    from .attestation import PIN_STRENGTH, TOUCH_STRENGTH

    if min_pin_policy is not None and min_pin_policy not in PIN_STRENGTH:
        raise CertInputError(f"unknown PIN policy {min_pin_policy!r}")
    if min_touch_policy is not None and min_touch_policy not in TOUCH_STRENGTH:
        raise CertInputError(f"unknown touch policy {min_touch_policy!r}")
    if roots_pem is not None:
        try:
            if not x509.load_pem_x509_certificates(roots_pem):
                raise ValueError
        except ValueError:
            raise CertInputError("the attestation roots file holds no PEM "
                                 "certificate") from None
    return {"roots": roots_pem is not None, "min_pin_policy": min_pin_policy,
            "min_touch_policy": min_touch_policy}


def check_attestation(directory: Path, policy: dict[str, Any] | None,
                      public_key: CertificatePublicKeyTypes,
                      attestation: AttestationChain | None,
                      required: bool) -> dict[str, Any] | None:
    """What a verified attestation of *public_key* says (recorded in the index), or None
    when neither the caller (*required*) nor the CA's *policy* asks for one.

    The chain must verify to the CA's own roots file in *directory* when it has one (else
    Yubico's roots), the attested key must be the CSR's, and its PIN and touch policies at
    least the CA's minimums."""
    from .attestation import check_attestation_for_key

    if not required and policy is None:
        return None
    if attestation is None:
        raise CertRequestRefusedError(
            "this CA issues only for attested keys: give the key's attestation and f9 "
            "certificate (ca issue --require-attestation ATTEST,F9)")
    policy = policy or {}
    roots = None
    if policy.get("roots"):
        try:
            roots = x509.load_pem_x509_certificates(
                (directory / ATTESTATION_ROOTS_FILE).read_bytes())
        except (OSError, ValueError) as e:
            raise LabCAError(f"{ATTESTATION_ROOTS_FILE} in {directory} is missing or "
                             "unreadable") from e
    chain, facts = check_attestation_for_key(
        public_key, attestation[0], attestation[1], roots,
        min_pin_policy=policy.get("min_pin_policy"),
        min_touch_policy=policy.get("min_touch_policy"))
    return {"yubikey_serial": facts.serial, "firmware": facts.firmware,
            "pin_policy": facts.pin_policy, "touch_policy": facts.touch_policy,
            "verified_to": chain.root}
