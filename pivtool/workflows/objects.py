"""PIV data objects: the CHUID and CCC, and raw object reads and writes.

The CHUID matters beyond PIV bookkeeping: Windows' smart-card minidriver caches a card's
certificates keyed on the CHUID GUID, so after a certificate changes the GUID must change too
or Windows keeps offering the old certificate (:func:`refresh_chuid`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..core.errors import BadResponseError, NotFoundError, PivToolError, UsageError
from ..piv.constants import ObjectId, Slot
from ..piv.objects import Chuid, build_ccc, ccc_card_id
from ..piv.session import PivSession
from .auth import AdminAuth, Prompter, authenticate

#: Largest object value (the bytes inside the 53 wrapper) a YubiKey 4/5 accepts:
#: yubico-piv-tool's CB_BUF_MAX_YK4 = 3072-byte command buffer minus the PUT DATA framing
#: ``5C 03 xx xx xx 53 82 xx xx`` (9 bytes). The virtual card enforces the same limit.
MAX_OBJECT_SIZE = 3072 - 9

CHUID_SCHEMA = "pivtool.chuid/1"
CCC_SCHEMA = "pivtool.ccc/1"
OBJECT_SCHEMA = "pivtool.object/1"

#: Objects pivtool will not dump: 5FC109 holds ykman's PIN-protected management key.
SECRET_OBJECTS = frozenset({ObjectId.PRINTED})
#: Objects whose careless rewrite breaks the PIN-protected management key (ykman-compatible).
GUARDED_OBJECTS = frozenset({ObjectId.PRINTED, ObjectId.PIVMAN})


class EmptyObjectError(PivToolError):
    """The data object does not exist on the card."""


def object_label(object_id: int) -> str:
    """``5fc102 (chuid)`` style label for known objects, hex for others."""
    try:
        name = ObjectId(object_id).name.lower()
    except ValueError:
        return f"{object_id:x}"
    name = {"capability": "ccc", "printed": "printed/protected"}.get(name, name)
    return f"{object_id:x} ({name})"


def check_object_size(object_id: int, value: bytes) -> None:
    """Raise :class:`UsageError` when *value* does not fit a card object. Call it before the
    card is touched: a refused PUT DATA after authentication wastes the user's PIN entry and
    says only ``6A84``."""
    if len(value) > MAX_OBJECT_SIZE:
        raise UsageError(f"object {object_label(object_id)} would be {len(value)} bytes; a "
                         f"YubiKey holds at most {MAX_OBJECT_SIZE} bytes per object")


def parse_object_id(text: str) -> int:
    """Parse an object name (``chuid``, ``ccc``, ``authentication``...) or hex tag
    (``5fc102``, ``0x5fc102``); :class:`UsageError` for anything else."""
    try:
        oid = int(ObjectId.parse(text))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 0 < oid <= 0xFFFFFF:
        raise UsageError(f"object tag {oid:x} is not 1-3 bytes")
    return oid


# --- CHUID ----------------------------------------------------------------------------


@dataclass
class ChuidInfo:
    """The CHUID object as read (``chuid`` None when absent, ``error`` when unparseable)."""

    chuid: Chuid | None
    raw: bytes | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.chuid/1``: ``present``, ``guid`` (32 hex digits), ``fasc_n``
        (hex), ``expiration`` (ISO date), ``signed`` (issuer signature present), ``error``,
        ``raw`` (hex of the object contents)."""
        c = self.chuid
        return {
            "schema": CHUID_SCHEMA,
            "present": self.raw is not None,
            "guid": c.guid_hex if c else None,
            "fasc_n": c.fasc_n.hex() if c else None,
            "expiration": c.expiration.isoformat() if c else None,
            "signed": bool(c.signature) if c else None,
            "error": self.error,
            "raw": self.raw.hex() if self.raw is not None else None,
        }


def read_chuid(session: PivSession) -> ChuidInfo:
    """Read and decode the CHUID (free to read)."""
    try:
        raw = session.get_data(ObjectId.CHUID)
    except NotFoundError:
        return ChuidInfo(None, None)
    try:
        return ChuidInfo(Chuid.decode(raw), raw)
    except BadResponseError as e:
        return ChuidInfo(None, raw, str(e))


def refresh_chuid(session: PivSession) -> Chuid:
    """Give the CHUID a new random GUID, keeping its FASC-N, expiry and other fields; write a
    fresh CHUID when there is none (or it does not parse). Needs management key."""
    import secrets

    current = read_chuid(session).chuid
    if current is None:
        new = Chuid.generate()
    else:
        new = Chuid(guid=secrets.token_bytes(16), fasc_n=current.fasc_n,
                    expiration=current.expiration, extra=dict(current.extra))
        # The issuer signature covers the old GUID; keeping it would make the object lie.
    session.put_data(ObjectId.CHUID, new.encode())
    return new


def generate_chuid(session: PivSession, prompter: Prompter,
                   allow_last_try: bool = False) -> Chuid:
    """Write a brand-new CHUID (random GUID, test FASC-N). Asks for the management key."""
    authenticate(session, prompter, allow_last_try)
    chuid = Chuid.generate()
    session.put_data(ObjectId.CHUID, chuid.encode())
    return chuid


