"""The PIV applet's key commands: GENERAL AUTHENTICATE with a slot key, GENERATE
ASYMMETRIC, IMPORT KEY, MOVE/DELETE KEY and ATTEST (mixed into
:class:`~pivtool.sim.piv_applet.PivApplet`, which owns the card, the session and the
plumbing declared below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from . import keys as keyops
from .apdu import Command, Sw, SwError
from .attestation import attest
from .consts import (
    DEFAULT_PIN_POLICY,
    SLOT_ATTESTATION,
    KeyType,
    Origin,
    PinPolicy,
    TouchPolicy,
    slot_name,
)
from .state import SlotKey
from .tlv import TlvError, parse_dict, tlv, unwrap

if TYPE_CHECKING:
    from .card import VirtualCard
    from .piv_applet import AppletSession


class KeyCommands:
    """Key-slot command handlers; the attributes and helpers are the applet's."""

    card: VirtualCard
    session: AppletSession

    if TYPE_CHECKING:
        @property
        def fw(self) -> tuple[int, int, int]: ...

        @property
        def slots(self) -> frozenset[int]: ...

        def _require_fw(self, minimum: tuple[int, int, int]) -> None: ...

        def _require_mgmt(self) -> None: ...

        def _load(self, slot_key: SlotKey) -> keyops.PrivateKey: ...

        def _touch(self, slot: int, policy: int) -> None: ...

    def _use_key(self, cmd: Command, items: dict[int, bytes]) -> bytes:
        slot = cmd.p2
        # Yubico ("Authenticate: sign"): the f9 attestation key signs the attestation
        # statements it creates and nothing else.
        if slot not in self.slots or slot == SLOT_ATTESTATION:
            raise SwError(Sw.INCORRECT_P1P2)
        st = self.card.state
        slot_key = st.keys.get(slot)
        # No key, or P1 naming another algorithm than the slot holds: 6A80, as yubikit
        # expects ("INCORRECT_PARAMETERS ... No key?").
        if slot_key is None or cmd.p1 != slot_key.algorithm:
            raise SwError(Sw.INCORRECT_DATA)
        if 0x82 not in items or items[0x82]:
            raise SwError(Sw.INCORRECT_DATA)
        challenge = items.get(0x81)
        exponentiation = items.get(0x85)
        if (challenge is None) == (exponentiation is None):
            raise SwError(Sw.INCORRECT_DATA)
        self._check_pin_policy(slot_key)
        # The key blinks before it computes anything: no touch, no signature.
        self._touch(slot, slot_key.touch_policy)
        key = self._load(slot_key)
        if challenge is not None:
            if isinstance(key, rsa.RSAPrivateKey):
                result = keyops.rsa_raw(key, challenge)
            elif isinstance(key, ec.EllipticCurvePrivateKey):
                result = keyops.ecdsa_sign(key, challenge)
            elif isinstance(key, ed25519.Ed25519PrivateKey):
                result = key.sign(challenge)
            else:
                raise SwError(Sw.INCORRECT_DATA)
            what = "private key operation"
        else:
            assert exponentiation is not None
            if not isinstance(key, (ec.EllipticCurvePrivateKey, x25519.X25519PrivateKey)):
                raise SwError(Sw.INCORRECT_DATA)
            result = keyops.ecdh(key, exponentiation)
            what = "key agreement"
        self.card.log(f"{what} with slot {slot_name(slot)}")
        return tlv(0x7C, tlv(0x82, result))

    def _check_pin_policy(self, slot_key: SlotKey) -> None:
        sess = self.session
        policy = slot_key.pin_policy
        if policy == PinPolicy.NEVER:
            return
        if policy in (PinPolicy.ALWAYS, PinPolicy.MATCH_ALWAYS):
            if not (sess.pin_verified and sess.pin_fresh):
                raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)
            sess.pin_fresh = False
            return
        if not sess.pin_verified:
            raise SwError(Sw.SECURITY_STATUS_NOT_SATISFIED)

    # --- key management ---------------------------------------------------------------

    def _check_key_support(self, slot: int, key_type: KeyType, pin: int, touch: int,
                           policy_tags: bool) -> None:
        kind = self.card.profile
        if kind.slot_algorithms is not None:
            # A card with per-slot limits refuses other algorithms in that slot: "the card
            # refuses this algorithm in this slot" (6A80 on GENERATE).
            if key_type not in kind.slot_algorithms.get(slot, frozenset()):
                raise SwError(Sw.INCORRECT_DATA)
        elif self.fw < key_type.min_firmware:
            raise SwError(Sw.INCORRECT_DATA)
        if policy_tags and not kind.policies:
            # PIN/touch policies (tags AA/AB) are YubiKey 4+ extensions.
            raise SwError(Sw.INCORRECT_DATA)
        if pin not in (0, 1, 2, 3, 4, 5) or touch not in (0, 1, 2, 3):
            raise SwError(Sw.INCORRECT_DATA)
        if kind.fips and (key_type in (KeyType.RSA1024, KeyType.X25519)
                          or pin == PinPolicy.NEVER):
            # YubiKey 5 FIPS: no RSA-1024, no non-NIST curve, no PIN policy "never".
            raise SwError(Sw.INCORRECT_DATA)
        if pin in (PinPolicy.MATCH_ONCE, PinPolicy.MATCH_ALWAYS):
            # Only a YubiKey Bio has the fingerprint matcher these policies need.
            raise SwError(Sw.INCORRECT_DATA)
        if touch == TouchPolicy.CACHED and self.fw < (4, 3, 0):
            raise SwError(Sw.INCORRECT_DATA)

    def _store_key(
        self,
        slot: int,
        key: keyops.PrivateKey,
        key_type: KeyType,
        pin: int,
        touch: int,
        origin: Origin,
    ) -> None:
        resolved_pin = pin or DEFAULT_PIN_POLICY.get(slot, PinPolicy.ONCE)
        if slot == SLOT_ATTESTATION and not pin:
            resolved_pin = PinPolicy.NEVER
        self.card.state.keys[slot] = SlotKey(
            algorithm=int(key_type),
            private_key_pem=keyops.to_pem(key),
            pin_policy=int(resolved_pin),
            touch_policy=int(touch or TouchPolicy.NEVER),
            origin=int(origin),
        )
        self.card.mark_changed()

    def generate(self, cmd: Command) -> bytes:
        """GENERATE ASYMMETRIC KEY PAIR (47): template AC {80 alg, AA pin, AB touch}."""
        if cmd.p1 != 0x00 or cmd.p2 not in self.slots:
            raise SwError(Sw.INCORRECT_P1P2)
        self._require_mgmt()
        try:
            template = parse_dict(unwrap(0xAC, cmd.data))
            key_type = KeyType(template[0x80][0])
            pin = template.get(0xAA, b"\x00")[0]
            touch = template.get(0xAB, b"\x00")[0]
        except (TlvError, KeyError, IndexError, ValueError):
            raise SwError(Sw.INCORRECT_DATA) from None
        self._check_key_support(cmd.p2, key_type, pin, touch,
                                0xAA in template or 0xAB in template)
        key = keyops.generate(key_type)
        self._store_key(cmd.p2, key, key_type, pin, touch, Origin.GENERATED)
        self.card.log(f"key generated in slot {slot_name(cmd.p2)} ({key_type.name})")
        return tlv(0x7F49, keyops.public_key_tlvs(key))

    def import_key(self, cmd: Command) -> bytes:
        """IMPORT KEY (FE): P1 algorithm, P2 slot; key TLVs 01-08, AA pin, AB touch."""
        if cmd.p2 not in self.slots:
            raise SwError(Sw.INCORRECT_P1P2)
        self._require_mgmt()
        try:
            key_type = KeyType(cmd.p1)
        except ValueError:
            raise SwError(Sw.INCORRECT_P1P2) from None
        try:
            fields = parse_dict(cmd.data)
            pin = fields.get(0xAA, b"\x00")[0]
            touch = fields.get(0xAB, b"\x00")[0]
        except (TlvError, IndexError):
            raise SwError(Sw.INCORRECT_DATA) from None
        self._check_key_support(cmd.p2, key_type, pin, touch,
                                0xAA in fields or 0xAB in fields)
        key = keyops.import_key(key_type, fields)
        self._store_key(cmd.p2, key, key_type, pin, touch, Origin.IMPORTED)
        self.card.log(f"key imported into slot {slot_name(cmd.p2)} ({key_type.name})")
        return b""

    def move_key(self, cmd: Command) -> bytes:
        """MOVE KEY (F6, 5.7+): P1 destination slot or FF to delete, P2 source slot."""
        self._require_fw((5, 7, 0))
        src, dst = cmd.p2, cmd.p1
        # Yubico (.NET SDK MoveKey/DeleteKey docs): any key, the attestation key included,
        # can be deleted; only a move may not take the attestation key out of f9.
        if src not in self.slots or (dst != 0xFF and src == SLOT_ATTESTATION):
            raise SwError(Sw.INCORRECT_P1P2)
        if dst != 0xFF and (dst not in self.slots or dst in (SLOT_ATTESTATION, src)):
            raise SwError(Sw.INCORRECT_P1P2)
        self._require_mgmt()
        st = self.card.state
        if src not in st.keys:
            raise SwError(Sw.REFERENCE_NOT_FOUND)
        if dst != 0xFF and dst in st.keys:
            # "The destination slot must be empty"; ykman maps this 6A80 to "DEST slot is
            # not empty" (ykman/_cli/piv.py, keys move).
            raise SwError(Sw.INCORRECT_DATA)
        if dst == 0xFF:
            del st.keys[src]
            self.card.log(f"key deleted from slot {slot_name(src)}")
        else:
            st.keys[dst] = st.keys.pop(src)
            self.card.log(f"key moved from slot {slot_name(src)} to {slot_name(dst)}")
        self.card.mark_changed()
        return b""

    def attest(self, cmd: Command) -> bytes:
        """ATTEST (F9, 4.3+): certificate for a key generated in slot P1, signed by f9."""
        self._require_fw((4, 3, 0))
        slot = cmd.p1
        if slot not in self.slots or slot == SLOT_ATTESTATION or cmd.p2 != 0:
            raise SwError(Sw.INCORRECT_P1P2)
        st = self.card.state
        slot_key = st.keys.get(slot)
        f9 = st.keys.get(SLOT_ATTESTATION)
        # Imported keys cannot be attested on a YubiKey: that is the whole point of
        # attestation. Some third-party applets attest whatever the slot holds.
        imported_ok = self.card.profile.attest_imported
        if slot_key is None or f9 is None or (
                slot_key.origin != Origin.GENERATED and not imported_ok):
            raise SwError(Sw.INCORRECT_DATA)
        key = self._load(slot_key)
        cert_obj = st.objects.get(0x5FFF01)
        f9_cert = None
        if cert_obj:
            try:
                f9_cert = parse_dict(cert_obj).get(0x70)
            except TlvError:
                f9_cert = None
        f9_key = self._load(f9)
        if isinstance(f9_key, x25519.X25519PrivateKey):
            raise SwError(Sw.CONDITIONS_NOT_SATISFIED)
        try:
            der = attest(
                slot=slot,
                public_key=key.public_key(),
                pin_policy=slot_key.pin_policy,
                touch_policy=slot_key.touch_policy,
                firmware=st.firmware,
                serial=st.serial,
                form_factor=st.form_factor,
                f9_key=f9_key,
                f9_cert_der=f9_cert,
            )
        except ValueError:
            raise SwError(Sw.CONDITIONS_NOT_SATISFIED) from None
        self.card.log(f"attestation issued for slot {slot_name(slot)}")
        return der
