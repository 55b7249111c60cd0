"""Firmware versions and the features they gate, as pure functions (tested with made-up
versions, never with a card)."""

from __future__ import annotations

from typing import NamedTuple

from ..core.errors import NotSupportedError
from .constants import KeyType, MgmtKeyType, PinPolicy, TouchPolicy


class Version(NamedTuple):
    """A YubiKey firmware version. Generic PIV cards have none (``None`` where a Version is
    optional)."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``5.7.1``."""
        parts = text.strip().split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"bad firmware version {text!r}: use MAJOR.MINOR.PATCH")
        return cls(*(int(p) for p in parts))

    @classmethod
    def from_bytes(cls, data: bytes) -> Version:
        """Decode GET VERSION's three bytes."""
        if len(data) != 3:
            raise ValueError(f"GET VERSION returned {len(data)} bytes, expected 3")
        return cls(data[0], data[1], data[2])


def has_metadata(v: Version) -> bool:
    """GET METADATA (INS F7) exists from 5.3."""
    return v >= (5, 3, 0)


def has_serial_ins(v: Version) -> bool:
    """GET SERIAL (INS F8) exists from 5.0."""
    return v >= (5, 0, 0)


def has_move_delete(v: Version) -> bool:
    """MOVE KEY / DELETE KEY (INS F6) exist from 5.7."""
    return v >= (5, 7, 0)


def has_aes_mgmt(v: Version) -> bool:
    """AES management keys exist from 5.4."""
    return v >= (5, 4, 0)


def has_attestation(v: Version) -> bool:
    """ATTEST (INS F9) exists from 4.3."""
    return v >= (4, 3, 0)


def default_mgmt_key_type(v: Version | None) -> MgmtKeyType:
    """The factory management key algorithm: AES-192 from 5.7, 3DES before and on generic
    cards (SP 800-78-4 allows either; 3DES is what generic cards ship with)."""
    return MgmtKeyType.AES192 if v is not None and v >= (5, 7, 0) else MgmtKeyType.TDES


def supported_mgmt_key_types(v: Version | None) -> tuple[MgmtKeyType, ...]:
    """Management key algorithms a card accepts for SET MANAGEMENT KEY."""
    if v is not None and has_aes_mgmt(v):
        return tuple(MgmtKeyType)
    return (MgmtKeyType.TDES,)


def check_key_support(v: Version | None, key_type: KeyType,
                      pin_policy: PinPolicy = PinPolicy.DEFAULT,
                      touch_policy: TouchPolicy = TouchPolicy.DEFAULT,
                      generate: bool = True) -> None:
    """Raise :class:`NotSupportedError` when firmware *v* cannot hold this key.

    ``None`` is a generic PIV card: SP 800-78-4 algorithms only, no YubiKey policies.
    """
    if v is None:
        if key_type not in (KeyType.RSA1024, KeyType.RSA2048, KeyType.ECCP256,
                            KeyType.ECCP384):
            raise NotSupportedError(f"{key_type.label} is not a PIV algorithm this card offers")
        if pin_policy != PinPolicy.DEFAULT or touch_policy != TouchPolicy.DEFAULT:
            raise NotSupportedError("PIN/touch policies are a YubiKey extension")
        return
    if key_type in (KeyType.RSA3072, KeyType.RSA4096, KeyType.ED25519, KeyType.X25519) \
            and v < (5, 7, 0):
        raise NotSupportedError(f"{key_type.label} needs YubiKey firmware 5.7 or later "
                                f"(this key has {v})")
    if key_type == KeyType.ECCP384 and v < (4, 0, 0):
        raise NotSupportedError("eccp384 needs YubiKey firmware 4.0 or later")
    if (pin_policy != PinPolicy.DEFAULT or touch_policy != TouchPolicy.DEFAULT) \
            and v < (4, 0, 0):
        raise NotSupportedError("PIN/touch policies need YubiKey firmware 4.0 or later")
    if touch_policy == TouchPolicy.CACHED and v < (4, 3, 0):
        raise NotSupportedError("cached touch policy needs YubiKey firmware 4.3 or later")
    if pin_policy in (PinPolicy.MATCH_ONCE, PinPolicy.MATCH_ALWAYS) and v < (5, 5, 0):
        raise NotSupportedError("match-once/match-always PIN policies need a YubiKey Bio")
    # ROCA (Infineon RSA key generation flaw, CVE-2017-15361): these firmwares must not
    # generate RSA keys on the card.
    if generate and key_type.is_rsa and (4, 2, 0) <= v < (4, 3, 5):
        raise NotSupportedError(f"RSA key generation is disabled on firmware {v} (ROCA)")
    # YubiKey 4 FIPS (firmware 4.4.x), as yubikit's _do_check_key_support: no RSA-1024 and
    # no key without a PIN.
    if (4, 4, 0) <= v < (4, 5, 0):
        if key_type in (KeyType.RSA1024, KeyType.X25519):
            raise NotSupportedError(f"{key_type.label} is not allowed on a YubiKey FIPS "
                                    f"(firmware {v})")
        if pin_policy == PinPolicy.NEVER:
            raise NotSupportedError("PIN policy 'never' is not allowed on a YubiKey FIPS")
