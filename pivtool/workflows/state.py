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
    SecurityStatusError,
)
from ..piv.constants import ObjectId, Slot
from ..piv.objects import Chuid, PivmanData, ccc_card_id
from ..piv.session import PivSession, SlotMetadata, parse_certificate
from ..piv.version import default_mgmt_key_type, has_metadata

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
            "warnings": self.warnings,
        }


def _optional(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (NotFoundError, NotSupportedError):
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
    """Read everything :command:`pivtool info` shows, spending no PIN try."""
    v = session.version
    meta = v is not None and has_metadata(v)
    serial = _optional(session.get_serial) if v is not None else None
    if meta:
        pm, um = session.get_pin_metadata(), session.get_puk_metadata()
        pin = Counter(pm.remaining, pm.total, pm.is_default)
        puk = Counter(um.remaining, um.total, um.is_default)
        mk = session.get_mgmt_key_metadata()
        mk_alg, mk_default, mk_touch = mk.key_type.label, mk.is_default, mk.touch_policy.label
    else:
        pin = Counter(session.pin_tries_by_verify(), None, None)
        puk = Counter(None, None, None)
        mk_alg, mk_default, mk_touch = default_mgmt_key_type(v).label, None, None
    pivman = PivmanData()
    raw = _optional(session.get_data, ObjectId.PIVMAN)
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
    for slot in KEY_SLOTS:
        md: SlotMetadata | None = None
        if meta:
            try:
                md = session.get_slot_metadata(slot)
            except (NotFoundError, SecurityStatusError):
                md = None
            except ApduError:
                md = None
        want_cert = (not meta) or md is not None or slot in NAMED_SLOTS
        st = read_slot(session, slot, md, with_cert=want_cert)
        if st.key_algorithm or st.certificate is not None or st.certificate_error:
            slots.append(st)
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
    )
