"""PIV protocol codes (SP 800-73-4 Part 2 + YubiKey extensions) as enums.

Each code is converted to its enum once, at the public boundary; inside pivtool only the enums
travel. Names for users follow ykman's (``eccp256``, ``match-once``...) so admins can move
between the two tools without relearning vocabulary.
"""

from __future__ import annotations

from enum import Enum, IntEnum, unique

PIV_AID = bytes.fromhex("A000000308")
#: PIX of the PIV application as SP 800-73-4 Part 1 §2.2 gives it in the APT (tag 4F).
PIV_AID_FULL = bytes.fromhex("A00000030800001000")
MGMT_AID = bytes.fromhex("A000000527471117")

DEFAULT_PIN = b"123456"
DEFAULT_PUK = b"12345678"
DEFAULT_MGMT_KEY = bytes.fromhex("010203040506070801020304050607080102030405060708")
PIN_MIN, PIN_MAX = 6, 8


@unique
class Ins(IntEnum):
    """Instruction bytes (SP 800-73-4 Part 2 §3; YubiKey extensions F6–FF)."""

    SELECT = 0xA4
    GET_DATA = 0xCB
    PUT_DATA = 0xDB
    VERIFY = 0x20
    CHANGE_REFERENCE = 0x24
    RESET_RETRY = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GENERATE_ASYMMETRIC = 0x47
    GET_RESPONSE = 0xC0
    # YubiKey extensions
    MOVE_KEY = 0xF6  # also DELETE KEY with P1=FF (fw 5.7)
    GET_METADATA = 0xF7
    GET_SERIAL = 0xF8
    ATTEST = 0xF9
    SET_PIN_RETRIES = 0xFA
    RESET = 0xFB
    GET_VERSION = 0xFD
    IMPORT_KEY = 0xFE
    SET_MGMT_KEY = 0xFF


@unique
class KeyRef(IntEnum):
    """Key references for VERIFY/CHANGE/RESET RETRY and metadata (SP 800-73-4 Part 1 Table 4)."""

    PIN = 0x80
    PUK = 0x81
    MGMT = 0x9B


@unique
class Slot(IntEnum):
    """Key slots. 9A/9C/9D/9E are the named PIV keys, 82–95 the retired key-management keys,
    F9 the YubiKey attestation key."""

    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C
    KEY_MANAGEMENT = 0x9D
    CARD_AUTH = 0x9E
    RETIRED1 = 0x82
    RETIRED2 = 0x83
    RETIRED3 = 0x84
    RETIRED4 = 0x85
    RETIRED5 = 0x86
    RETIRED6 = 0x87
    RETIRED7 = 0x88
    RETIRED8 = 0x89
    RETIRED9 = 0x8A
    RETIRED10 = 0x8B
    RETIRED11 = 0x8C
    RETIRED12 = 0x8D
    RETIRED13 = 0x8E
    RETIRED14 = 0x8F
    RETIRED15 = 0x90
    RETIRED16 = 0x91
    RETIRED17 = 0x92
    RETIRED18 = 0x93
    RETIRED19 = 0x94
    RETIRED20 = 0x95
    ATTESTATION = 0xF9

    @property
    def object_id(self) -> ObjectId:
        """The data object holding this slot's certificate."""
        return _SLOT_OBJECTS[self]

    @property
    def label(self) -> str:
        """Short user-facing label, e.g. ``9a (authentication)``."""
        return f"{self.value:02x} ({_SLOT_NAMES.get(self, self.name.lower())})"

    @classmethod
    def parse(cls, text: str) -> Slot:
        """Parse ``9a``, ``0x9a``, ``authentication``, ``card-authentication``, ``82``...

        Raises ``ValueError`` with the accepted forms."""
        t = text.strip().lower().replace("_", "-")
        for slot, name in _SLOT_NAMES.items():
            if t == name:
                return slot
        if t.startswith("retired") and t[7:].strip("-").isdigit():
            return cls[f"RETIRED{int(t[7:].strip('-'))}"]
        try:
            return cls(int(t.removeprefix("0x"), 16))
        except ValueError:
            pass
        raise ValueError(
            f"unknown slot {text!r}: use 9a|authentication, 9c|signature, 9d|key-management, "
            "9e|card-authentication, 82..95 or f9"
        )


