"""Protocol-fidelity review of the virtual YubiKey: behaviours checked against Yubico's own
sources (ykman, yubikit, Yubico's .NET SDK documentation)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pivtool.core.apdu import Apdu
from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, PinPolicy, Slot
from pivtool.piv.session import PivSession
from pivtool.sim.card import VirtualCard
from pivtool.sim.state import new_card_state

PIN = "123456"


def admin(s: PivSession) -> PivSession:
    s.authenticate(DEFAULT_MGMT_KEY)
    s.verify_pin(PIN)
    return s


def raw(s: PivSession, ins: int, p1: int = 0, p2: int = 0, data: bytes = b"") -> int:
    return s.protocol.send_raw(Apdu(0x00, ins, p1, p2, data))[1]


def test_move_onto_occupied_slot_is_refused(session: PivSession) -> None:
    # Yubico: "the destination slot must be empty"; ykman maps 6A80 to "DEST slot is not
    # empty". The emulator used to overwrite the destination key.
    admin(session)
    session.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
    session.generate_key(Slot.SIGNATURE, KeyType.ECCP384)
    before = session.get_slot_metadata(Slot.SIGNATURE)
    assert raw(session, 0xF6, Slot.SIGNATURE, Slot.AUTHENTICATION) == 0x6A80
    assert session.get_slot_metadata(Slot.SIGNATURE) == before
    assert session.get_slot_metadata(Slot.AUTHENTICATION).key_type is KeyType.ECCP256


def test_attestation_key_can_be_deleted_but_not_moved(session: PivSession) -> None:
    # Yubico .NET SDK: "Any key, including the attestation key, can be deleted"; a move
    # "source slot must not be the Attestation slot".
    admin(session)
    assert raw(session, 0xF6, Slot.RETIRED1, Slot.ATTESTATION) == 0x6A86
    assert raw(session, 0xF6, 0xFF, Slot.ATTESTATION) == 0x9000
    assert not session.slot_key_present(Slot.ATTESTATION)


@pytest.mark.parametrize("tag", [0x5F0000, 0x5FC124, 0x5FABCD])
def test_any_5fxxxx_tag_is_a_data_object(session: PivSession, tag: int) -> None:
    # Yubico .NET SDK "PIV data objects": any number 5F0000-5FFFFF is a valid DataTag.
    admin(session)
    session.put_data(tag, b"\x01\x02app data")
    assert session.get_data(tag) == b"\x01\x02app data"


def test_attestation_key_signs_nothing_but_attestations(session: PivSession) -> None:
    # Yubico "Authenticate: sign": f9 "cannot sign arbitrary data, only attestation
    # statements". The emulator used to sign with it.
    session.verify_pin(PIN)
    data = b"\x7c\x24\x82\x00\x81\x20" + bytes(32)
    assert raw(session, 0x87, KeyType.ECCP256, Slot.ATTESTATION, data) != 0x9000


def test_extended_apdu_longer_than_ccid_limit_is_refused() -> None:
    # yubikit _MaxApduSize.YK4_3 = 3062: a YubiKey 4.3+ takes no longer APDU over USB.
    card = VirtualCard(new_card_state())
    card.execute(bytes.fromhex("00A4040005A000000308"))
    data = bytes(3062 - 7)
    assert card.execute(b"\x00\xdb\x3f\xff\x00" + len(data).to_bytes(2, "big") + data)[-2:] \
        != b"\x67\x00"  # exactly 3062 bytes: the key looks at it (6982, no mgmt key)
    data += b"\x00"
    assert card.execute(b"\x00\xdb\x3f\xff\x00" + len(data).to_bytes(2, "big") + data)[-2:] \
        == b"\x67\x00"


def test_default_pin_policies_per_slot(session: PivSession) -> None:
    # ykman tests/device/test_piv.py test_slot_metadata_put: 9a ONCE, 9c ALWAYS, 9d ONCE,
    # 9e NEVER for keys imported with the default policy.
    admin(session)
    want = {Slot.AUTHENTICATION: PinPolicy.ONCE, Slot.SIGNATURE: PinPolicy.ALWAYS,
            Slot.KEY_MANAGEMENT: PinPolicy.ONCE, Slot.CARD_AUTH: PinPolicy.NEVER}
    for slot, policy in want.items():
        session.import_key(slot, ec.generate_private_key(ec.SECP256R1()))
        assert session.get_slot_metadata(slot).pin_policy is policy


def test_management_key_algorithm_mismatch_is_6a80(session: PivSession) -> None:
    # piv-go/cosign hardcoding 3DES (P1 03) against a 5.7 key's AES-192 default get
    # "smart card error 6a80" (sigstore/cosign#3742; Yubico.NET.SDK#160 likewise).
    assert raw(session, 0x87, 0x03, 0x9B, bytes.fromhex("7c028000")) == 0x6A80
