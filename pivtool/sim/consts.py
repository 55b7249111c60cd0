"""Protocol numbers of the YubiKey PIV and management applets, as the emulator needs them.

Kept inside ``pivtool.sim`` on purpose: the emulator must not share constants with the
client code it judges.
"""

from __future__ import annotations

from enum import IntEnum

# Full PIV AID with version (SP 800-73-4 Part 1, 2.2); SELECT may name any prefix of it.
PIV_AID = bytes.fromhex("A000000308000010000100")
MGMT_AID = bytes.fromhex("A000000527471117")
OTP_AID = bytes.fromhex("A0000005272001")

DEFAULT_PIN = b"123456"
DEFAULT_PUK = b"12345678"
DEFAULT_MGMT_KEY = bytes.fromhex("010203040506070801020304050607080102030405060708")
DEFAULT_RETRIES = 3

# yubico-piv-tool: CB_BUF_MAX_YK4 = 3072 (the applet's command buffer); an object's value
# can use what is left after 5C 03 xx xx xx 53 82 xx xx, i.e. 3072 - 9 = 3063 bytes.
MAX_COMMAND_BUFFER = 3072
MAX_OBJECT_SIZE = MAX_COMMAND_BUFFER - 9


class KeyType(IntEnum):
    """Asymmetric algorithm identifiers (SP 800-78 plus Yubico's 25519 values)."""

    RSA1024 = 0x06
    RSA2048 = 0x07
    RSA3072 = 0x05
    RSA4096 = 0x16
    ECCP256 = 0x11
    ECCP384 = 0x14
    ED25519 = 0xE0
    X25519 = 0xE1

    @property
    def is_rsa(self) -> bool:
        return self in (KeyType.RSA1024, KeyType.RSA2048, KeyType.RSA3072, KeyType.RSA4096)

    @property
    def rsa_bits(self) -> int:
        return {
            KeyType.RSA1024: 1024,
            KeyType.RSA2048: 2048,
            KeyType.RSA3072: 3072,
            KeyType.RSA4096: 4096,
        }[self]

    @property
    def min_firmware(self) -> tuple[int, int, int]:
        if self in (KeyType.RSA3072, KeyType.RSA4096, KeyType.ED25519, KeyType.X25519):
            return (5, 7, 0)
        if self is KeyType.ECCP384:
            return (4, 0, 0)
        return (0, 0, 0)


class MgmtKeyType(IntEnum):
    """Management key algorithms; the value is the P1 of GENERAL AUTHENTICATE."""

    TDES = 0x03
    AES128 = 0x08
    AES192 = 0x0A
    AES256 = 0x0C

    @property
    def key_len(self) -> int:
        return {0x03: 24, 0x08: 16, 0x0A: 24, 0x0C: 32}[int(self)]

    @property
    def block_len(self) -> int:
        return 8 if self is MgmtKeyType.TDES else 16


class PinPolicy(IntEnum):
    DEFAULT = 0
    NEVER = 1
    ONCE = 2
    ALWAYS = 3
    MATCH_ONCE = 4
    MATCH_ALWAYS = 5


class TouchPolicy(IntEnum):
    DEFAULT = 0
    NEVER = 1
    ALWAYS = 2
    CACHED = 3


class Origin(IntEnum):
    GENERATED = 1
    IMPORTED = 2


class FormFactor(IntEnum):
    UNKNOWN = 0x00
    USB_A_KEYCHAIN = 0x01
    USB_A_NANO = 0x02
    USB_C_KEYCHAIN = 0x03
    USB_C_NANO = 0x04
    USB_C_LIGHTNING = 0x05


SLOT_MGMT = 0x9B
SLOT_ATTESTATION = 0xF9
SLOT_BIO = 0x96
REF_PIN = 0x80
REF_PUK = 0x81

KEY_SLOTS: frozenset[int] = frozenset([0x9A, 0x9C, 0x9D, 0x9E, *range(0x82, 0x96), 0xF9])

# YubiKey's default PIN policy per slot: 9C (digital signature) asks for the PIN every time,
# 9E (card authentication) never, everything else once per session.
DEFAULT_PIN_POLICY: dict[int, PinPolicy] = {0x9C: PinPolicy.ALWAYS, 0x9E: PinPolicy.NEVER}

OBJ_DISCOVERY = 0x7E
OBJ_BIT_GROUP = 0x7F61
OBJ_ATTESTATION_CERT = 0x5FFF01
OBJ_PRINTED = 0x5FC109
# SP 800-73-4 Table 2: these containers need the PIN for reading ("PIN" access rule).
PIN_PROTECTED_OBJECTS: frozenset[int] = frozenset([0x5FC103, 0x5FC108, 0x5FC109, 0x5FC121])


def slot_name(slot: int) -> str:
    """Slot id as two hex digits, the way Yubico's tools and the transcript name it."""
    return f"{slot:02x}"
