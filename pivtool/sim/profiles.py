"""Card profiles: which kind of PIV card the emulator is.

A :class:`Profile` is a table row of behaviour switches the applet consults; the card's
persistent state names its profile (``CardState.profile``). YubiKey profiles differ mainly
in firmware (the applet's firmware gates do the rest); the NEO, the generic SP 800-73-4
card and the third-party "YubiKey-compatible" Java Card applet switch whole behaviours.

Where the behaviour comes from:

* YubiKey NEO: yubikit's version gates (``piv.py``: ECCP384 and PIN/touch policies need 4.0,
  ATTEST 4.3, GET SERIAL 5.0.3, GET METADATA 5.3, AES management keys 5.4;
  ``core/smartcard``: a NEO gets short APDUs and at most 1390 bytes; ``management.py``:
  the NEO's management applet answers SELECT with a 3.x version string and nothing more),
  Yubico's PIV documentation (retired slots 82-95 are YubiKey 4 and later), and the NEO's
  ATR in OpenSC's card tables.
* generic: NIST SP 800-73-4 only, with the limits real government PIV cards show (see
  /work/shared/pcsc-facts.md "PIV cards in the field").
* yubikey-compatible: the deviations seen on public Java Card PIV applets (same source).

To add a profile, add a :class:`Profile` (usually ``replace(YUBIKEY_57, name=..., ...)``)
to :data:`PROFILES`; a new behaviour switch is a new field with a default that keeps every
existing profile as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from .consts import KEY_SLOTS, SLOT_ATTESTATION, KeyType, MgmtKeyType

# --- ATRs -------------------------------------------------------------------------------


def contact_atr(historical: bytes) -> bytes:
    """A T=1 contact ATR (TA1 13, TD1 81 T=1, TD2 31, TA3 FE, TB3 15) with these
    historical bytes and the check byte TCK, the layout YubiKeys use."""
    body = bytes([0xF0 | len(historical), 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15])
    return _with_tck(body + historical)


def contactless_atr(historical: bytes) -> bytes:
    """The ATR a PC/SC contactless reader builds for an ISO 14443-4 card (PC/SC part 3:
    3B 8n 80 01 historical-bytes TCK)."""
    return _with_tck(bytes([0x80 | len(historical), 0x80, 0x01]) + historical)


def _with_tck(body: bytes) -> bytes:
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


# Compact-TLV historical bytes of a YubiKey 5 ("YubiKey" name): OpenSC's PIV driver keys
# its YubiKey handling on them.
_YK5_HIST = bytes.fromhex("8073C021C057597562694B6579")
#: The contact ATR of a YubiKey 5 NFC on USB.
ATR_YUBIKEY5_USB = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")
#: The same key on a contactless reader. ykman decides USB vs NFC from ATR[1]: with a
#: reader name that is not "Yubico YubiKey ..." (e.g. vpcd's "Virtual PCD 00 00") ykman's
#: read_info only works when the ATR looks contactless.
ATR_YUBIKEY5_NFC = contactless_atr(_YK5_HIST)
#: YubiKey 4 and NEO ATRs as OpenSC's card tables list them ("Yubikey4", "YubikeyNEOr3").
ATR_YUBIKEY4_USB = bytes.fromhex("3BF81300008131FE15597562696B657934D4")
ATR_YUBIKEY_NEO_USB = bytes.fromhex("3BFC1300008131FE15597562696B65794E454F7233E1")
ATR_YUBIKEY_NEO_NFC = contactless_atr(b"YubikeyNEOr3")
#: A plain PIV card: historical bytes that are not compact-TLV (first byte != 0x80), not
#: "Yubikey...", and in no OpenSC ATR table, so OpenSC treats it as a generic PIV-II card.
ATR_GENERIC_PIV = contact_atr(b"pivtoolPIV")
#: A Java Card with a third-party PIV applet loaded (same reasoning as the generic one).
ATR_JAVACARD = contact_atr(b"pivtoolJCOP")

# --- per-slot algorithm limits of a generic card ------------------------------------------

_RSA_P256 = frozenset([KeyType.RSA2048, KeyType.ECCP256])
_RSA_P256_P384 = frozenset([KeyType.RSA2048, KeyType.ECCP256, KeyType.ECCP384])
_RETIRED = frozenset(range(0x82, 0x96))

#: What a typical FIPS 201 card allows: no RSA-1024 any more (SP 800-78-4), P-384 only in
#: the signature and key management slots, no YubiKey algorithms.
GENERIC_SLOT_ALGORITHMS: Mapping[int, frozenset[KeyType]] = MappingProxyType({
    0x9A: _RSA_P256,
    0x9C: _RSA_P256_P384,
    0x9D: _RSA_P256_P384,
    0x9E: _RSA_P256,
    **dict.fromkeys(_RETIRED, _RSA_P256),
})


@dataclass(frozen=True)
class Profile:
    """Behaviour switches of one kind of card. Defaults are a YubiKey 5's behaviour."""

    name: str
    summary: str
    #: Firmware of a card created without ``firmware=``. For YubiKey-like profiles it is
    #: what GET VERSION answers and what the applet's firmware gates compare against.
    firmware: tuple[int, int, int]
    atr_usb: bytes = ATR_YUBIKEY5_USB
    atr_nfc: bytes = ATR_YUBIKEY5_NFC
    #: Whether the PIV applet knows Yubico's instructions (GET VERSION, GET SERIAL, GET
    #: METADATA, ATTEST, IMPORT KEY, RESET, SET PIN RETRIES, SET MANAGEMENT KEY, MOVE KEY);
    #: each is still gated by firmware. False: all of them answer 6D00.
    yubico_ins: bool = True
    #: Which INS (among Yubico's) answer 6D00 whatever the firmware says.
    missing_ins: frozenset[int] = frozenset()
    #: The management applet: "yubikey" (SELECT + READ CONFIG), "select-only" (a NEO: a
    #: version string and nothing else) or "absent" (6A82, as on any other card).
    management: str = "yubikey"
    #: SELECT answer of a "select-only" management applet.
    management_version: str = ""
    #: Whether extended-length APDUs are taken (False: 6700, a short-APDU-only card).
    extended_apdu: bool = True
    #: Longest extended APDU taken; None = a YubiKey's USB CCID limit for its firmware.
    max_apdu: int | None = None
    #: Key references the applet has (GENERATE/IMPORT/AUTHENTICATE elsewhere: 6A86).
    key_slots: frozenset[int] = KEY_SLOTS
    #: Per-slot algorithm limits (GENERATE/IMPORT of anything else: 6A80); None = only
    #: the firmware gates.
    slot_algorithms: Mapping[int, frozenset[KeyType]] | None = None
    #: Whether PIN/touch policy tags (AA, AB) are accepted (False: 6A80 when present).
    policies: bool = True
    #: f9 attestation key and certificate provisioned at the factory.
    attestation_key: bool = True
    #: Factory management key algorithm; None = the firmware's (AES-192 from 5.7).
    mgmt_key_type: MgmtKeyType | None = None
    #: Answer to VERIFY of the PUK (P2 81) with or without data. None: a YubiKey's 6A86.
    verify_puk_sw: int | None = None
    # --- third-party applet deviations (GET METADATA / ATTEST) ---
    #: GET METADATA of an empty slot: 9000 with PIN/touch policy and origin 0 but no
    #: algorithm tag, instead of 6A88.
    metadata_empty_template: bool = False
    #: GET METADATA of a slot holding an imported key answers this SW (e.g. 0002).
    metadata_imported_sw: int | None = None
    #: The origin GET METADATA reports for keys the card generated (a YubiKey: 1).
    generated_origin: int = 1
    #: SW for a reference the applet does not know (a YubiKey: 6A88).
    unknown_reference_sw: int = 0x6A88
    #: ATTEST of an imported key works too (a YubiKey refuses with 6A80).
    attest_imported: bool = False
    #: A YubiKey 5 FIPS (5.7): reports itself FIPS capable for PIV (and FIPS approved
    #: once PIN, PUK and management key are changed from their defaults) and refuses what
    #: the FIPS rules exclude: RSA-1024 and X25519 keys, PIN policy "never", a 3DES
    #: management key (6A80, like any unsupported parameter).
    fips: bool = False
    #: PIN complexity enabled at the factory (YubiKey 5.7+: trivial PINs/PUKs refused).
    pin_complexity: bool = False
    #: Free-form facts for docs and reports (not behaviour).
    notes: tuple[str, ...] = field(default=())

    @property
    def yubikey(self) -> bool:
        """True for Yubico's own devices (YubiKey ATR and management applet)."""
        return self.management != "absent"

    def knows_ins(self, ins: int) -> bool:
        """False when a Yubico INS is absent from this applet regardless of firmware."""
        return self.yubico_ins and ins not in self.missing_ins

    def default_mgmt_key_type(self, firmware: tuple[int, int, int]) -> MgmtKeyType:
        """The factory management key algorithm of a card of this profile."""
        if self.mgmt_key_type is not None:
            return self.mgmt_key_type
        return MgmtKeyType.AES192 if firmware >= (5, 7, 0) else MgmtKeyType.TDES