_SLOT_NAMES: dict[Slot, str] = {
    Slot.AUTHENTICATION: "authentication",
    Slot.SIGNATURE: "signature",
    Slot.KEY_MANAGEMENT: "key-management",
    Slot.CARD_AUTH: "card-authentication",
    Slot.ATTESTATION: "attestation",
}

#: The usual order for listing: the named slots, then retired, then attestation.
SLOT_ORDER: tuple[Slot, ...] = tuple(Slot)


@unique
class ObjectId(IntEnum):
    """PIV data object tags (SP 800-73-4 Part 1 Table 3) and YubiKey's own objects."""

    CARD_AUTH = 0x5FC101
    CHUID = 0x5FC102
    FINGERPRINTS = 0x5FC103
    AUTHENTICATION = 0x5FC105
    SECURITY = 0x5FC106
    CAPABILITY = 0x5FC107  # CCC
    FACIAL = 0x5FC108
    PRINTED = 0x5FC109  # YubiKey: holds ykman's PIN-protected data
    SIGNATURE = 0x5FC10A
    KEY_MANAGEMENT = 0x5FC10B
    KEY_HISTORY = 0x5FC10C
    RETIRED1 = 0x5FC10D
    RETIRED2 = 0x5FC10E
    RETIRED3 = 0x5FC10F
    RETIRED4 = 0x5FC110
    RETIRED5 = 0x5FC111
    RETIRED6 = 0x5FC112
    RETIRED7 = 0x5FC113
    RETIRED8 = 0x5FC114
    RETIRED9 = 0x5FC115
    RETIRED10 = 0x5FC116
    RETIRED11 = 0x5FC117
    RETIRED12 = 0x5FC118
    RETIRED13 = 0x5FC119
    RETIRED14 = 0x5FC11A
    RETIRED15 = 0x5FC11B
    RETIRED16 = 0x5FC11C
    RETIRED17 = 0x5FC11D
    RETIRED18 = 0x5FC11E
    RETIRED19 = 0x5FC11F
    RETIRED20 = 0x5FC120
    IRIS = 0x5FC121
    SM_CERT_SIGNER = 0x5FC122
    PAIRING_CODE_REF = 0x5FC123
    DISCOVERY = 0x7E
    BIT_GROUP = 0x7F61
    ATTESTATION = 0x5FFF01  # YubiKey: F9 attestation certificate
    PIVMAN = 0x5FFF00  # ykman's PIVMAN data (flags, salt, PIN timestamp)

    @classmethod
    def parse(cls, text: str) -> ObjectId | int:
        """Parse a name (``chuid``, ``ccc``) or hex tag (``5fc102``); unknown tags stay ints."""
        t = text.strip().lower().replace("-", "_")
        aliases = {"ccc": cls.CAPABILITY, "pivman": cls.PIVMAN, "protected": cls.PRINTED}
        if t in aliases:
            return aliases[t]
        if t.upper() in cls.__members__:
            return cls[t.upper()]
        try:
            value = int(t.removeprefix("0x"), 16)
        except ValueError:
            raise ValueError(f"unknown object {text!r}: a name (chuid, ccc) or hex tag") from None
        try:
            return cls(value)
        except ValueError:
            return value


_SLOT_OBJECTS: dict[Slot, ObjectId] = {
    Slot.AUTHENTICATION: ObjectId.AUTHENTICATION,
    Slot.SIGNATURE: ObjectId.SIGNATURE,
    Slot.KEY_MANAGEMENT: ObjectId.KEY_MANAGEMENT,
    Slot.CARD_AUTH: ObjectId.CARD_AUTH,
    Slot.ATTESTATION: ObjectId.ATTESTATION,
    **{Slot[f"RETIRED{i}"]: ObjectId[f"RETIRED{i}"] for i in range(1, 21)},
}


