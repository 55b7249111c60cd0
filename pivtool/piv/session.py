"""PivSession: one typed method per PIV card command (SP 800-73-4 Part 2 §3) and per YubiKey
extension. Each docstring states what the card requires first ("needs PIN", "needs
management key"). The session borrows a :class:`~pivtool.core.connection.Connection`; it never
opens or closes one.

What the commands carry is encoded and decoded in :mod:`pivtool.piv.encoding`, the card's
answers about itself and its keys are the dataclasses of :mod:`pivtool.piv.metadata`, and a
refusal is put into words by :mod:`pivtool.piv.wording`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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
from ..core.sw import SW
from ..core.tlv import TlvError, parse_dict, tlv, unwrap
from .constants import (
    PIV_AID,
    Ins,
    KeyRef,
    KeyType,
    MgmtKeyType,
    ObjectId,
    PinPolicy,
    Slot,
    TouchPolicy,
)
from .encoding import (
    check_mgmt_key,
    import_key_data,
    key_type_of,
    mgmt_key_ecb,
    parse_certificate,
    parse_public_key,
    pin_bytes,
    policy_tlvs,
)
from .metadata import (
    NO_METADATA,
    ApplicationProperties,
    MgmtKeyMetadata,
    PinMetadata,
    SlotMetadata,
    SlotProbe,
    parse_application_properties,
    parse_mgmt_key_metadata,
    parse_pin_metadata,
    parse_slot_metadata,
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
from .wording import worded

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
            raise worded(e, ins, p1, p2, what) from e

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
        return parse_application_properties(data)

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

    def get_pin_metadata(self) -> PinMetadata:
        """GET METADATA for the PIN (YubiKey 5.3+): default flag and tries, without spending
        one."""
        return parse_pin_metadata(KeyRef.PIN, self._metadata(KeyRef.PIN))

    def get_puk_metadata(self) -> PinMetadata:
        """GET METADATA for the PUK (YubiKey 5.3+)."""
        return parse_pin_metadata(KeyRef.PUK, self._metadata(KeyRef.PUK))

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
        # Firmware that omits the algorithm has a 3DES key (yubikit's default too); it is
        # still confirmed by the card's witness when authenticating.
        self._mgmt_key_guess = 0x01 not in items
        md = parse_mgmt_key_metadata(items)
        # Fill mgmt_key_type's cache: callers that read the metadata and then authenticate
        # (workflows.auth.authenticate) would otherwise send the same GET METADATA twice.
        self._mgmt_key_type = None if self._mgmt_key_guess else md.key_type
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
        decrypted = mgmt_key_ecb(kt, key, witness, encrypt=False)
        challenge = os.urandom(kt.block_len)
        resp = self._send(Ins.GENERAL_AUTHENTICATE, kt, KeyRef.MGMT,
                          tlv(0x7C, tlv(0x80, decrypted) + tlv(0x81, challenge)),
                          sensitive=True)
        try:
            encrypted = unwrap(unwrap(resp, 0x7C), 0x82)
        except TlvError as e:
            raise BadResponseError(f"management key response: {e}") from None
        import hmac  # only here: hashlib costs start-up time for every command

        if not hmac.compare_digest(mgmt_key_ecb(kt, key, challenge, encrypt=True), encrypted):
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
        return parse_slot_metadata(slot, self._metadata(slot))

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
        template = tlv(0x80, bytes((key_type,))) + policy_tlvs(pin_policy, touch_policy)
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
        self._require_yubikey("IMPORT KEY")
        key_type = key_type_of(private_key)
        check_key_support(self.version, key_type, pin_policy, touch_policy, generate=False)
        data = import_key_data(private_key, key_type) + policy_tlvs(pin_policy, touch_policy)
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


__all__ = ["PivSession"]