# --- CCC ------------------------------------------------------------------------------


@dataclass
class CccInfo:
    """The Card Capability Container as read."""

    raw: bytes | None
    card_id: bytes | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.ccc/1``: ``present``, ``card_id`` (hex, tag F0), ``error``,
        ``raw`` (hex)."""
        return {
            "schema": CCC_SCHEMA,
            "present": self.raw is not None,
            "card_id": self.card_id.hex() if self.card_id is not None else None,
            "error": self.error,
            "raw": self.raw.hex() if self.raw is not None else None,
        }


def read_ccc(session: PivSession) -> CccInfo:
    """Read the CCC (free to read)."""
    try:
        raw = session.get_data(ObjectId.CAPABILITY)
    except NotFoundError:
        return CccInfo(None, None)
    try:
        return CccInfo(raw, ccc_card_id(raw))
    except BadResponseError as e:
        return CccInfo(raw, None, str(e))


def generate_ccc(session: PivSession, prompter: Prompter,
                 allow_last_try: bool = False) -> CccInfo:
    """Write a new CCC with a random card identifier. Asks for the management key."""
    authenticate(session, prompter, allow_last_try)
    raw = build_ccc()
    session.put_data(ObjectId.CAPABILITY, raw)
    return CccInfo(raw, ccc_card_id(raw))


# --- raw objects ----------------------------------------------------------------------


@dataclass
class ObjectData:
    """One object's contents (without the 53 wrapper)."""

    object_id: int
    data: bytes

    def to_json(self) -> dict[str, Any]:
        """Schema ``pivtool.object/1``: ``id`` (hex tag), ``name``, ``length``, ``data``
        (hex)."""
        label = object_label(self.object_id)
        return {
            "schema": OBJECT_SCHEMA,
            "id": f"{self.object_id:x}",
            "name": label.split(" ", 1)[1].strip("()") if " " in label else None,
            "length": len(self.data),
            "data": self.data.hex(),
        }


def read_object(session: PivSession, object_id: int) -> ObjectData:
    """GET DATA for any object; :class:`EmptyObjectError` when it does not exist. Refuses
    5FC109, whose contents may be the PIN-protected management key."""
    if object_id in SECRET_OBJECTS:
        raise UsageError(f"object {object_label(object_id)} may hold the PIN-protected "
                         "management key; pivtool does not export it")
    try:
        return ObjectData(object_id, session.get_data(object_id))
    except NotFoundError:
        raise EmptyObjectError(f"object {object_label(object_id)} is empty") from None


@dataclass
class WriteResult:
    """What an object write did."""

    object_id: int
    length: int
    auth: str  # where the management key came from ("default", "protected", "given")
    #: Where the certificate the write replaced was saved (``--force`` on a slot's
    #: certificate object), else ``None``.
    backup: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``schema``, ``id`` (hex), ``length``, ``written`` (true)."""
        return {"schema": "pivtool.object-write/1", "id": f"{self.object_id:x}",
                "length": self.length, "written": True}


def write_object(session: PivSession, prompter: Prompter, object_id: int, data: bytes,
                 force: bool = False, allow_last_try: bool = False) -> WriteResult:
    """PUT DATA *data* into *object_id* after the size check. ykman's objects (5FFF00,
    5FC109) need *force*: rewriting one without the other breaks the PIN-protected
    management key for every tool. So does a slot's certificate object that holds a
    certificate: it is saved to a file (current directory) before it is overwritten."""
    check_object_size(object_id, data)
    if object_id in GUARDED_OBJECTS and not force:
        raise UsageError(f"object {object_label(object_id)} belongs to the PIN-protected "
                         "management key; writing it by hand can lock you out (use --force "
                         "if you know what you do)")
    if not data:
        raise UsageError("empty data would delete the object; refusing")
    slot = _certificate_slot(object_id)
    old_cert = None
    if slot is not None:
        from .certs import _read_slot_cert

        old_cert, _present = _read_slot_cert(session, slot)
        if old_cert is not None and not force:
            raise UsageError(f"object {object_label(object_id)} holds the certificate of slot "
                             f"{slot.label}; use 'pivtool certs import' (which checks it), or "
                             "--force to overwrite it (the certificate is saved to a file "
                             "first)")
    auth: AdminAuth = authenticate(session, prompter, allow_last_try)
    backup = None
    if slot is not None and old_cert is not None:
        from .certs import old_cert_path, save_certificate
        from .keys import card_serial

        backup = str(save_certificate(old_cert, old_cert_path(slot, None, None,
                                                              card_serial(session))))
    session.put_data(object_id, data)
    return WriteResult(object_id, len(data), auth.source, backup)


def _certificate_slot(object_id: int) -> Slot | None:
    """The slot whose certificate lives in *object_id*, if any."""
    return next((s for s in Slot if s.object_id == object_id), None)


def utc_stamp(now: dt.datetime | None = None) -> str:
    """``20250131T120000Z``: a file-name-safe UTC time stamp."""
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
