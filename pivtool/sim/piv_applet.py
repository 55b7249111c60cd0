"""The PIV applet (AID A000000308) of the virtual YubiKey.

SP 800-73-4 commands plus the YubiKey extensions, answering with the status words and
TLV layouts a YubiKey 5 uses (checked against yubikit's ``piv.py``, Yubico's APDU
documentation and yubico-piv-tool). Each handler takes a parsed :class:`Command` and
returns response data, or raises :class:`SwError`; the card renders both.

Order of checks, as a YubiKey makes them: parameters and APDU format (6A86, 6700, 6A80),
then security status (6982), then existence (6A82, 6A88), then conditions (6985). Two
orders follow from the command itself: a key slot's PIN policy lives with the key, so
GENERAL AUTHENTICATE must find the key before it can ask for the PIN; and CHANGE
REFERENCE / RESET RETRY COUNTER compare the old PIN or PUK before looking at the new value
(yubikit blocks PIN and PUK with empty blocks and relies on each costing a try).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import keys as keyops
from .apdu import Command, Sw, SwError, retries_sw
from .consts import (
    DEFAULT_MGMT_KEY,
    DEFAULT_PIN,
    DEFAULT_PIN_POLICY,
    DEFAULT_PUK,
    MAX_OBJECT_SIZE,
    OBJ_BIT_GROUP,
    OBJ_DISCOVERY,
    PIN_PROTECTED_OBJECTS,
    PIV_AID,
    REF_PIN,
    REF_PUK,
    SLOT_BIO,
    SLOT_MGMT,
    MgmtKeyType,
    Origin,
    PinPolicy,
    TouchPolicy,
    slot_name,
)
from .piv_keys import KeyCommands
from .state import SlotKey, factory_reset
from .tlv import TlvError, parse, parse_dict, tlv, unwrap

if TYPE_CHECKING:
    from .card import VirtualCard

PIN_BLOCK_LEN = 8
TOUCH_CACHE_SECONDS = 15.0

INS_VERIFY = 0x20
INS_CHANGE_REFERENCE = 0x24
INS_RESET_RETRY = 0x2C
INS_GENERATE = 0x47
INS_AUTHENTICATE = 0x87
INS_GET_DATA = 0xCB
INS_PUT_DATA = 0xDB
INS_MOVE_KEY = 0xF6
INS_GET_METADATA = 0xF7
INS_GET_SERIAL = 0xF8
INS_ATTEST = 0xF9
INS_SET_PIN_RETRIES = 0xFA
INS_RESET = 0xFB
INS_GET_VERSION = 0xFD
INS_IMPORT_KEY = 0xFE
INS_SET_MGMKEY = 0xFF

YUBICO_INS = frozenset(
    [
        INS_MOVE_KEY,
        INS_GET_METADATA,
        INS_GET_SERIAL,
        INS_ATTEST,
        INS_SET_PIN_RETRIES,
        INS_RESET,
        INS_GET_VERSION,
        INS_IMPORT_KEY,
        INS_SET_MGMKEY,
    ]
)

# SELECT answer of a YubiKey 5 (Yubico APDU docs): application property template with
# the PIX (version 01 00) and the coexistent tag allocation authority (NIST's RID).
SELECT_RESPONSE = tlv(0x61, tlv(0x4F, PIV_AID[5:]) + tlv(0x79, tlv(0x4F, PIV_AID[:5])))

# Discovery object as a YubiKey returns it: the PIV AID and PIN usage policy 40 00
# (PIV PIN only, no global PIN, no OCC).
DISCOVERY_OBJECT = tlv(OBJ_DISCOVERY, tlv(0x4F, PIV_AID) + tlv(0x5F2F, b"\x40\x00"))
# BIT group template with zero biometric templates: the applet has no on-card comparison.
BIT_GROUP_OBJECT = tlv(OBJ_BIT_GROUP, tlv(0x02, b"\x00"))


@dataclass
class AppletSession:
    """Security status of one connection; a power cycle or new connection clears it."""

    pin_verified: bool = False
    # A VERIFY not yet consumed by a PIN-always key (PIN_POLICY.ALWAYS means the PIN must
    # be verified right before each use).
    pin_fresh: bool = False
    mgmt_authenticated: bool = False
    mgmt_witness: bytes | None = None
    mgmt_challenge: bytes | None = None
    touch_cached_at: dict[int, float] = field(default_factory=dict)


def _valid_object_tag(tag: int) -> bool:
    # Yubico (.NET SDK "PIV data objects"): on a YubiKey any number from 5F0000 to 5FFFFF
    # is a valid data tag (SP 800-73-4 containers, Yubico's 5FFFxx, and undefined ones an
    # application may use), plus the BIT group template (writable to provision biometrics).
    return 0x5F0000 <= tag <= 0x5FFFFF or tag == OBJ_BIT_GROUP


#: Values a YubiKey with PIN complexity refuses as a new PIN or PUK besides one repeated
#: character. Yubico's Technical Manual has the full blocklist; these are the ones Yubico's
#: own material names (.NET SDK "PIN complexity policy": 12345678, password; ykman's device
#: tests: abc123, password, 123123) plus the factory PIN.
PIN_BLOCKLIST: frozenset[bytes] = frozenset(
    [b"123456", b"12345678", b"123123", b"password", b"abc123"])


def violates_pin_complexity(value: bytes) -> bool:
    """True if *value* is trivial under YubiKey 5.7 PIN complexity: one character repeated
    (111111, 22222222) or a blocklisted value (case-insensitive, as "password" is meant)."""
    return len(set(value)) == 1 or value.lower() in PIN_BLOCKLIST


def _pin_value(block: bytes) -> bytes:
    """The PIN inside an 8-byte FF-padded block (padding stripped)."""
    return block.rstrip(b"\xff")


class PivApplet(KeyCommands):
    """PIV command handlers bound to one :class:`VirtualCard`."""

    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self.session = AppletSession()
        self._key_cache: dict[str, keyops.PrivateKey] = {}
        self.handlers: dict[int, Callable[[Command], bytes]] = {
            INS_VERIFY: self.verify,
            INS_CHANGE_REFERENCE: self.change_reference,
            INS_RESET_RETRY: self.reset_retry_counter,
            INS_GENERATE: self.generate,
            INS_AUTHENTICATE: self.authenticate,
            INS_GET_DATA: self.get_data,
            INS_PUT_DATA: self.put_data,
            INS_MOVE_KEY: self.move_key,
            INS_GET_METADATA: self.get_metadata,
            INS_GET_SERIAL: self.get_serial,
            INS_ATTEST: self.attest,
            INS_SET_PIN_RETRIES: self.set_pin_retries,
            INS_RESET: self.reset,
            INS_GET_VERSION: self.get_version,
            INS_IMPORT_KEY: self.import_key,
            INS_SET_MGMKEY: self.set_management_key,
        }

    # --- plumbing ---------------------------------------------------------------------

    @property
    def fw(self) -> tuple[int, int, int]:
        return self.card.state.firmware

    @property
    def slots(self) -> frozenset[int]:
        """The key references this card's applet has."""
        return self.card.profile.key_slots

    def select(self) -> bytes:
        """SELECT of the PIV AID: the application property template."""
        return SELECT_RESPONSE

    def clear_session(self) -> None:
        self.session = AppletSession()

    def dispatch(self, cmd: Command) -> bytes:
        """Run one (de-chained) command."""
        if cmd.ins in YUBICO_INS and not self.card.profile.knows_ins(cmd.ins):
            # A card that is not a YubiKey (or an applet without this extension) does not
            # know the instruction at all.
            raise SwError(Sw.INS_NOT_SUPPORTED)
        handler = self.handlers.get(cmd.ins)
        if handler is None:
            raise SwError(Sw.INS_NOT_SUPPORTED)
        return handler(cmd)

    def _require_fw(self, minimum: tuple[int, int, int]) -> None:
        # An older YubiKey does not know the instruction at all.
        if self.fw < minimum:
            raise SwError(Sw.INS_NOT_SUPPORTED)

    def _require_mgmt(self) -> None:
        if not self.session.mgmt_authenticated:
            raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)

    def _load(self, slot_key: SlotKey) -> keyops.PrivateKey:
        key = self._key_cache.get(slot_key.private_key_pem)
        if key is None:
            key = keyops.from_pem(slot_key.private_key_pem)
            self._key_cache[slot_key.private_key_pem] = key
        return key

    def _touch(self, slot: int, policy: int) -> None:
        """Wait for a touch when *policy* asks for one (see :mod:`.touch`); 6982 when none
        comes. CACHED: a touch within the last 15 s of this session counts."""
        if policy == TouchPolicy.CACHED:
            last = self.session.touch_cached_at.get(slot)
            if last is not None and time.monotonic() - last < TOUCH_CACHE_SECONDS:
                self.card.log(f"touch cached for slot {slot_name(slot)}")
                return
        elif policy != TouchPolicy.ALWAYS:
            return
        self.card.log(f"touch requested for slot {slot_name(slot)}")
        if not self.card.touch.wait():
            self.card.log(f"no touch for slot {slot_name(slot)}: timed out")
            raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)
        if policy == TouchPolicy.CACHED:
            self.session.touch_cached_at[slot] = time.monotonic()

    # --- PIN / PUK --------------------------------------------------------------------

    def _check_pin(self, block: bytes) -> None:
        """Compare a PIN block with the stored PIN, counting failures (constant time)."""
        st = self.card.state
        if st.pin_retries_left == 0:
            raise SwError(Sw.AUTH_METHOD_BLOCKED)
        if hmac.compare_digest(_pin_value(block), st.pin):
            if st.pin_retries_left != st.pin_retries_total:
                st.pin_retries_left = st.pin_retries_total
                self.card.mark_changed()
            return
        st.pin_retries_left -= 1
        self.card.mark_changed()
        # A failed verification drops the verified state (ISO 7816-4).
        self.session.pin_verified = self.session.pin_fresh = False
        self.card.log(f"PIN verification failed, {st.pin_retries_left} tries left")
        if st.pin_retries_left == 0:
            self.card.log("PIN blocked")
        raise SwError(retries_sw(st.pin_retries_left))

    def _check_puk(self, block: bytes) -> None:
        st = self.card.state
        if st.puk_retries_left == 0:
            raise SwError(Sw.AUTH_METHOD_BLOCKED)
        if hmac.compare_digest(_pin_value(block), st.puk):
            if st.puk_retries_left != st.puk_retries_total:
                st.puk_retries_left = st.puk_retries_total
                self.card.mark_changed()
            return
        st.puk_retries_left -= 1
        self.card.mark_changed()
        self.card.log(f"PUK verification failed, {st.puk_retries_left} tries left")
        if st.puk_retries_left == 0:
            self.card.log("PUK blocked")
        raise SwError(retries_sw(st.puk_retries_left))

    def _new_pin_value(self, block: bytes) -> bytes:
        # A YubiKey insists on 6-8 characters for a new PIN/PUK (6A80), and with PIN
        # complexity on refuses trivial ones with 6985 (Yubico .NET SDK: a PIN complexity
        # violation is ConditionsNotSatisfied; ykman: "does not meet complexity
        # requirement"). Both come after the old value was checked, so neither costs a try
        # when the old value was right.
        value = _pin_value(block)
        if not 6 <= len(value) <= 8:
            raise SwError(Sw.INCORRECT_DATA)
        if self.card.state.pin_complexity and violates_pin_complexity(value):
            self.card.log("new PIN/PUK refused by PIN complexity")
            raise SwError(Sw.CONDITIONS_NOT_SATISFIED)
        return value

    def fips_approved(self) -> bool:
        """A FIPS key's PIV application is in FIPS approved mode once PIN, PUK and
        management key all differ from their factory values (Yubico, FIPS 140-3
        configuration; ykman calls a FIPS key without it "not FIPS approved")."""
        st = self.card.state
        return self.card.profile.fips and not (
            hmac.compare_digest(st.pin, DEFAULT_PIN)
            or hmac.compare_digest(st.puk, DEFAULT_PUK)
            or hmac.compare_digest(st.mgmt_key, DEFAULT_MGMT_KEY))

    def verify(self, cmd: Command) -> bytes:
        """VERIFY (20): PIN check, retry query (no data) or logout (P1=FF)."""
        if cmd.p2 == SLOT_BIO:
            # Not a YubiKey Bio: yubikit maps 6A88 to "biometrics not supported" (a
            # third-party applet may say 6A86 instead).
            raise SwError(self.card.profile.unknown_reference_sw)
        if cmd.p2 == REF_PUK and self.card.profile.verify_puk_sw is not None:
            # SP 800-73-4 lets a card refuse VERIFY of the PUK: its tries are then only
            # learnt by spending one (63Cx of RESET RETRY COUNTER / CHANGE REFERENCE).
            raise SwError(self.card.profile.verify_puk_sw)
        if cmd.p2 != REF_PIN or cmd.p1 not in (0x00, 0xFF):
            raise SwError(Sw.INCORRECT_P1P2)
        if cmd.p1 == 0xFF:
            if cmd.data:
                raise SwError(Sw.INCORRECT_DATA)
            self.session.pin_verified = self.session.pin_fresh = False
            self.card.log("PIN security status reset")
            return b""
        st = self.card.state
        if not cmd.data:
            if self.session.pin_verified:
                return b""
            if st.pin_retries_left == 0:
                raise SwError(Sw.AUTH_METHOD_BLOCKED)
            raise SwError(retries_sw(st.pin_retries_left))
        if len(cmd.data) != PIN_BLOCK_LEN:
            raise SwError(Sw.INCORRECT_DATA)
        self._check_pin(cmd.data)
        self.session.pin_verified = self.session.pin_fresh = True
        self.card.log("PIN verified")
        return b""

    def change_reference(self, cmd: Command) -> bytes:
        """CHANGE REFERENCE DATA (24): P2 80 PIN, 81 PUK; data old || new, 8 bytes each."""
        if cmd.p1 != 0x00 or cmd.p2 not in (REF_PIN, REF_PUK):
            raise SwError(Sw.INCORRECT_P1P2)
        if len(cmd.data) != 2 * PIN_BLOCK_LEN:
            raise SwError(Sw.INCORRECT_DATA)
        old, new = cmd.data[:PIN_BLOCK_LEN], cmd.data[PIN_BLOCK_LEN:]
        st = self.card.state
        # The old value is compared before the new one is looked at, as on a YubiKey:
        # yubikit blocks the PIN and PUK before a reset by sending empty blocks here and
        # counts on each one costing a try.
        if cmd.p2 == REF_PIN:
            self._check_pin(old)
            st.pin = self._new_pin_value(new)
            self.card.log("PIN changed")
        else:
            self._check_puk(old)
            st.puk = self._new_pin_value(new)
            self.card.log("PUK changed")
        self.card.mark_changed()
        return b""

    def reset_retry_counter(self, cmd: Command) -> bytes:
        """RESET RETRY COUNTER (2C): PUK || new PIN unblocks and sets the PIN."""
        if cmd.p1 != 0x00 or cmd.p2 != REF_PIN:
            raise SwError(Sw.INCORRECT_P1P2)
        if len(cmd.data) != 2 * PIN_BLOCK_LEN:
            raise SwError(Sw.INCORRECT_DATA)
        puk, new = cmd.data[:PIN_BLOCK_LEN], cmd.data[PIN_BLOCK_LEN:]
        self._check_puk(puk)  # before the new PIN's format, see change_reference
        st = self.card.state
        st.pin = self._new_pin_value(new)
        st.pin_retries_left = st.pin_retries_total
        self.card.mark_changed()
        self.card.log("PIN unblocked with PUK")
        return b""

    # --- management key -------------------------------------------------------------

    def _mgmt_cipher(self) -> Cipher[modes.ECB]:
        st = self.card.state
        algo = (
            TripleDES(st.mgmt_key)
            if st.mgmt_key_type == MgmtKeyType.TDES
            else (algorithms.AES(st.mgmt_key))
        )
        return Cipher(algo, modes.ECB())

    def _mgmt_authenticate(self, cmd: Command, items: dict[int, bytes]) -> bytes:
        st = self.card.state
        # P1 names the algorithm; 00 is SP 800-78's legacy "3DES" code, which OpenSC still
        # sends for its GET CHALLENGE (87 00 9B, 7C 02 81 00) and a YubiKey answers.
        if cmd.p1 not in (0x00, st.mgmt_key_type):
            # A P1 naming another algorithm is "incorrect parameter in command data" (6A80)
            # on a YubiKey: what clients hardcoding 3DES get from a 5.7 AES-192 key
            # (sigstore/cosign#3742, Yubico.NET.SDK#160).
            raise SwError(Sw.INCORRECT_DATA)
        block = MgmtKeyType(st.mgmt_key_type).block_len
        sess = self.session
        cipher = self._mgmt_cipher()
        # Step 1 of mutual auth: host asks for a witness (80 empty).
        if 0x80 in items and not items[0x80] and 0x81 not in items:
            sess.mgmt_authenticated = False
            sess.mgmt_witness = os.urandom(block)
            enc = cipher.encryptor()
            witness = enc.update(sess.mgmt_witness) + enc.finalize()
            return tlv(0x7C, tlv(0x80, witness))
        # Step 2 of mutual auth: decrypted witness + host challenge.
        if 0x80 in items and 0x81 in items:
            expected, sess.mgmt_witness = sess.mgmt_witness, None
            witness, challenge = items[0x80], items[0x81]
            if expected is None or len(witness) != block or len(challenge) != block:
                raise SwError(Sw.INCORRECT_DATA)
            if not hmac.compare_digest(witness, expected):
                sess.mgmt_authenticated = False
                self.card.log("management key authentication failed")
                raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)
            self._touch(SLOT_MGMT, st.mgmt_touch_policy)
            enc = cipher.encryptor()
            response = enc.update(challenge) + enc.finalize()
            sess.mgmt_authenticated = True
            self.card.log("management key authenticated")
            return tlv(0x7C, tlv(0x82, response))
        # Single (card-to-host) authentication: 81 empty asks for a challenge ...
        if 0x81 in items and not items[0x81]:
            sess.mgmt_authenticated = False
            sess.mgmt_challenge = os.urandom(block)
            return tlv(0x7C, tlv(0x81, sess.mgmt_challenge))
        # ... and 82 carries the encrypted challenge back.
        if items.get(0x82):
            issued, sess.mgmt_challenge = sess.mgmt_challenge, None
            if issued is None or len(items[0x82]) != block:
                raise SwError(Sw.INCORRECT_DATA)
            enc = cipher.encryptor()
            expected = enc.update(issued) + enc.finalize()
            if not hmac.compare_digest(items[0x82], expected):
                self.card.log("management key authentication failed")
                raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)
            self._touch(SLOT_MGMT, st.mgmt_touch_policy)
            sess.mgmt_authenticated = True
            self.card.log("management key authenticated")
            return b""
        raise SwError(Sw.INCORRECT_DATA)

    def set_management_key(self, cmd: Command) -> bytes:
        """SET MANAGEMENT KEY (FF): P1 FF; P2 FF no touch, FE touch; data alg 9B len key."""
        if cmd.p1 != 0xFF or cmd.p2 not in (0xFF, 0xFE, 0xFD):
            raise SwError(Sw.INCORRECT_P1P2)
        self._require_mgmt()
        if len(cmd.data) < 3:
            raise SwError(Sw.INCORRECT_DATA)
        try:
            key_type = MgmtKeyType(cmd.data[0])
            items = parse(cmd.data[1:])
        except (ValueError, TlvError):
            raise SwError(Sw.INCORRECT_DATA) from None
        if len(items) != 1 or items[0][0] != SLOT_MGMT:
            raise SwError(Sw.INCORRECT_DATA)
        new_key = items[0][1]
        if key_type is not MgmtKeyType.TDES and self.fw < (5, 4, 0):
            raise SwError(Sw.INCORRECT_DATA)
        if key_type is MgmtKeyType.TDES and self.card.profile.fips:
            raise SwError(Sw.INCORRECT_DATA)  # FIPS: 3DES is no approved algorithm
        if len(new_key) != key_type.key_len:
            raise SwError(Sw.INCORRECT_DATA)
        st = self.card.state
        st.mgmt_key = new_key
        st.mgmt_key_type = key_type
        st.mgmt_touch_policy = {0xFF: TouchPolicy.NEVER, 0xFE: TouchPolicy.ALWAYS}.get(
            cmd.p2, TouchPolicy.CACHED
        )
        self.card.mark_changed()
        self.card.log(f"management key set ({key_type.name})")
        return b""

    # --- private key use --------------------------------------------------------------

    def authenticate(self, cmd: Command) -> bytes:
        """GENERAL AUTHENTICATE (87): management key auth (P2 9B) or private key use."""
        try:
            items = parse_dict(_unwrap_7c(cmd.data))
        except TlvError:
            raise SwError(Sw.INCORRECT_DATA) from None
        if cmd.p2 == SLOT_MGMT:
            return self._mgmt_authenticate(cmd, items)
        return self._use_key(cmd, items)

    # --- data objects -----------------------------------------------------------------

    def get_data(self, cmd: Command) -> bytes:
        """GET DATA (CB 3F FF): 5C tag; answers 53 value (7E and 7F61 as themselves)."""
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF):
            raise SwError(Sw.INCORRECT_P1P2)
        tag = _object_tag(cmd.data)
        if tag == OBJ_DISCOVERY:
            return DISCOVERY_OBJECT
        # Access before existence (SP 800-73-4 Table 2, and what a YubiKey does): without
        # the PIN a protected object answers 6982 whether or not it holds anything. A 6A82
        # here would tell a client "empty" — ykman then believes no PIN-protected
        # management key is stored and replaces the key without the PIN.
        if tag in PIN_PROTECTED_OBJECTS and not self.session.pin_verified:
            raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)
        st = self.card.state
        value = st.objects.get(tag)
        if value is None:
            if tag == OBJ_BIT_GROUP:
                return BIT_GROUP_OBJECT
            raise SwError(Sw.FILE_NOT_FOUND)
        if tag == OBJ_BIT_GROUP:
            return value
        return tlv(0x53, value)

    def put_data(self, cmd: Command) -> bytes:
        """PUT DATA (DB 3F FF): 5C tag 53 value; an empty value deletes the object."""
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF):
            raise SwError(Sw.INCORRECT_P1P2)
        self._require_mgmt()
        try:
            items = parse(cmd.data)
        except TlvError:
            raise SwError(Sw.INCORRECT_DATA) from None
        if len(items) == 1 and items[0][0] == OBJ_DISCOVERY:
            raise SwError(Sw.INCORRECT_DATA)  # the discovery object is fixed
        if len(items) == 1 and items[0][0] == OBJ_BIT_GROUP:
            tag, value = OBJ_BIT_GROUP, tlv(OBJ_BIT_GROUP, items[0][1])
        elif len(items) == 2 and items[0][0] == 0x5C and items[1][0] == 0x53:
            tag = _object_tag(tlv(0x5C, items[0][1]))
            value = items[1][1]
            if not _valid_object_tag(tag):
                raise SwError(Sw.INCORRECT_DATA)
        else:
            raise SwError(Sw.INCORRECT_DATA)
        if len(value) > MAX_OBJECT_SIZE:
            raise SwError(Sw.NOT_ENOUGH_MEMORY)
        st = self.card.state
        if value:
            st.objects[tag] = value
            self.card.log(f"object {tag:x} written ({len(value)} bytes)")
        else:
            st.objects.pop(tag, None)
            self.card.log(f"object {tag:x} deleted")
        self.card.mark_changed()
        return b""

    # --- YubiKey information ---------------------------------------------------------

    def get_version(self, cmd: Command) -> bytes:
        """GET VERSION (FD): three bytes, major minor patch."""
        return bytes(self.fw)

    def get_serial(self, cmd: Command) -> bytes:
        """GET SERIAL (F8, YubiKey 5+): four bytes, big endian."""
        self._require_fw((5, 0, 0))
        return self.card.state.serial.to_bytes(4, "big")

    def get_metadata(self, cmd: Command) -> bytes:
        """GET METADATA (F7, 5.3+) for a key slot, PIN (80), PUK (81) or mgmt key (9B)."""
        self._require_fw((5, 3, 0))
        st = self.card.state
        ref = cmd.p2
        if cmd.p1 != 0x00:
            raise SwError(Sw.INCORRECT_P1P2)
        if ref in (REF_PIN, REF_PUK):
            is_pin = ref == REF_PIN
            value = st.pin if is_pin else st.puk
            default = DEFAULT_PIN if is_pin else DEFAULT_PUK
            total = st.pin_retries_total if is_pin else st.puk_retries_total
            left = st.pin_retries_left if is_pin else st.puk_retries_left
            return (
                tlv(0x01, b"\xff")
                + tlv(0x05, b"\x01" if hmac.compare_digest(value, default) else b"\x00")
                + tlv(0x06, bytes([total, left]))
            )
        if ref == SLOT_MGMT:
            is_default = hmac.compare_digest(st.mgmt_key, DEFAULT_MGMT_KEY)
            return (
                tlv(0x01, bytes([st.mgmt_key_type]))
                + tlv(0x02, bytes([PinPolicy.NEVER, st.mgmt_touch_policy]))
                + tlv(0x05, b"\x01" if is_default else b"\x00")
            )
        kind = self.card.profile
        slot_key = st.keys.get(ref)
        if ref not in self.slots:
            # Unknown reference, or the Bio reference 96 on a non-Bio key.
            raise SwError(kind.unknown_reference_sw)
        if slot_key is None:
            if kind.metadata_empty_template:
                # Third-party applets: "empty" is a template with the slot's default
                # policies and origin 0, and no algorithm.
                pin = DEFAULT_PIN_POLICY.get(ref, PinPolicy.ONCE)
                return tlv(0x02, bytes([pin, TouchPolicy.NEVER])) + tlv(0x03, b"\x00")
            raise SwError(Sw.REFERENCE_NOT_FOUND)
        if slot_key.origin == Origin.IMPORTED and kind.metadata_imported_sw is not None:
            raise SwError(kind.metadata_imported_sw)
        origin = kind.generated_origin if slot_key.origin == Origin.GENERATED \
            else slot_key.origin
        key = self._load(slot_key)
        return (
            tlv(0x01, bytes([slot_key.algorithm]))
            + tlv(0x02, bytes([slot_key.pin_policy, slot_key.touch_policy]))
            + tlv(0x03, bytes([origin]))
            + tlv(0x04, keyops.public_key_tlvs(key))
        )

    # --- administration ---------------------------------------------------------------

    def set_pin_retries(self, cmd: Command) -> bytes:
        """SET PIN RETRIES (FA): P1 PIN tries, P2 PUK tries; resets PIN and PUK."""
        if not 1 <= cmd.p1 <= 0xFF or not 1 <= cmd.p2 <= 0xFF:
            raise SwError(Sw.INCORRECT_P1P2)
        self._require_mgmt()
        if not self.session.pin_verified:
            raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)
        st = self.card.state
        st.pin, st.puk = DEFAULT_PIN, DEFAULT_PUK
        st.pin_retries_total = st.pin_retries_left = cmd.p1
        st.puk_retries_total = st.puk_retries_left = cmd.p2
        self.session.pin_verified = self.session.pin_fresh = False
        self.card.mark_changed()
        self.card.log(f"PIN/PUK retries set to {cmd.p1}/{cmd.p2}, PIN and PUK reset")
        return b""

    def reset(self, cmd: Command) -> bytes:
        """RESET (FB): factory reset, allowed only once both PIN and PUK are blocked."""
        st = self.card.state
        if st.pin_retries_left != 0 or st.puk_retries_left != 0:
            raise SwError(Sw.CONDITIONS_NOT_SATISFIED)
        factory_reset(st)
        self._key_cache.clear()
        self.clear_session()
        self.card.mark_changed()
        self.card.log("PIV application reset")
        return b""


def _unwrap_7c(data: bytes) -> bytes:
    return unwrap(0x7C, data)


def _object_tag(data: bytes) -> int:
    """The object id in a ``5C`` tag list (exactly one id of 1-3 bytes)."""
    try:
        items = parse(data)
    except TlvError:
        raise SwError(Sw.INCORRECT_DATA) from None
    if len(items) != 1 or items[0][0] != 0x5C or not 1 <= len(items[0][1]) <= 3:
        raise SwError(Sw.INCORRECT_DATA)
    return int.from_bytes(items[0][1], "big")
