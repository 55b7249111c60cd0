"""YubiKey PIV attestation: what an attestation certificate says, and whether it chains to a
trusted attestation root.

A YubiKey attests a key it generated with a certificate signed by its attestation key (slot
f9), whose certificate (the "f9 certificate") Yubico signed in the factory, through
intermediates since the 2024 hierarchy::

    attestation (slot key)  <-  f9 certificate  <-  [Yubico intermediates]  <-  Yubico root

Only the whole chain proves anything: anyone can put a self-made "Yubico" certificate into
f9 and attest keys with it. :func:`verify_attestation` checks every signature up to one of
the trusted roots (Yubico's published roots shipped in ``pivtool/certs/roots/``, see the
README there, or the caller's own, e.g. the virtual YubiKey's). Validity periods and CA flags
are not checked: Yubico's device certificates run to 2050+ and some 2018 f9 certificates
carry no basic constraints (a known manufacturing defect), and the signatures are what bind
the key to the device.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from .errors import CertInputError, CertRequestRefusedError

__all__ = ["AttestationFacts", "ChainResult", "attestation_facts", "check_attestation_for_key",
           "load_certificates", "signed_by", "verify_attestation", "yubico_intermediates",
           "yubico_roots"]

#: Yubico's attestation extensions (developers.yubico.com/PIV/Introduction/PIV_attestation).
OID_FIRMWARE = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.3")
OID_SERIAL = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.7")
OID_POLICY = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.8")
OID_FORM_FACTOR = x509.ObjectIdentifier("1.3.6.1.4.1.41482.3.9")

PIN_POLICIES = {1: "never", 2: "once", 3: "always", 4: "match-once", 5: "match-always"}
TOUCH_POLICIES = {1: "never", 2: "always", 3: "cached"}
FORM_FACTORS = {0: "unknown", 1: "usb-a-keychain", 2: "usb-a-nano", 3: "usb-c-keychain",
                4: "usb-c-nano", 5: "usb-c-lightning", 6: "usb-a-bio", 7: "usb-c-bio"}
#: How strong each policy is, for "at least" requirements (match-* = biometric, at least
#: as strong as the PIN policy of the same frequency).
PIN_STRENGTH = {"never": 0, "once": 1, "match-once": 1, "always": 2, "match-always": 2}
TOUCH_STRENGTH = {"never": 0, "cached": 1, "always": 2}
#: Longest chain walked from f9 to a root (Yubico's has two intermediates).
_MAX_DEPTH = 5
_SLOT_CN = re.compile(r"YubiKey PIV Attestation ([0-9a-fA-F]{2})$")


def _bundled(name: str) -> list[x509.Certificate]:
    data = resources.files("pivtool.certs").joinpath("roots").joinpath(name).read_bytes()
    return x509.load_pem_x509_certificates(data)


def yubico_roots() -> list[x509.Certificate]:
    """Yubico's published PIV attestation roots (pre-2024 PIV root, the 2024 "Yubico
    Attestation Root 1", and the U2F root some 2018 keys' f9 certificates chain to)."""
    return _bundled("yubico-piv-roots.pem")


def yubico_intermediates() -> list[x509.Certificate]:
    """Yubico's published PIV attestation intermediates (untrusted: each must chain)."""
    return _bundled("yubico-piv-intermediates.pem")