@unique
class KeyType(IntEnum):
    """Asymmetric algorithm identifiers (SP 800-78-4 Table 6-2; YubiKey 5.7 additions)."""

    RSA1024 = 0x06
    RSA2048 = 0x07
    RSA3072 = 0x05  # YubiKey 5.7 and later
    RSA4096 = 0x16  # YubiKey 5.7 and later
    ECCP256 = 0x11
    ECCP384 = 0x14
    ED25519 = 0xE0  # YubiKey 5.7 and later (Yubico's value; not in SP 800-78-4)
    X25519 = 0xE1  # YubiKey 5.7 and later (Yubico's value; not in SP 800-78-4)

    @property
    def is_rsa(self) -> bool:
        """True for the RSA key types."""
        return self.name.startswith("RSA")

    @property
    def bits(self) -> int:
        """Key size in bits (256 for the 25519 types)."""
        if self in (KeyType.ED25519, KeyType.X25519):
            return 256
        return int("".join(c for c in self.name if c.isdigit()))

    @property
    def label(self) -> str:
        """ykman's lower-case name: ``rsa2048``, ``eccp256``, ``ed25519``..."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> KeyType:
        """Parse ykman's names (case-insensitive, also ``p256``/``ecp384``/``rsa-2048``)."""
        t = text.strip().upper().replace("-", "").replace("_", "")
        aliases = {"P256": "ECCP256", "P384": "ECCP384", "ECP256": "ECCP256",
                   "ECP384": "ECCP384"}
        t = aliases.get(t, t)
        if t in cls.__members__:
            return cls[t]
        raise ValueError(f"unknown algorithm {text!r}: use one of "
                         + ", ".join(k.label for k in cls))


@unique
class MgmtKeyType(IntEnum):
    """Management key algorithms (SP 800-78-4 Table 6-1)."""

    TDES = 0x03  # three-key 3DES: the factory default before YubiKey 5.7
    AES128 = 0x08
    AES192 = 0x0A  # the factory default from YubiKey 5.7
    AES256 = 0x0C

    @property
    def key_len(self) -> int:
        """Key length in bytes."""
        return 24 if self is MgmtKeyType.TDES else int(self.name[3:]) // 8

    @property
    def block_len(self) -> int:
        """Cipher block length = challenge length in bytes."""
        return 8 if self is MgmtKeyType.TDES else 16

    @property
    def label(self) -> str:
        """User-facing name (``tdes``, ``aes192``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> MgmtKeyType:
        """Parse ``tdes``/``3des``/``aes128``/``aes192``/``aes256``."""
        t = text.strip().upper().replace("-", "")
        t = {"3DES": "TDES", "DES3": "TDES"}.get(t, t)
        if t in cls.__members__:
            return cls[t]
        raise ValueError(f"unknown management key algorithm {text!r}: "
                         "use tdes, aes128, aes192 or aes256")


class _NamedPolicy(IntEnum):
    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> _NamedPolicy:
        t = text.strip().upper().replace("-", "_")
        if t in cls.__members__:
            return cls[t]
        raise ValueError(f"unknown policy {text!r}: use one of "
                         + ", ".join(p.label for p in cls))


@unique
class PinPolicy(_NamedPolicy):
    """When the card asks for the PIN before using a key (YubiKey tag AA)."""

    DEFAULT = 0x00
    NEVER = 0x01
    ONCE = 0x02
    ALWAYS = 0x03
    MATCH_ONCE = 0x04
    MATCH_ALWAYS = 0x05


@unique
class TouchPolicy(_NamedPolicy):
    """When the card asks for a touch before using a key (YubiKey tag AB)."""

    DEFAULT = 0x00
    NEVER = 0x01
    ALWAYS = 0x02
    CACHED = 0x03


class Origin(str, Enum):
    """Where a slot's key came from (GET METADATA tag 03)."""

    GENERATED = "generated"
    IMPORTED = "imported"
    #: Any other value (third-party applets answer 0 for keys they generated): only the
    #: card can judge, e.g. by attesting the key or refusing to.
    UNKNOWN = "unknown"


def effective_pin_policy(slot: Slot, policy: PinPolicy) -> PinPolicy:
    """What a YubiKey applies for DEFAULT: always for 9c (signature), never for 9e (card
    authentication), once elsewhere (Yubico's PIV documentation, "PIN policy")."""
    if policy is not PinPolicy.DEFAULT:
        return policy
    return {Slot.SIGNATURE: PinPolicy.ALWAYS, Slot.CARD_AUTH: PinPolicy.NEVER}.get(
        slot, PinPolicy.ONCE)


def effective_touch_policy(policy: TouchPolicy) -> TouchPolicy:
    """What a YubiKey applies for DEFAULT: no touch."""
    return TouchPolicy.NEVER if policy is TouchPolicy.DEFAULT else policy