YUBIKEY_57 = Profile(
    name="yubikey-5.7",
    summary="YubiKey 5 with firmware 5.7 (AES-192 default management key, MOVE KEY, "
            "RSA-3072/4096, Ed25519, X25519)",
    firmware=(5, 7, 1),
)
YUBIKEY_54 = replace(
    YUBIKEY_57,
    name="yubikey-5.4",
    summary="YubiKey 5 with firmware 5.4 (3DES default key, GET METADATA, AES keys possible)",
    firmware=(5, 4, 3),
)
YUBIKEY_43 = replace(
    YUBIKEY_57,
    name="yubikey-4.3",
    summary="YubiKey 4.3 (no GET SERIAL, no GET METADATA; ATTEST and P-384 present)",
    firmware=(4, 3, 7),
    atr_usb=ATR_YUBIKEY4_USB,
)
YUBIKEY_NEO = replace(
    YUBIKEY_57,
    name="yubikey-neo",
    summary="YubiKey NEO PIV applet 1.0.x (no GET SERIAL, GET METADATA or attestation; "
            "3DES only; slots 9a/9c/9d/9e only; short APDUs)",
    firmware=(1, 0, 4),
    atr_usb=ATR_YUBIKEY_NEO_USB,
    atr_nfc=ATR_YUBIKEY_NEO_NFC,
    management="select-only",
    management_version="3.4.9",
    max_apdu=1390,
    key_slots=frozenset([0x9A, 0x9C, 0x9D, 0x9E]),
    policies=False,
    attestation_key=False,
    mgmt_key_type=MgmtKeyType.TDES,
)
YUBIKEY_57_FIPS = replace(
    YUBIKEY_57,
    name="yubikey-5.7-fips",
    summary="YubiKey 5 FIPS with firmware 5.7 (FIPS capable PIV, approved once PIN, PUK "
            "and management key are changed; no RSA-1024, X25519, PIN policy never or 3DES "
            "management key; PIN complexity on)",
    fips=True,
    pin_complexity=True,
    notes=("Yubico: YubiKey 5 FIPS Series PIV exceptions (no RSA-1024, no non-NIST curves, "
           "no PIN policy none); FIPS 140-3 configuration (change PIN, PUK and management "
           "key for Approved mode); ykman's FIPS checks (RSA1024, X25519, PIN policy NEVER, "
           "TDES management key).",),
)
GENERIC = Profile(
    name="generic",
    summary="SP 800-73-4 card without YubiKey extensions (6D00), short APDUs only, PUK "
            "tries unreadable, per-slot algorithm limits, AES-192 management key",
    firmware=(0, 0, 0),
    atr_usb=ATR_GENERIC_PIV,
    atr_nfc=ATR_GENERIC_PIV,
    yubico_ins=False,
    management="absent",
    extended_apdu=False,
    key_slots=KEY_SLOTS - {SLOT_ATTESTATION},
    slot_algorithms=GENERIC_SLOT_ALGORITHMS,
    policies=False,
    attestation_key=False,
    mgmt_key_type=MgmtKeyType.AES192,
    verify_puk_sw=0x6A88,
)
YUBIKEY_COMPATIBLE = replace(
    YUBIKEY_57,
    name="yubikey-compatible",
    summary="third-party Java Card PIV applet answering the YubiKey extensions its own way "
            "(made-up 5.x version, odd GET METADATA answers, origin 0, 6A86, attests any key)",
    firmware=(5, 4, 3),
    atr_usb=ATR_JAVACARD,
    atr_nfc=ATR_JAVACARD,
    management="absent",
    metadata_empty_template=True,
    metadata_imported_sw=0x0002,
    generated_origin=0,
    unknown_reference_sw=0x6A86,
    attest_imported=True,
)

#: Every profile by name, in the order docs and ``--help`` list them.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (YUBIKEY_57, YUBIKEY_57_FIPS, YUBIKEY_54, YUBIKEY_43, YUBIKEY_NEO, GENERIC,
              YUBIKEY_COMPATIBLE)
}
DEFAULT_PROFILE = YUBIKEY_57.name


def get_profile(name: str) -> Profile:
    """The profile called *name*; ``KeyError`` names the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown card profile {name!r} (known: {', '.join(PROFILES)})"
                       ) from None


def profile_for(firmware: tuple[int, int, int], generic: bool = False) -> str:
    """The profile the old ``--firmware``/``--generic`` switches stand for."""
    if generic:
        return GENERIC.name
    if firmware < (4, 0, 0):
        return YUBIKEY_NEO.name
    if firmware < (5, 0, 0):
        return YUBIKEY_43.name
    if firmware < (5, 7, 0):
        return YUBIKEY_54.name
    return YUBIKEY_57.name
