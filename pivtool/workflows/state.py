"""Read a card's whole PIV state in one pass, as plain data (no printing).

The pass is budgeted in APDUs: on a YubiKey with GET METADATA it asks each slot's metadata
once and reads certificate objects only where a key is present or for the four named slots
(a certificate can sit in 9a/9c/9d/9e without a key, e.g. after a key was deleted).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import (
    ApduError,
    BadResponseError,
    NotFoundError,
    NotSupportedError,
)
from ..piv.constants import KeyRef, ObjectId, Slot
from ..piv.encoding import parse_certificate
from ..piv.metadata import NO_METADATA, SlotMetadata
from ..piv.objects import Chuid, PivmanData, ccc_card_id
from ..piv.session import PivSession
from ..piv.version import has_metadata

NAMED_SLOTS = (Slot.AUTHENTICATION, Slot.SIGNATURE, Slot.KEY_MANAGEMENT, Slot.CARD_AUTH)
KEY_SLOTS = tuple(s for s in Slot if s is not Slot.ATTESTATION)

#: JSON schema identifier of :meth:`CardSnapshot.to_json`.
INFO_SCHEMA = "pivtool.info/1"


@dataclass
class Counter:
    """Tries for the PIN or PUK; ``None`` where the card cannot tell without spending one."""

    tries_left: int | None
    tries_total: int | None
    is_default: bool | None

    @property
    def blocked(self) -> bool:
        """True when no tries are left."""
        return self.tries_left == 0


@dataclass
class SlotState:
    """What one slot holds."""

    slot: Slot
    key_algorithm: str | None = None
    pin_policy: str | None = None
    touch_policy: str | None = None
    origin: str | None = None
    public_key: Any = None  # cryptography public key, when known
    certificate: Any = None  # x509.Certificate, when present
    certificate_error: str | None = None
    compressed: bool = False
    #: Why the card could not say whether the slot holds a key (``None``: it could, or the
    #: slot's key is known).
    key_unknown: str | None = None

    def cert_matches_key(self) -> bool | None:
        """Whether the certificate's public key is the slot's key (None if unknown)."""
        if self.certificate is None or self.public_key is None:
            return None
        from ..certs.inspect import public_key_matches

        return public_key_matches(self.certificate, self.public_key)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (see docs/json.md)."""
        from ..certs.inspect import summarize

        key = None
        if self.key_algorithm is not None:
            key = {"algorithm": self.key_algorithm, "pin_policy": self.pin_policy,
                   "touch_policy": self.touch_policy, "origin": self.origin}
        return {
            "slot": f"{self.slot.value:02x}",
            "name": self.slot.label.split(" ", 1)[1].strip("()"),
            "key": key,
            "key_status": "present" if key else ("unknown" if self.key_unknown else "empty"),
            "key_unknown_reason": self.key_unknown,
            "certificate": summarize(self.certificate).to_json() if self.certificate else None,
            "certificate_error": self.certificate_error,
            "certificate_compressed": self.compressed if self.certificate else None,
            "certificate_matches_key": self.cert_matches_key(),
        }


