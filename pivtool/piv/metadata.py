"""What the card says about itself and its keys, as dataclasses: the application property
template of SELECT (SP 800-73-4 Part 2 §3.1.1) and YubiKey GET METADATA (5.3+) for the PIN,
the PUK, the management key and a key slot, with the parsers of their TLVs.

The parsers take the TLVs already split (:func:`pivtool.core.tlv.parse_dict`); sending the
command is :class:`~pivtool.piv.session.PivSession`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import BadResponseError
from ..core.tlv import TlvError, parse_dict, unwrap
from .constants import (
    PIV_AID,
    KeyRef,
    KeyType,
    MgmtKeyType,
    Origin,
    PinPolicy,
    Slot,
    TouchPolicy,
)
from .encoding import parse_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

#: Why a card cannot report slot keys at all (the reason of an unknown :class:`SlotProbe`).
NO_METADATA = "no GET METADATA on this card"


@dataclass(frozen=True)
class ApplicationProperties:
    """The PIV application property template returned by SELECT (SP 800-73-4 Part 2 §3.1.1)."""

    aid: bytes
    label: str | None
    url: str | None
    algorithms: tuple[int, ...]


@dataclass(frozen=True)
class PinMetadata:
    """GET METADATA for the PIN (80) or PUK (81)."""

    is_default: bool | None  # None: the card's answer did not say
    total: int
    remaining: int


@dataclass(frozen=True)
class MgmtKeyMetadata:
    """GET METADATA for the management key (9B)."""

    key_type: MgmtKeyType
    is_default: bool | None  # None: the card's answer did not say
    touch_policy: TouchPolicy


@dataclass(frozen=True)
class SlotMetadata:
    """GET METADATA for a key slot."""

    key_type: KeyType
    pin_policy: PinPolicy
    touch_policy: TouchPolicy
    origin: Origin
    public_key_encoded: bytes

    def public_key(self) -> PublicKeyTypes:
        """The slot's public key as a cryptography object."""
        return parse_public_key(self.key_type, self.public_key_encoded)


@dataclass(frozen=True)
class SlotProbe:
    """What GET METADATA told about a slot: a key (``metadata``), ``empty``, or neither —
    unknown, with ``reason``."""

    metadata: SlotMetadata | None
    empty: bool
    reason: str | None = None

    @property
    def unknown(self) -> bool:
        """True when the card could not say whether the slot holds a key."""
        return self.metadata is None and not self.empty


def parse_application_properties(data: bytes) -> ApplicationProperties:
    """The application property template (61) of a successful SELECT; what is missing or
    malformed in it is left out (the application is selected all the same)."""
    label = url = None
    algs: list[int] = []
    aid = PIV_AID
    try:
        apt = parse_dict(unwrap(data, 0x61)) if data else {}
        aid = apt.get(0x4F, PIV_AID)
        if 0x50 in apt:
            label = apt[0x50].decode("utf-8", "replace")
        if 0x5F50 in apt:
            url = apt[0x5F50].decode("utf-8", "replace")
        if 0xAC in apt:
            algs = [v[0] for t, v in parse_dict(apt[0xAC]).items() if t == 0x80 and v]
    except TlvError:
        pass  # A malformed template is the card's problem; the application is selected.
    return ApplicationProperties(aid, label, url, tuple(algs))


def parse_pin_metadata(ref: KeyRef, items: dict[int, bytes]) -> PinMetadata:
    """GET METADATA of the PIN or PUK: the retry counts (06) and the default flag (05)."""
    retries = items.get(0x06, b"")
    if len(retries) != 2:
        raise BadResponseError(f"the metadata of the {ref.name} holds no retry counts")
    default = items.get(0x05)
    return PinMetadata(default != b"\x00" if default else None, retries[0], retries[1])


def parse_mgmt_key_metadata(items: dict[int, bytes]) -> MgmtKeyMetadata:
    """GET METADATA of the management key. Firmware that omits the algorithm (01) has a 3DES
    key (yubikit's default too); the caller still has it confirmed by the card's witness."""
    try:
        key_type = MgmtKeyType(items.get(0x01, b"\x03")[0])
        policy = items.get(0x02, b"\x00\x01")
        default = items.get(0x05)
        return MgmtKeyMetadata(key_type, default != b"\x00" if default else None,
                               TouchPolicy(policy[1]))
    except (ValueError, IndexError) as e:
        raise BadResponseError("malformed management key metadata") from e


def parse_slot_metadata(slot: Slot, items: dict[int, bytes]) -> SlotMetadata:
    """GET METADATA of a key slot. :class:`BadResponseError` when the answer lacks the
    algorithm or the public key (a missing policy counts as the default, an origin other
    than 1/2 as unknown)."""
    try:
        key_type = KeyType(items[0x01][0])
        public_key = items[0x04]
    except (KeyError, IndexError, ValueError) as e:
        raise BadResponseError(f"the metadata of slot {slot.label} names no key "
                               "algorithm or public key") from e
    policy = items.get(0x02, b"")
    origin = items.get(0x03, b"")
    try:
        pin_policy = PinPolicy(policy[0]) if policy else PinPolicy.DEFAULT
        touch_policy = TouchPolicy(policy[1]) if len(policy) > 1 else TouchPolicy.DEFAULT
    except ValueError:
        pin_policy, touch_policy = PinPolicy.DEFAULT, TouchPolicy.DEFAULT
    origin_value = {1: Origin.GENERATED, 2: Origin.IMPORTED}.get(
        origin[0] if origin else -1, Origin.UNKNOWN)
    return SlotMetadata(key_type, pin_policy, touch_policy, origin_value, public_key)
