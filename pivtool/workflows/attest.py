"""Key attestation (``keys attest``): the card vouches that a slot's key was generated on it.

:func:`attest_key` asks the card (a YubiKey extension) for the attestation certificate of a
slot's key, checks the chain attestation -> the card's f9 certificate -> a trusted root
(the chain logic is X.509 and lives in ``pivtool/certs/attestation.py``), and compares the
attested key with the slot's. Enroll hands the same attestation to an issuer that wants it
(``pivtool/workflows/issuers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import ApduError, NotSupportedError, PivToolError, UsageError
from ..piv.constants import Origin, Slot
from ..piv.session import PivSession
from .keys import EmptySlotError, cert_has_key, slot_probe

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs.attestation import ChainResult

ATTESTATION_SCHEMA = "pivtool.attestation/1"


@dataclass
class Attestation:
    """An attestation certificate, what it says about the key, and whether it proves it."""

    slot: Slot
    certificate: x509.Certificate
    firmware: str | None
    serial: int | None
    pin_policy: str | None
    touch_policy: str | None
    form_factor: str | None
    signed_by_f9: bool | None  # None: the card has no F9 certificate to check against
    matches_slot_key: bool | None
    chain: ChainResult | None = None  # None: no f9 certificate, nothing to chain
    f9: x509.Certificate | None = None  # the card's f9 certificate, when it has one

    @property
    def verified(self) -> bool:
        """True only when the chain reaches a trusted root (and the key matches the slot's,
        where the card can tell)."""
        return bool(self.chain and self.chain.verified) and self.matches_slot_key is not False

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.attestation/1``: ``slot``, ``firmware``, ``serial``,
        ``pin_policy``, ``touch_policy``, ``form_factor`` (from Yubico's extensions: claims,
        worth something only when ``verified``), ``signed_by_f9`` (signature checked against
        the card's f9 certificate), ``verified`` (the chain reaches a trusted root),
        ``verified_to`` (that root's subject or null), ``chain`` (subjects, attestation
        first), ``reason`` (why not verified, or null), ``matches_slot_key``, ``certificate``
        (summary) and ``pem``."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.inspect import summarize

        chain = self.chain.to_json() if self.chain else {
            "verified": False, "verified_to": None, "chain": [],
            "reason": "the card has no f9 certificate"}
        if self.matches_slot_key is False:
            chain = {**chain, "reason": "the attested key is not the key in the slot"}
        return {"schema": ATTESTATION_SCHEMA, "slot": f"{self.slot.value:02x}",
                "firmware": self.firmware, "serial": self.serial,
                "pin_policy": self.pin_policy, "touch_policy": self.touch_policy,
                "form_factor": self.form_factor, "signed_by_f9": self.signed_by_f9,
                **chain, "verified": self.verified,
                "matches_slot_key": self.matches_slot_key,
                "certificate": summarize(self.certificate).to_json(),
                "pem": self.certificate.public_bytes(Encoding.PEM).decode("ascii")}


def _parse_attestation(slot: Slot, cert: x509.Certificate) -> Attestation:
    from ..certs.attestation import attestation_facts

    f = attestation_facts(cert)
    return Attestation(slot, cert, f.firmware, f.serial, f.pin_policy, f.touch_policy,
                       f.form_factor, None, None)


def _refusal(e: ApduError) -> str:
    """The card's refusal of ATTEST in words (the session's message names the step)."""
    text = str(e)
    return text.split(": ", 1)[1] if text.startswith("attest ") and ": " in text else text


def attest_key(session: PivSession, slot: Slot,
               roots: list[x509.Certificate] | None = None) -> Attestation:
    """Ask the card to attest the key in *slot* (generated on the card only), check the
    chain attestation -> card's f9 certificate -> *roots* (default: Yubico's published PIV
    attestation roots) and the attested key against the slot's. No PIN needed."""
    if session.version is None:
        raise NotSupportedError("attestation is a YubiKey extension; this is a generic PIV "
                                "card")
    if slot is Slot.ATTESTATION:
        raise UsageError("the attestation key cannot attest itself; its certificate is "
                         "'pivtool certs export f9'")
    probe = slot_probe(session, slot)
    md = probe.metadata
    if probe.empty:
        raise EmptySlotError(f"slot {slot.label} holds no key")
    if md is not None and md.origin is Origin.IMPORTED:
        raise PivToolError(f"slot {slot.label} holds an imported key; only keys generated "
                           "on the card can be attested")
    # An origin the card did not state (or a slot it could not report) is the card's to
    # judge: it attests the key, or says why not.
    try:
        cert = session.attest_key(slot)
    except ApduError as e:
        raise PivToolError(f"the card refused to attest slot {slot.label}: "
                           f"{_refusal(e)}") from e
    att = _parse_attestation(slot, cert)
    from ..certs.attestation import signed_by, verify_attestation

    try:
        f9 = session.get_certificate(Slot.ATTESTATION)
    except PivToolError:
        f9 = None
    if f9 is not None:
        att.signed_by_f9 = signed_by(cert, f9)
        att.chain = verify_attestation(cert, f9, roots)
        att.f9 = f9
    if md is not None:
        att.matches_slot_key = cert_has_key(cert, md.public_key())
    return att