@dataclass
class CardSnapshot:
    """A snapshot of a card's PIV application."""

    reader: str
    is_yubikey: bool
    version: str | None
    serial: int | None
    pin: Counter
    puk: Counter
    mgmt_key_algorithm: str
    mgmt_key_default: bool | None
    mgmt_key_touch: str | None
    mgmt_key_protected: bool
    puk_blocked_by_ykman: bool
    #: ykman's legacy PIN-derived management key (a PIVMAN salt, tag 82).
    mgmt_key_pin_derived: bool
    chuid_guid: str | None
    ccc_card_id: str | None
    slots: list[SlotState] = field(default_factory=list)
    #: Whether the card reports slot keys at all (GET METADATA); without it only slots with
    #: a certificate are known.
    keys_reported: bool = True
    #: Slots without a certificate whose key the card could not report (not "empty").
    unknown_slots: list[Slot] = field(default_factory=list)

    def slot(self, slot: Slot) -> SlotState | None:
        """The state of *slot*, if it holds anything."""
        return next((s for s in self.slots if s.slot == slot), None)

    @property
    def warnings(self) -> list[str]:
        """Things an admin should fix, one line each."""
        out = []
        if self.pin.is_default:
            out.append("the PIN is the factory default (123456): change it")
        if self.puk.is_default:
            out.append("the PUK is the factory default (12345678): change it")
        if self.mgmt_key_default:
            out.append("the management key is the factory default: change it "
                       "(pivtool mgmt-key change --generate --protect)")
        if self.pin.blocked:
            out.append("the PIN is blocked: unblock it with the PUK (pivtool pin unblock)")
        elif self.pin.tries_left is not None and self.pin.tries_left == 1:
            out.append("only 1 PIN try left")
        if self.puk.blocked:
            out.append("the PUK is blocked")
        for s in self.slots:
            if s.cert_matches_key() is False:
                out.append(f"slot {s.slot.label}: the certificate does not match the key")
            if s.certificate_error:
                out.append(f"slot {s.slot.label}: {s.certificate_error}")
        return out

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (schema ``pivtool.info/1``, see docs/json.md)."""
        return {
            "schema": INFO_SCHEMA,
            "reader": self.reader,
            "card": "yubikey" if self.is_yubikey else "piv",
            "version": self.version,
            "serial": self.serial,
            "pin": asdict(self.pin),
            "puk": asdict(self.puk),
            "management_key": {
                "algorithm": self.mgmt_key_algorithm,
                "default": self.mgmt_key_default,
                "touch_policy": self.mgmt_key_touch,
                "protected": self.mgmt_key_protected,
                "pin_derived": self.mgmt_key_pin_derived,
            },
            "chuid": {"guid": self.chuid_guid} if self.chuid_guid else None,
            "ccc": {"card_id": self.ccc_card_id} if self.ccc_card_id else None,
            "slots": [s.to_json() for s in self.slots],
            "slot_keys_reported": self.keys_reported,
            "unknown_slots": [f"{s.value:02x}" for s in self.unknown_slots],
            "warnings": self.warnings,
        }


def _optional(fn: Any, *args: Any, attempts: int = 1) -> Any:
    """*fn*'s answer, or ``None`` when the card has none, refuses, or answers in a way that
    cannot be understood: a fact that is unknown, never a failed read. With *attempts* 2 a
    refused or garbled answer is asked for once more (a garbled PUK metadata answer must not
    make enroll treat a known PUK as unknown)."""
    for _attempt in range(attempts):
        try:
            return fn(*args)
        except NotFoundError:
            return None
        except (ApduError, BadResponseError, NotSupportedError):
            continue
    return None


def _read_cert(session: PivSession, slot: Slot, st: SlotState) -> str | None:
    """Fill *st*'s certificate; return why it could not be read (``None``: read, or no
    certificate object)."""
    try:
        der, st.compressed = session.get_certificate_der(slot)
    except NotFoundError:
        return None
    except BadResponseError as e:
        return str(e)
    except ApduError as e:
        if e.sw in (0x6A80, 0x6A86):
            return None  # a card without this object refuses its tag: no certificate
        return str(e)
    try:
        st.certificate = parse_certificate(der)
    except BadResponseError:
        return "the certificate object does not hold a certificate"
    return None


def read_slot(session: PivSession, slot: Slot, metadata: SlotMetadata | None,
              with_cert: bool = True) -> SlotState:
    """Build a :class:`SlotState` from metadata (if any) and the certificate object."""
    st = SlotState(slot)
    if metadata is not None:
        st.key_algorithm = metadata.key_type.label
        st.pin_policy = metadata.pin_policy.label
        st.touch_policy = metadata.touch_policy.label
        st.origin = metadata.origin.value
        st.public_key = metadata.public_key()
    # An unreadable answer is read once more: reset and enroll --force back up only the
    # certificates they could read, so a transient garbled answer must not pass for a
    # corrupt object (the certificate would then be destroyed without a backup).
    for _attempt in range(2 if with_cert else 0):
        st.certificate_error = _read_cert(session, slot, st)
        if st.certificate_error is None:
            break
    return st


def read_card_state(session: PivSession) -> CardSnapshot:
    """Read everything :command:`pivtool info` shows, spending no PIN try. Every YubiKey
    extension answer is optional: one the card refuses or that cannot be understood leaves
    that fact unknown (PIN tries then come from an empty VERIFY, slot keys from the
    certificates), never a failed read."""
    v = session.version
    meta = v is not None and has_metadata(v)
    serial = _optional(session.get_serial) if v is not None else None
    pm = _optional(session.get_pin_metadata, attempts=2) if meta else None
    if pm is not None and pm.remaining <= pm.total:
        pin = Counter(pm.remaining, pm.total, pm.is_default)
    else:
        pin = Counter(_optional(session.pin_tries_by_verify), None, None)
    um = _optional(session.get_puk_metadata, attempts=2) if meta else None
    if um is not None and um.remaining <= um.total:
        puk = Counter(um.remaining, um.total, um.is_default)
    else:
        puk = Counter(session.learned_tries.get(KeyRef.PUK), None, None)
    mk = _optional(session.get_mgmt_key_metadata, attempts=2) if meta else None
    if mk is not None:
        mk_alg, mk_default, mk_touch = mk.key_type.label, mk.is_default, mk.touch_policy.label
    else:
        # Not reported: the card's witness says which algorithm its key has.
        probed = session.probe_mgmt_key_type()
        mk_alg, mk_default, mk_touch = (probed.label if probed else "unknown"), None, None
    pivman = PivmanData()
    # 5FFF00 is ykman's object on a YubiKey; on other cards it is nobody's.
    raw = _optional(session.get_data, ObjectId.PIVMAN) if session.is_yubikey else None
    if raw:
        with contextlib.suppress(BadResponseError):
            pivman = PivmanData.decode(raw)
    chuid_guid = None
    raw = _optional(session.get_data, ObjectId.CHUID)
    if raw:
        try:
            chuid_guid = Chuid.decode(raw).guid_hex
        except BadResponseError:
            chuid_guid = None
    ccc = None
    raw = _optional(session.get_data, ObjectId.CAPABILITY)
    if raw:
        try:
            ccc = ccc_card_id(raw).hex()
        except BadResponseError:
            ccc = None
    slots: list[SlotState] = []
    unknown: list[Slot] = []
    for slot in KEY_SLOTS:
        probe = session.probe_slot(slot) if meta else None
        md = probe.metadata if probe is not None else None
        why = (probe.reason if probe is not None and probe.unknown
               else None if meta else NO_METADATA)
        want_cert = (not meta) or md is not None or slot in NAMED_SLOTS or why is not None
        st = read_slot(session, slot, md, with_cert=want_cert)
        st.key_unknown = why
        if st.key_algorithm or st.certificate is not None or st.certificate_error:
            slots.append(st)
        elif why is not None:
            unknown.append(slot)
    return CardSnapshot(
        reader=session.connection.reader_name,
        is_yubikey=session.is_yubikey,
        version=str(v) if v else None,
        serial=serial,
        pin=pin,
        puk=puk,
        mgmt_key_algorithm=mk_alg,
        mgmt_key_default=mk_default,
        mgmt_key_touch=mk_touch,
        mgmt_key_protected=pivman.mgmt_key_protected,
        puk_blocked_by_ykman=pivman.puk_blocked,
        mgmt_key_pin_derived=pivman.has_derived_key,
        chuid_guid=chuid_guid,
        ccc_card_id=ccc,
        slots=slots,
        keys_reported=meta,
        unknown_slots=unknown,
    )