def load_certificates(path: str | Path, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM (one or more) or DER file, with a one-line error."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CertInputError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertInputError(f"{what} {path} holds no readable certificate") from None
    return certs


@dataclass
class AttestationFacts:
    """What Yubico's extensions in an attestation certificate say about the key."""

    slot: str | None
    firmware: str | None
    serial: int | None
    pin_policy: str | None
    touch_policy: str | None
    form_factor: str | None

    def to_json(self) -> dict[str, Any]:
        """``slot``, ``firmware``, ``serial``, ``pin_policy``, ``touch_policy``,
        ``form_factor`` (null where the certificate does not say)."""
        return {"slot": self.slot, "firmware": self.firmware, "serial": self.serial,
                "pin_policy": self.pin_policy, "touch_policy": self.touch_policy,
                "form_factor": self.form_factor}


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def attestation_facts(cert: x509.Certificate) -> AttestationFacts:
    """Parse Yubico's extensions (and the slot from the subject) of an attestation."""
    fw = _ext(cert, OID_FIRMWARE)
    serial_der = _ext(cert, OID_SERIAL)
    policy = _ext(cert, OID_POLICY)
    ff = _ext(cert, OID_FORM_FACTOR)
    serial = None
    if serial_der and len(serial_der) >= 3 and serial_der[0] == 0x02 \
            and serial_der[1] == len(serial_der) - 2:
        serial = int.from_bytes(serial_der[2:], "big")
    slot = None
    with contextlib.suppress(ValueError):  # a malformed name: no slot
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        match = _SLOT_CN.search(str(cns[0].value)) if cns else None
        slot = match.group(1).lower() if match else None
    return AttestationFacts(
        slot,
        ".".join(str(b) for b in fw) if fw and len(fw) == 3 else None,
        serial,
        PIN_POLICIES.get(policy[0]) if policy and len(policy) == 2 else None,
        TOUCH_POLICIES.get(policy[1]) if policy and len(policy) == 2 else None,
        FORM_FACTORS.get(ff[0] & 0x0F, f"0x{ff[0]:02x}") if ff else None,
    )


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether *issuer* (name and key) signed *cert*."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, TypeError (unsupported key/algorithm)
        return False
    return True


@dataclass
class ChainResult:
    """The outcome of :func:`verify_attestation`."""

    verified: bool
    root: str | None = None  # the trusted root's subject (RFC 4514) when verified
    chain: list[str] = field(default_factory=list)  # subjects, attestation first
    reason: str | None = None  # why not verified

    def to_json(self) -> dict[str, Any]:
        """``verified``, ``verified_to`` (root subject or null), ``chain``, ``reason``."""
        return {"verified": self.verified, "verified_to": self.root, "chain": self.chain,
                "reason": self.reason}


def verify_attestation(attestation: x509.Certificate, f9: x509.Certificate,
                       roots: list[x509.Certificate] | None = None,
                       intermediates: list[x509.Certificate] | None = None) -> ChainResult:
    """Check *attestation* is signed by *f9* and *f9* chains, signature by signature through
    *intermediates* (plus Yubico's published ones), to one of *roots* (default: Yubico's)."""
    anchors = yubico_roots() if roots is None else roots
    pool = [*(intermediates or []), *yubico_intermediates()]
    chain = [attestation.subject.rfc4514_string(), f9.subject.rfc4514_string()]
    if not signed_by(attestation, f9):
        return ChainResult(False, None, chain, "the attestation is not signed by this f9 "
                                                "certificate")
    current = f9
    for _ in range(_MAX_DEPTH):
        if current in anchors:  # the caller trusts this f9 (or intermediate) directly
            return ChainResult(True, current.subject.rfc4514_string(), chain)
        for root in anchors:
            if signed_by(current, root):
                chain.append(root.subject.rfc4514_string())
                return ChainResult(True, root.subject.rfc4514_string(), chain)
        parent = next((c for c in pool if c != current and signed_by(current, c)), None)
        if parent is None:
            break
        chain.append(parent.subject.rfc4514_string())
        current = parent
    return ChainResult(False, None, chain,
                       f"{current.subject.rfc4514_string() or 'an empty name'} does not chain "
                       "to a trusted attestation root")


def check_attestation_for_key(
    public_key: CertificatePublicKeyTypes, attestation: x509.Certificate,
    f9_bundle: list[x509.Certificate], roots: list[x509.Certificate] | None = None, *,
    min_pin_policy: str | None = None, min_touch_policy: str | None = None,
) -> tuple[ChainResult, AttestationFacts]:
    """What a CA checks before issuing for an attested key: the chain verifies, the attested
    key is *public_key*, and the key's PIN/touch policies are at least the minimums. Raises
    :class:`CertRequestRefusedError` (one line) otherwise."""
    if not f9_bundle:
        raise CertRequestRefusedError("no f9 certificate given with the attestation")
    result = verify_attestation(attestation, f9_bundle[0], roots, f9_bundle[1:])
    if not result.verified:
        raise CertRequestRefusedError(f"attestation NOT verified: {result.reason}")
    if attestation.public_key() != public_key:
        raise CertRequestRefusedError("the CSR's key is not the attested key")
    facts = attestation_facts(attestation)
    if min_pin_policy and PIN_STRENGTH.get(facts.pin_policy or "", -1) \
            < PIN_STRENGTH[min_pin_policy]:
        raise CertRequestRefusedError(
            f"the attested key's PIN policy is {facts.pin_policy or 'unknown'}; this CA "
            f"requires at least {min_pin_policy}")
    if min_touch_policy and TOUCH_STRENGTH.get(facts.touch_policy or "", -1) \
            < TOUCH_STRENGTH[min_touch_policy]:
        raise CertRequestRefusedError(
            f"the attested key's touch policy is {facts.touch_policy or 'unknown'}; this CA "
            f"requires at least {min_touch_policy}")
    return result, facts
