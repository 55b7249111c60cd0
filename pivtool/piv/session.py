"""PivSession: one typed method per PIV card command (SP 800-73-4 Part 2 §3) and per YubiKey
extension. Each docstring states what the card requires first ("needs PIN", "needs
management key"). The session borrows a :class:`~pivtool.core.connection.Connection`; it never
opens or closes one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.apdu import Apdu
from ..core.atr import is_contactless
from ..core.connection import ApduProtocol, Connection
from ..core.errors import (
    ApduError,
    BadResponseError,
    BlockedError,
    ConditionsNotSatisfiedError,
    InsNotSupportedError,
    InvalidPinError,
    NoCardError,
    NotFoundError,
    NotSupportedError,
    PinComplexityError,
    UsageError,
    error_for_sw,
)
from ..core.sw import SW, sw_meaning
from ..core.tlv import TlvError, parse_dict, tlv, unwrap
from .constants import (
    DEFAULT_MGMT_KEY,
    PIN_MAX,
    PIN_MIN,
    PIV_AID,
    Ins,
    KeyRef,
    KeyType,
    MgmtKeyType,
    ObjectId,
    Origin,
    PinPolicy,
    Slot,
    TouchPolicy,
)
from .version import (
    Version,
    check_key_support,
    default_mgmt_key_type,
    has_attestation,
    has_metadata,
    has_move_delete,
    has_serial_ins,
    supported_mgmt_key_types,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )

#: yubikit ``_MaxApduSize``: the longest APDU a YubiKey 4.0-4.2 / 4.3+ takes over USB CCID.
MAX_APDU_YK4 = 2038
MAX_APDU_YK4_3 = 3062

#: Why a card cannot report slot keys at all (the reason of an unknown :class:`SlotProbe`).
NO_METADATA = "no GET METADATA on this card"

#: Objects whose contents are secret: traces redact them.
SENSITIVE_OBJECTS = frozenset({ObjectId.PRINTED})


def pin_bytes(pin: bytes | str, what: str = "PIN") -> bytes:
    """Validate a PIN/PUK (6–8 bytes, SP 800-73-4 Part 2 §2.4.3) and pad it with FF to 8.

    Raises :class:`UsageError` before the card is touched, so a wrong length never costs a
    retry. The message never contains the value."""
    raw = pin.encode("utf-8") if isinstance(pin, str) else bytes(pin)
    if not PIN_MIN <= len(raw) <= PIN_MAX:
        raise UsageError(f"{what} must be {PIN_MIN}-{PIN_MAX} bytes, got {len(raw)}")
    if b"\xff" in raw:
        raise UsageError(f"{what} must not contain byte FF (it is the padding)")
    return raw.ljust(PIN_MAX, b"\xff")


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


def parse_public_key(key_type: KeyType, encoded: bytes) -> PublicKeyTypes:
    """Decode the public key TLVs of GENERATE/METADATA (81 modulus + 82 exponent, or 86
    point) — SP 800-73-4 Part 2 Table 7."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

    try:
        items = parse_dict(encoded)
        if key_type.is_rsa:
            n = int.from_bytes(items[0x81], "big")
            e = int.from_bytes(items[0x82], "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        point = items[0x86]
        if key_type is KeyType.ED25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(point)
        if key_type is KeyType.X25519:
            return x25519.X25519PublicKey.from_public_bytes(point)
        curve = ec.SECP256R1() if key_type is KeyType.ECCP256 else ec.SECP384R1()
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except (TlvError, KeyError, ValueError) as e:
        raise BadResponseError(f"card returned a malformed {key_type.label} public key") from e


def key_type_of(key: PublicKeyTypes | PrivateKeyTypes) -> KeyType:
    """The PIV key type of a cryptography key; :class:`UsageError` when a card cannot hold
    it."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        name = f"RSA{key.key_size}"
        if name in KeyType.__members__:
            return KeyType[name]
        raise UsageError(f"RSA-{key.key_size} keys do not fit a PIV slot")
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        names = {"secp256r1": KeyType.ECCP256, "secp384r1": KeyType.ECCP384}
        if key.curve.name in names:
            return names[key.curve.name]
        raise UsageError(f"EC curve {key.curve.name} does not fit a PIV slot")
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return KeyType.ED25519
    if isinstance(key, (x25519.X25519PublicKey, x25519.X25519PrivateKey)):
        return KeyType.X25519
    raise UsageError(f"unsupported key type {type(key).__name__}")


def _ecb(key_type: MgmtKeyType, key: bytes, block: bytes, encrypt: bool) -> bytes:
    """One block of the management key cipher in ECB mode (what the card uses)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    alg = TripleDES(key) if key_type is MgmtKeyType.TDES else algorithms.AES(key)
    cipher = Cipher(alg, modes.ECB())
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(block) + ctx.finalize()


def check_mgmt_key(key_type: MgmtKeyType, key: bytes) -> None:
    """Raise :class:`UsageError` unless *key* has the length *key_type* needs."""
    if len(key) != key_type.key_len:
        raise UsageError(f"a {key_type.label} management key is {key_type.key_len} bytes, "
                         f"got {len(key)}")


def parse_certificate(der: bytes, message: str = "the card returned data that is not a "
                                                  "certificate") -> x509.Certificate:
    """A certificate the card returned, or :class:`BadResponseError` (*message*). Any parse
    failure counts: cryptography raises ``InvalidVersion`` besides ``ValueError``, and parses
    subject and issuer only when first used, so they are touched here."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        cert.subject  # noqa: B018 - evaluated for its parse errors
        cert.issuer  # noqa: B018
    except (ValueError, x509.InvalidVersion) as e:
        raise BadResponseError(message) from e
    return cert


def _slot_text(ref: int) -> str:
    try:
        return f"slot {Slot(ref).label}"
    except ValueError:
        return f"key reference {ref:02X}"


def _ref_text(ref: int) -> str:
    names: dict[int, str] = {KeyRef.PIN: "the PIN", KeyRef.PUK: "the PUK",
                             KeyRef.MGMT: "the management key"}
    return names.get(ref, _slot_text(ref))


def command_step(ins: int, p1: int, p2: int, what: str = "PIN") -> str:
    """The step a command APDU carries out, in words (for error messages)."""
    if ins == Ins.VERIFY:
        return "verify the PIN"
    if ins == Ins.CHANGE_REFERENCE:
        return f"change the {what}"
    if ins == Ins.RESET_RETRY:
        return "unblock the PIN with the PUK"
    if ins == Ins.GENERATE_ASYMMETRIC:
        return f"generate a key in {_slot_text(p2)}"
    if ins == Ins.GENERAL_AUTHENTICATE:
        if p2 == KeyRef.MGMT:
            return "authenticate with the management key"
        return f"use the key in {_slot_text(p2)}"
    if ins == Ins.GET_METADATA:
        return f"read the metadata of {_ref_text(p2)} (GET METADATA)"
    if ins == Ins.ATTEST:
        return f"attest {_slot_text(p1)}"
    if ins == Ins.IMPORT_KEY:
        return f"import a key into {_slot_text(p2)}"
    if ins == Ins.MOVE_KEY:
        return f"delete the key in {_slot_text(p2)}" if p1 == 0xFF else \
            f"move the key from {_slot_text(p2)} to {_slot_text(p1)}"
    names: dict[int, str] = {
        Ins.GET_DATA: "read a data object", Ins.PUT_DATA: "write a data object",
        Ins.SELECT: "select the PIV application", Ins.GET_SERIAL: "read the serial number",
        Ins.GET_VERSION: "read the firmware version",
        Ins.SET_PIN_RETRIES: "set the PIN and PUK retry counts",
        Ins.RESET: "reset the PIV application", Ins.SET_MGMT_KEY: "set the management key"}
    return names.get(ins, f"command {ins:02X}")


#: What a status word means for one command, where that is more precise than its general
#: meaning (core.sw.sw_meaning).
_COMMAND_MEANINGS: dict[tuple[int, int], str] = {
    (Ins.GENERATE_ASYMMETRIC, SW.INCORRECT_PARAMETERS):
        "the card refuses this algorithm in this slot",
    (Ins.GENERATE_ASYMMETRIC, SW.INCORRECT_P1P2): "the card has no such key slot",
    (Ins.IMPORT_KEY, SW.INCORRECT_PARAMETERS):
        "the card refuses this key (algorithm, size or policy) in this slot",
    (Ins.PUT_DATA, SW.NO_SPACE): "the object does not fit in the card's memory",
    (Ins.PUT_DATA, SW.INCORRECT_PARAMETERS): "the card refused the object",
    (Ins.GET_DATA, SW.FILE_NOT_FOUND): "the object is not on the card",
    (Ins.ATTEST, SW.INCORRECT_PARAMETERS):
        "the card will not attest this key (it attests only keys generated on the card)",
    (Ins.ATTEST, SW.REFERENCE_NOT_FOUND): "the card holds no key in this slot to attest",
    (Ins.SET_MGMT_KEY, SW.INCORRECT_PARAMETERS):
        "the card refuses this management key algorithm",
    (Ins.RESET, SW.CONDITIONS_NOT_SATISFIED):
        "the card resets only when the PIN and the PUK are both blocked",
    (Ins.GET_METADATA, SW.REFERENCE_NOT_FOUND): "the slot is empty",
}


def _worded(e: ApduError, ins: int, p1: int, p2: int, what: str) -> ApduError:
    """*e* again, its message naming the step and saying what the SW means."""
    step = command_step(ins, p1, p2, what)
    if e.sw == SW.AUTH_METHOD_BLOCKED:
        blocked = "the management key" if (ins == Ins.GENERAL_AUTHENTICATE
                                           and p2 == KeyRef.MGMT) else f"the {what}"
        if ins in (Ins.GENERAL_AUTHENTICATE, Ins.GENERATE_ASYMMETRIC) and p2 != KeyRef.MGMT:
            blocked = "the PIN"
        meaning: str | None = f"{blocked} is blocked"
    elif ins == Ins.GENERAL_AUTHENTICATE and p2 == KeyRef.MGMT and e.sw in (
            SW.INCORRECT_PARAMETERS, SW.INCORRECT_P1P2):
        meaning = "the card's management key is not of this algorithm"
    else:
        meaning = _COMMAND_MEANINGS.get((ins, e.sw)) or sw_meaning(e.sw)
    text = f"{step}: {meaning}" if meaning else f"{step}: the card refused"
    return type(e)(e.sw, e.data, text)


class PivSession:
    """A session with the PIV application on one card.

    Construction selects the applet and reads the firmware version (``None`` on a generic PIV
    card, which does not know GET VERSION).
    """

    def __init__(self, connection: Connection, extended: bool | None = None) -> None:
        self.connection = connection
        #: Why the card counts as generic although it answered GET VERSION (else ``None``).
        self.version_note: str | None = None
        #: PIN/PUK tries the card reported in its own 63Cx (or 6983) answers in this session:
        #: the only count there is on cards that cannot report the PUK's.
        self.learned_tries: dict[int, int] = {}
        self.protocol = ApduProtocol(connection, extended=False)
        self.properties = self.select()
        self.version: Version | None = self._read_version()
        if extended is None:
            # Every YubiKey from 4.0 takes extended APDUs over CCID (USB); over NFC that
            # depends on the reader, and generic cards are not assumed to: both get command
            # chaining, as yubikit does.
            extended = (self.version is not None and self.version >= (4, 0, 0)
                        and not is_contactless(connection.atr))
        self.protocol.extended = extended
        self._mgmt_key_type: MgmtKeyType | None = None
        self._mgmt_key_guess = False

    # --- helpers ----------------------------------------------------------------------

    @property
    def is_yubikey(self) -> bool:
        """True when the card speaks the YubiKey extensions."""
        return self.version is not None

    @property
    def max_extended_apdu(self) -> int:
        """The longest extended APDU (header, Lc, data and Le) the card takes: a YubiKey's
        USB CCID message limit, yubikit's ``_MaxApduSize`` (YubiKey 4: 2038 bytes, 4.3 and
        later: 3062)."""
        if self.version is not None and self.version < (4, 3, 0):
            return MAX_APDU_YK4
        return MAX_APDU_YK4_3

    def _send(self, ins: int, p1: int = 0, p2: int = 0, data: bytes = b"",
              sensitive: bool = False, what: str = "PIN") -> bytes:
        apdu = Apdu(0x00, ins, p1, p2, data)
        try:
            return self._transmit(apdu, sensitive, what)
        except InvalidPinError:
            raise  # "wrong PIN, 2 tries left" says it all
        except ApduError as e:
            raise _worded(e, ins, p1, p2, what) from e

    def _transmit(self, apdu: Apdu, sensitive: bool, what: str) -> bytes:
        data = apdu.data
        # 4 header + 3 Lc + data + 2 Le (extended APDUs always carry Le=0000 here).
        if self.protocol.extended and len(data) + 9 > self.max_extended_apdu:
            # Too long for one extended APDU (a 3063-byte object needs 3079): chain short
            # APDUs instead; the applet collects up to 3072 bytes of chained data
            # (yubico-piv-tool's CB_BUF_MAX), which is what yubico-piv-tool always does.
            self.protocol.extended = False
            try:
                return self.protocol.send(apdu, sensitive, what)
            finally:
                self.protocol.extended = True
        return self.protocol.send(apdu, sensitive, what)

    def _send_no_data(self, ins: int, p1: int = 0, p2: int = 0, data: bytes = b"",
                      sensitive: bool = False, what: str = "PIN") -> None:
        """:meth:`_send` for commands that answer with a bare status word. Data with a 9000
        means the answer is not what the card sent (a corrupted link): the change may not
        have happened, so it must not be reported as done."""
        if self._send(ins, p1, p2, data, sensitive, what):
            raise BadResponseError(f"unexpected data in the answer to INS {ins:02X}; the "
                                   "command may not have been carried out")

    def _require_yubikey(self, feature: str) -> Version:
        if self.version is None:
            if self.version_note:
                raise NotSupportedError(f"{feature} is a YubiKey extension, and this card has "
                                        f"not shown it is a YubiKey ({self.version_note})")
            raise NotSupportedError(f"{feature} is a YubiKey extension; this is a generic "
                                    "PIV card")
        return self.version

    def _require(self, ok: bool, feature: str) -> None:
        if not ok:
            raise NotSupportedError(f"{feature} is not supported by firmware {self.version}")

    # --- SELECT / version / serial ----------------------------------------------------

    def select(self) -> ApplicationProperties:
        """SELECT the PIV application (SP 800-73-4 Part 2 §3.1.1). Resets nothing on the card
        but the current application; the PIN stays verified within this connection."""
        data, sw = self.protocol.send_raw(Apdu(0x00, Ins.SELECT, 0x04, 0x00, PIV_AID))
        if sw in (SW.FILE_NOT_FOUND, SW.INCORRECT_PARAMETERS, SW.INS_NOT_SUPPORTED):
            raise NoCardError("the card has no PIV application")
        if sw != SW.OK:
            raise error_for_sw(sw, data)
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

    def _read_version(self) -> Version | None:
        try:
            data = self._send(Ins.GET_VERSION)
        except ApduError:
            # 6D00 (or any refusal) means the YubiKey extensions are absent.
            return None
        for attempt in range(2):
            try:
                return Version.from_bytes(data)
            except ValueError:
                if attempt == 0:
                    # Asked once more: a garbled answer on the link must not turn a YubiKey
                    # into a generic card (enroll would then keep its default management key).
                    try:
                        data = self._send(Ins.GET_VERSION)
                    except ApduError:
                        break
        # A 9000 whose answer is not a version, twice: the card has not shown it is a
        # YubiKey, so it gets the generic path (no YubiKey-only command is sent); the reason
        # is kept for the messages that would otherwise say "generic card".
        self.version_note = f"its answer to GET VERSION ({len(data)} bytes) is not a version"
        return None

    def get_serial(self) -> int:
        """GET SERIAL (YubiKey F8, firmware 5+)."""
        v = self._require_yubikey("GET SERIAL")
        self._require(has_serial_ins(v), "GET SERIAL")
        data = self._send(Ins.GET_SERIAL)
        if len(data) != 4:
            raise BadResponseError(f"GET SERIAL returned {len(data)} bytes, expected 4")
        return int.from_bytes(data, "big")

    # --- data objects -----------------------------------------------------------------

    def get_data(self, object_id: int) -> bytes:
        """GET DATA (SP 800-73-4 Part 2 §3.1.2): the object's contents without the 53
        wrapper. Raises :class:`NotFoundError` when the object is empty. Most objects are
        free to read; 5FC109 (printed information / ykman protected data) needs PIN."""
        if object_id == ObjectId.DISCOVERY:
            tag_bytes = b"\x7e"
        else:
            tag_bytes = object_id.to_bytes(max(1, (object_id.bit_length() + 7) // 8), "big")
        data = self._send(Ins.GET_DATA, 0x3F, 0xFF, tlv(0x5C, tag_bytes),
                          sensitive=object_id in SENSITIVE_OBJECTS)
        expected = 0x7E if object_id == ObjectId.DISCOVERY else 0x53
        if object_id == ObjectId.BIT_GROUP:
            expected = 0x7F61
        try:
            return unwrap(data, expected)
        except TlvError as e:
            raise BadResponseError(f"GET DATA {object_id:X}: {e}") from None

    def put_data(self, object_id: int, data: bytes | None) -> None:
        """PUT DATA (SP 800-73-4 Part 2 §3.2.1). ``None`` or empty deletes the object.
        Needs management key."""
        tag_bytes = object_id.to_bytes(max(1, (object_id.bit_length() + 7) // 8), "big")
        self._send_no_data(Ins.PUT_DATA, 0x3F, 0xFF,
                           tlv(0x5C, tag_bytes) + tlv(0x53, data or b""),
                           sensitive=object_id in SENSITIVE_OBJECTS)

    def get_certificate_der(self, slot: Slot) -> tuple[bytes, bool]:
        """Read a slot's certificate object: (DER, was_compressed). Free to read."""
        from .objects import decode_certificate_object

        return decode_certificate_object(self.get_data(slot.object_id))

    def get_certificate(self, slot: Slot) -> x509.Certificate:
        """Read and parse a slot's certificate. Free to read."""

        der, _ = self.get_certificate_der(slot)
        return parse_certificate(der, f"slot {slot.label} holds data that is not a "
                                      "certificate")

    def put_certificate(self, slot: Slot, cert_der: bytes, compress: bool = False) -> None:
        """Store a certificate in the slot's object. Needs management key."""
        from .objects import encode_certificate_object

        self.put_data(slot.object_id, encode_certificate_object(cert_der, compress))

    def delete_certificate(self, slot: Slot) -> None:
        """Empty the slot's certificate object. Needs management key."""
        self.put_data(slot.object_id, None)

    # --- PIN / PUK --------------------------------------------------------------------

    def verify_pin(self, pin: bytes | str) -> None:
        """VERIFY the PIN (SP 800-73-4 Part 2 §3.2.1). Raises :class:`InvalidPinError` with the
        tries left, or :class:`BlockedError`."""
        with self._counting(KeyRef.PIN):
            self._send_no_data(Ins.VERIFY, 0, KeyRef.PIN, pin_bytes(pin), sensitive=True)

    @contextlib.contextmanager
    def _counting(self, ref: KeyRef) -> Iterator[None]:
        """Remember the tries the card reports for *ref* in a 63Cx or 6983 answer."""
        try:
            yield
        except InvalidPinError as e:
            self.learned_tries[ref] = e.tries_left
            raise
        except BlockedError:
            self.learned_tries[ref] = 0
            raise
        else:
            self.learned_tries.pop(ref, None)  # a right value resets the counter

    def pin_tries_by_verify(self) -> int | None:
        """Empty VERIFY: the PIN tries left without spending one; ``None`` when the PIN is
        already verified in this session (the card then does not say). 0 when blocked."""
        data, sw = self.protocol.send_raw(Apdu(0x00, Ins.VERIFY, 0, KeyRef.PIN))
        if sw == SW.OK:
            return None
        if 0x63C0 <= sw <= 0x63CF:
            self.learned_tries[KeyRef.PIN] = sw & 0x0F
            return sw & 0x0F
        if sw == SW.AUTH_METHOD_BLOCKED:
            self.learned_tries[KeyRef.PIN] = 0
            return 0
        raise error_for_sw(sw, data)

    def unverify_pin(self) -> None:
        """VERIFY with P1=FF: reset the PIN's security status (SP 800-73-4 Part 2 §3.2.1)."""
        self._send_no_data(Ins.VERIFY, 0xFF, KeyRef.PIN)

    def _change_reference(self, ins: int, ref: KeyRef, old: bytes | str, new: bytes | str,
                          what_old: str, what_new: str) -> None:
        data = pin_bytes(old, what_old) + pin_bytes(new, what_new)
        # The try spent is the old value's: the PIN's, or the PUK's (also for RESET RETRY).
        with self._counting(KeyRef.PUK if what_old == "PUK" else KeyRef.PIN):
            try:
                self._send_no_data(ins, 0, ref, data, sensitive=True, what=what_old)
            except ConditionsNotSatisfiedError as e:
                # Here 6985 means only one thing: PIN complexity (YubiKey 5.7+; Yubico's SDK
                # reports it as a PIN complexity violation) refused the new value.
                raise PinComplexityError(e.sw, what_new, what_old) from None

    def change_pin(self, old: bytes | str, new: bytes | str) -> None:
        """CHANGE REFERENCE DATA for the PIN (§3.2.2). Spends a PIN try when *old* is wrong."""
        self._change_reference(Ins.CHANGE_REFERENCE, KeyRef.PIN, old, new, "PIN", "new PIN")

    def change_puk(self, old: bytes | str, new: bytes | str) -> None:
        """CHANGE REFERENCE DATA for the PUK (§3.2.2). Spends a PUK try when *old* is wrong."""
        self._change_reference(Ins.CHANGE_REFERENCE, KeyRef.PUK, old, new, "PUK", "new PUK")

    def unblock_pin(self, puk: bytes | str, new_pin: bytes | str) -> None:
        """RESET RETRY COUNTER (§3.2.3): set a new PIN with the PUK. Spends a PUK try when
        *puk* is wrong."""
        self._change_reference(Ins.RESET_RETRY, KeyRef.PIN, puk, new_pin, "PUK", "new PIN")

    def _pin_puk_metadata(self, ref: KeyRef) -> PinMetadata:
        items = self._metadata(ref)
        retries = items.get(0x06, b"")
        if len(retries) != 2:
            raise BadResponseError(f"the metadata of the {ref.name} holds no retry counts")
        default = items.get(0x05)
        return PinMetadata(default != b"\x00" if default else None, retries[0], retries[1])

    def get_pin_metadata(self) -> PinMetadata:
        """GET METADATA for the PIN (YubiKey 5.3+): default flag and tries, without spending
        one."""
        return self._pin_puk_metadata(KeyRef.PIN)

    def get_puk_metadata(self) -> PinMetadata:
        """GET METADATA for the PUK (YubiKey 5.3+)."""
        return self._pin_puk_metadata(KeyRef.PUK)

    # --- management key ---------------------------------------------------------------

    def _metadata(self, ref: int) -> dict[int, bytes]:
        v = self._require_yubikey("GET METADATA")
        self._require(has_metadata(v), "GET METADATA")
        data = self._send(Ins.GET_METADATA, 0, ref)
        try:
            return parse_dict(data)
        except TlvError as e:
            raise BadResponseError(f"malformed metadata: {e}") from None

    def get_mgmt_key_metadata(self) -> MgmtKeyMetadata:
        """GET METADATA for the management key (YubiKey 5.3+)."""
        items = self._metadata(KeyRef.MGMT)
        try:
            # Firmware that omits the algorithm has a 3DES key (yubikit's default too); it
            # is still confirmed by the card's witness when authenticating.
            self._mgmt_key_guess = 0x01 not in items
            key_type = MgmtKeyType(items.get(0x01, b"\x03")[0])
            policy = items.get(0x02, b"\x00\x01")
            default = items.get(0x05)
            md = MgmtKeyMetadata(key_type, default != b"\x00" if default else None,
                                 TouchPolicy(policy[1]))
        except (ValueError, IndexError) as e:
            raise BadResponseError("malformed management key metadata") from e
        # Fill mgmt_key_type's cache: callers that read the metadata and then authenticate
        # (workflows.auth.authenticate) would otherwise send the same GET METADATA twice.
        self._mgmt_key_type = None if self._mgmt_key_guess else key_type
        return md

    @property
    def mgmt_key_type(self) -> MgmtKeyType:
        """The management key's algorithm: from metadata when the card has it (and answers
        it in a way that can be understood), else the firmware's factory default (cached per
        session; :meth:`authenticate` tries the other algorithms of the key's length when the
        card refuses this one)."""
        if self._mgmt_key_type is not None:
            return self._mgmt_key_type
        if self.version is not None and has_metadata(self.version):
            try:
                md = self.get_mgmt_key_metadata()
            except (ApduError, BadResponseError):
                pass
            else:
                if not self._mgmt_key_guess:
                    return md.key_type
        self._mgmt_key_guess = True
        return default_mgmt_key_type(self.version)

    def probe_mgmt_key_type(self) -> MgmtKeyType | None:
        """The management key's algorithm on a card that does not report it: the first
        algorithm the card gives a witness for (the factory default's first). A witness
        request spends no try and changes nothing; ``None`` when the card answers none."""
        if not self._mgmt_key_guess and self._mgmt_key_type is not None:
            return self._mgmt_key_type
        first = default_mgmt_key_type(self.version)
        for kt in [first, *(t for t in MgmtKeyType if t is not first)]:
            try:
                resp = self._send(Ins.GENERAL_AUTHENTICATE, kt, KeyRef.MGMT,
                                  tlv(0x7C, tlv(0x80)))
                witness = unwrap(unwrap(resp, 0x7C), 0x80)
            except (ApduError, TlvError):
                continue
            if len(witness) == kt.block_len:
                self._mgmt_key_type, self._mgmt_key_guess = kt, False
                return kt
        return None

    def authenticate(self, key: bytes, key_type: MgmtKeyType | None = None) -> None:
        """GENERAL AUTHENTICATE with the management key, mutual (SP 800-73-4 Part 2 Appendix
        A.1, "mutual authentication"): the card proves it knows the key too.

        Without *key_type*, and where the card has not said which algorithm its key has (no
        GET METADATA, or an answer that was not understood), the card's refusal of the
        witness request (6A80/6A86) is taken as "not this algorithm" and the other
        algorithms of the key's length are asked: a witness request spends no try.

        Raises :class:`~pivtool.core.errors.SecurityStatusError` for a wrong key."""
        candidates = [key_type or self.mgmt_key_type]
        if key_type is None and self._mgmt_key_guess:
            candidates += [t for t in MgmtKeyType
                           if t.key_len == len(key) and t not in candidates]
            candidates = [t for t in candidates if t.key_len == len(key)] or candidates[:1]
        for n, kt in enumerate(candidates):
            check_mgmt_key(kt, key)
            try:
                resp = self._send(Ins.GENERAL_AUTHENTICATE, kt, KeyRef.MGMT,
                                  tlv(0x7C, tlv(0x80)))
            except ApduError as e:
                if n + 1 < len(candidates) and e.sw in (SW.INCORRECT_PARAMETERS,
                                                        SW.INCORRECT_P1P2):
                    continue
                raise
            if key_type is None and self._mgmt_key_guess:
                # The card gave a witness for this algorithm: that is its key's.
                self._mgmt_key_type, self._mgmt_key_guess = kt, False
            break
        try:
            witness = unwrap(unwrap(resp, 0x7C), 0x80)
        except TlvError as e:
            raise BadResponseError(f"management key witness: {e}") from None
        if len(witness) != kt.block_len:
            raise BadResponseError("management key witness has the wrong length "
                                   f"(is the key really {kt.label}?)")
        decrypted = _ecb(kt, key, witness, encrypt=False)
        challenge = os.urandom(kt.block_len)
        resp = self._send(Ins.GENERAL_AUTHENTICATE, kt, KeyRef.MGMT,
                          tlv(0x7C, tlv(0x80, decrypted) + tlv(0x81, challenge)),
                          sensitive=True)
        try:
            encrypted = unwrap(unwrap(resp, 0x7C), 0x82)
        except TlvError as e:
            raise BadResponseError(f"management key response: {e}") from None
        import hmac  # only here: hashlib costs start-up time for every command

        if not hmac.compare_digest(_ecb(kt, key, challenge, encrypt=True), encrypted):
            # The card accepted our answer but could not answer ours: not the card we think.
            raise BadResponseError("the card failed mutual authentication")

    def set_mgmt_key(self, key_type: MgmtKeyType, key: bytes, touch: bool = False) -> None:
        """SET MANAGEMENT KEY (YubiKey FF). Needs management key. On non-YubiKeys the key
        can only be changed by the card issuer."""
        v = self._require_yubikey("SET MANAGEMENT KEY")
        if key_type not in supported_mgmt_key_types(v):
            raise NotSupportedError(f"{key_type.label} management keys need firmware 5.4+")
        check_mgmt_key(key_type, key)
        self._send_no_data(Ins.SET_MGMT_KEY, 0xFF, 0xFE if touch else 0xFF,
                           bytes((key_type, KeyRef.MGMT, len(key))) + key, sensitive=True)
        self._mgmt_key_type = key_type

    # --- keys -------------------------------------------------------------------------

    def get_slot_metadata(self, slot: Slot) -> SlotMetadata:
        """GET METADATA for a key slot (YubiKey 5.3+). :class:`NotFoundError` when empty;
        :class:`BadResponseError` when the answer lacks the algorithm or the public key (a
        missing policy counts as the default, an origin other than 1/2 as unknown)."""
        items = self._metadata(slot)
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

    def probe_slot(self, slot: Slot) -> SlotProbe:
        """What the card can say about *slot*'s key, never failing on an answer it cannot
        understand: metadata (key known), empty (the documented 6A88), or unknown with the
        reason (no GET METADATA, an undocumented SW, a template without algorithm or key, a
        public key that does not parse). Transport errors still raise."""
        if self.version is None or not has_metadata(self.version):
            return SlotProbe(None, False, NO_METADATA)
        reason = ""
        for _attempt in range(2):
            # An answer that is not understood is asked for once more: a garbled answer on
            # the link must not pass for the card's own odd way of answering (a key whose
            # slot looks "unknown" is replaced on certificate evidence alone).
            try:
                md = self.get_slot_metadata(slot)
                md.public_key()  # parsed now, so "key known" means a usable key
            except NotFoundError:
                return SlotProbe(None, True)
            except (ApduError, BadResponseError) as e:
                reason = str(e)
                continue
            return SlotProbe(md, False)
        return SlotProbe(None, False, reason)

    def generate_key(self, slot: Slot, key_type: KeyType,
                     pin_policy: PinPolicy = PinPolicy.DEFAULT,
                     touch_policy: TouchPolicy = TouchPolicy.DEFAULT) -> PublicKeyTypes:
        """GENERATE ASYMMETRIC KEY PAIR (§3.3.2). Needs management key. Replaces any key in
        the slot (the certificate object is left alone)."""
        check_key_support(self.version, key_type, pin_policy, touch_policy, generate=True)
        template = tlv(0x80, bytes((key_type,)))
        if pin_policy != PinPolicy.DEFAULT:
            template += tlv(0xAA, bytes((pin_policy,)))
        if touch_policy != TouchPolicy.DEFAULT:
            template += tlv(0xAB, bytes((touch_policy,)))
        resp = self._send(Ins.GENERATE_ASYMMETRIC, 0, slot, tlv(0xAC, template))
        try:
            encoded = unwrap(resp, 0x7F49)
        except TlvError as e:
            raise BadResponseError(f"GENERATE response: {e}") from None
        return parse_public_key(key_type, encoded)

    def import_key(self, slot: Slot, private_key: PrivateKeyTypes,
                   pin_policy: PinPolicy = PinPolicy.DEFAULT,
                   touch_policy: TouchPolicy = TouchPolicy.DEFAULT) -> KeyType:
        """IMPORT KEY (YubiKey FE). Needs management key."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

        self._require_yubikey("IMPORT KEY")
        key_type = key_type_of(private_key)
        check_key_support(self.version, key_type, pin_policy, touch_policy, generate=False)
        if isinstance(private_key, rsa.RSAPrivateKey):
            nums = private_key.private_numbers()
            ln = key_type.bits // 16
            if nums.public_numbers.e != 65537:
                raise UsageError("a YubiKey only takes RSA keys with exponent 65537")
            data = b"".join(tlv(t, v.to_bytes(ln, "big")) for t, v in (
                (0x01, nums.p), (0x02, nums.q), (0x03, nums.dmp1), (0x04, nums.dmq1),
                (0x05, nums.iqmp)))
        elif isinstance(private_key, ec.EllipticCurvePrivateKey):
            ln = key_type.bits // 8
            data = tlv(0x06, private_key.private_numbers().private_value.to_bytes(ln, "big"))
        elif isinstance(private_key, ed25519.Ed25519PrivateKey):
            data = tlv(0x07, private_key.private_bytes(serialization.Encoding.Raw,
                                                       serialization.PrivateFormat.Raw,
                                                       serialization.NoEncryption()))
        elif isinstance(private_key, x25519.X25519PrivateKey):
            data = tlv(0x08, private_key.private_bytes(serialization.Encoding.Raw,
                                                       serialization.PrivateFormat.Raw,
                                                       serialization.NoEncryption()))
        else:  # pragma: no cover - key_type_of already refused it
            raise UsageError("unsupported private key")
        if pin_policy != PinPolicy.DEFAULT:
            data += tlv(0xAA, bytes((pin_policy,)))
        if touch_policy != TouchPolicy.DEFAULT:
            data += tlv(0xAB, bytes((touch_policy,)))
        self._send_no_data(Ins.IMPORT_KEY, key_type, slot, data, sensitive=True)
        return key_type

    def attest_key(self, slot: Slot) -> x509.Certificate:
        """ATTEST (YubiKey F9, 4.3+): a certificate for a key generated on the card, signed by
        the F9 attestation key. :class:`NotFoundError`-like errors for empty/imported keys."""

        v = self._require_yubikey("ATTEST")
        self._require(has_attestation(v), "ATTEST")
        data = self._send(Ins.ATTEST, slot, 0)
        return parse_certificate(data, "attestation is not a certificate")

    def move_key(self, src: Slot, dst: Slot) -> None:
        """MOVE KEY (YubiKey F6, 5.7+). Needs management key. The destination must be
        empty."""
        v = self._require_yubikey("MOVE KEY")
        self._require(has_move_delete(v), "MOVE KEY")
        if src == dst or Slot.ATTESTATION in (src, dst):
            raise UsageError("cannot move a key onto itself or to/from the attestation slot")
        self._send_no_data(Ins.MOVE_KEY, dst, src)

    def delete_key(self, slot: Slot) -> None:
        """DELETE KEY (YubiKey F6 with P1=FF, 5.7+). Needs management key."""
        v = self._require_yubikey("DELETE KEY")
        self._require(has_move_delete(v), "DELETE KEY")
        self._send_no_data(Ins.MOVE_KEY, 0xFF, slot)

    def general_authenticate(self, slot: Slot, key_type: KeyType, data: bytes,
                             exponentiation: bool = False) -> bytes:
        """GENERAL AUTHENTICATE with a slot key (§3.2.4): raw RSA, ECDSA over a hash, Ed25519
        over a message, or ECDH (*exponentiation*). Needs PIN per the slot's PIN policy."""
        tag = 0x85 if exponentiation else 0x81
        resp = self._send(Ins.GENERAL_AUTHENTICATE, key_type, slot,
                          tlv(0x7C, tlv(0x82) + tlv(tag, data)))
        try:
            return unwrap(unwrap(resp, 0x7C), 0x82)
        except TlvError as e:
            raise BadResponseError(f"GENERAL AUTHENTICATE response: {e}") from None

    def private_key(self, slot: Slot, public_key: PublicKeyTypes | None = None
                    ) -> PrivateKeyTypes:
        """A cryptography private-key object whose operations run on the card. The public key
        comes from metadata when not given (YubiKey 5.3+)."""
        from .keys import card_private_key

        if public_key is None:
            public_key = self.get_slot_metadata(slot).public_key()
        return card_private_key(self, slot, public_key)

    # --- YubiKey administration --------------------------------------------------------

    def set_pin_retries(self, pin_tries: int, puk_tries: int) -> None:
        """SET PIN RETRIES (YubiKey FA). Needs management key AND PIN. Resets PIN and PUK to
        their factory defaults."""
        self._require_yubikey("SET PIN RETRIES")
        if not (1 <= pin_tries <= 255 and 1 <= puk_tries <= 255):
            raise UsageError("retry counts must be 1-255")
        self._send_no_data(Ins.SET_PIN_RETRIES, pin_tries, puk_tries)

    def reset(self) -> None:
        """RESET (YubiKey FB): factory-reset the PIV application. The card refuses (6985)
        unless PIN and PUK are both blocked."""
        self._require_yubikey("RESET")
        self._send_no_data(Ins.RESET)
        self._mgmt_key_type = None

    # --- composite reads --------------------------------------------------------------

    def slot_key_present(self, slot: Slot) -> bool:
        """Whether a key is in *slot*, from metadata (YubiKey 5.3+)."""
        try:
            self.get_slot_metadata(slot)
            return True
        except (NotFoundError, InsNotSupportedError):
            return False
        except ApduError as e:
            if e.sw in (SW.INCORRECT_P1P2, SW.REFERENCE_NOT_FOUND):
                return False
            raise


__all__ = [
    "DEFAULT_MGMT_KEY",
    "ApplicationProperties",
    "MgmtKeyMetadata",
    "PinMetadata",
    "PivSession",
    "SlotMetadata",
    "SlotProbe",
    "check_mgmt_key",
    "key_type_of",
    "parse_public_key",
    "pin_bytes",
]
