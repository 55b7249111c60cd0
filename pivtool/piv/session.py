"""PivSession: one typed method per PIV card command (SP 800-73-4 Part 2 §3) and per YubiKey
extension. Each docstring states what the card requires first ("needs PIN", "needs
management key"). The session borrows a :class:`~pivtool.core.connection.Connection`; it never
opens or closes one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.apdu import Apdu
from ..core.atr import is_contactless
from ..core.connection import ApduProtocol, Connection
from ..core.errors import (
    ApduError,
    BadResponseError,
    ConditionsNotSatisfiedError,
    InsNotSupportedError,
    NoCardError,
    NotFoundError,
    NotSupportedError,
    PinComplexityError,
    UsageError,
    error_for_sw,
)
from ..core.sw import SW
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

    is_default: bool
    total: int
    remaining: int


@dataclass(frozen=True)
class MgmtKeyMetadata:
    """GET METADATA for the management key (9B)."""

    key_type: MgmtKeyType
    is_default: bool
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


class PivSession:
    """A session with the PIV application on one card.

    Construction selects the applet and reads the firmware version (``None`` on a generic PIV
    card, which does not know GET VERSION).
    """

    def __init__(self, connection: Connection, extended: bool | None = None) -> None:
        self.connection = connection
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
        try:
            return Version.from_bytes(data)
        except ValueError:
            # A 9000 with the wrong data is a garbled answer, not a generic card: treating
            # it as one would hide every YubiKey function (and send recover to the issuer).
            raise BadResponseError(f"GET VERSION returned {len(data)} bytes, expected 3"
                                   ) from None

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
        self._send_no_data(Ins.VERIFY, 0, KeyRef.PIN, pin_bytes(pin), sensitive=True)

    def pin_tries_by_verify(self) -> int | None:
        """Empty VERIFY: the PIN tries left without spending one; ``None`` when the PIN is
        already verified in this session (the card then does not say). 0 when blocked."""
        data, sw = self.protocol.send_raw(Apdu(0x00, Ins.VERIFY, 0, KeyRef.PIN))
        if sw == SW.OK:
            return None
        if 0x63C0 <= sw <= 0x63CF:
            return sw & 0x0F
        if sw == SW.AUTH_METHOD_BLOCKED:
            return 0
        raise error_for_sw(sw, data)

    def unverify_pin(self) -> None:
        """VERIFY with P1=FF: reset the PIN's security status (SP 800-73-4 Part 2 §3.2.1)."""
        self._send_no_data(Ins.VERIFY, 0xFF, KeyRef.PIN)

    def _change_reference(self, ins: int, ref: KeyRef, old: bytes | str, new: bytes | str,
                          what_old: str, what_new: str) -> None:
        data = pin_bytes(old, what_old) + pin_bytes(new, what_new)
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
        try:
            retries = items[0x06]
            return PinMetadata(items[0x05] != b"\x00", retries[0], retries[1])
        except (KeyError, IndexError) as e:
            raise BadResponseError(f"malformed metadata for {ref.name}") from e

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
            key_type = MgmtKeyType(items.get(0x01, b"\x03")[0])
            policy = items.get(0x02, b"\x00\x01")
            md = MgmtKeyMetadata(key_type, items.get(0x05, b"\x00") != b"\x00",
                                 TouchPolicy(policy[1]))
        except (ValueError, IndexError) as e:
            raise BadResponseError("malformed management key metadata") from e
        # Fill mgmt_key_type's cache: callers that read the metadata and then authenticate
        # (workflows.auth.authenticate) would otherwise send the same GET METADATA twice.
        self._mgmt_key_type = key_type
        return md

    @property
    def mgmt_key_type(self) -> MgmtKeyType:
        """The management key's algorithm: from metadata when the card has it, else the
        firmware's factory default (cached per session)."""
        if self._mgmt_key_type is None:
            if self.version is not None and has_metadata(self.version):
                self._mgmt_key_type = self.get_mgmt_key_metadata().key_type
            else:
                self._mgmt_key_type = default_mgmt_key_type(self.version)
        return self._mgmt_key_type

    def authenticate(self, key: bytes, key_type: MgmtKeyType | None = None) -> None:
        """GENERAL AUTHENTICATE with the management key, mutual (SP 800-73-4 Part 2 Appendix
        A.1, "mutual authentication"): the card proves it knows the key too.

        Raises :class:`~pivtool.core.errors.SecurityStatusError` for a wrong key."""
        kt = key_type or self.mgmt_key_type
        check_mgmt_key(kt, key)
        resp = self._send(Ins.GENERAL_AUTHENTICATE, kt, KeyRef.MGMT, tlv(0x7C, tlv(0x80)))
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
        """GET METADATA for a key slot (YubiKey 5.3+). :class:`NotFoundError` when empty."""
        items = self._metadata(slot)
        try:
            policy = items[0x02]
            return SlotMetadata(KeyType(items[0x01][0]), PinPolicy(policy[0]),
                                TouchPolicy(policy[1]),
                                Origin.GENERATED if items[0x03][0] == 1 else Origin.IMPORTED,
                                items[0x04])
        except (KeyError, IndexError, ValueError) as e:
            raise BadResponseError(f"malformed metadata for slot {slot.label}") from e

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
    "check_mgmt_key",
    "key_type_of",
    "parse_public_key",
    "pin_bytes",
]
