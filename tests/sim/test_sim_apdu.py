"""Raw-APDU golden tests, written by hand from SP 800-73-4, ISO 7816-4 and Yubico's docs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from simhelpers import run

from pivtool.sim import ATR_YUBIKEY5_NFC, ATR_YUBIKEY5_USB, VirtualCard

SELECT_PIV = "00A4040005A000000308"
# Yubico APDU docs: 61 11 4F 06 000010000100 79 07 4F 05 A000000308, 9000.
SELECT_PIV_RESPONSE = "61114F0600001000010079074F05A0000003089000"


def pin_block(pin: str) -> str:
    return pin.encode().hex().upper().ljust(16, "F")


def test_atr(make_card: Callable[..., VirtualCard]) -> None:
    assert make_card().atr.hex().upper() == "3BFD1300008131FE158073C021C057597562694B657940"
    assert make_card().atr == ATR_YUBIKEY5_USB
    assert make_card(interface="nfc").atr == ATR_YUBIKEY5_NFC
    generic = make_card(generic=True).atr
    tck = 0
    for b in generic[1:]:
        tck ^= b
    assert tck == 0  # TCK makes the XOR of T0..TCK zero


def test_select(card: VirtualCard) -> None:
    assert run(card, SELECT_PIV) == SELECT_PIV_RESPONSE
    # The full AID with version selects too.
    assert run(card, "00A404000BA000000308000010000100") == SELECT_PIV_RESPONSE
    assert run(card, "00A4040005A000000309") == "6A82"
    assert run(card, "00A4040007A0000005272001") == "6A82"  # OTP not emulated


def test_no_applet_selected(card: VirtualCard) -> None:
    assert run(card, "00FD000000") == "6D00"


def test_verify_pin_golden(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    assert run(card, "00200080") == "63C3"
    assert run(card, "0020008008" + pin_block("000000")) == "63C2"
    assert run(card, "00200080") == "63C2"
    assert run(card, "0020008008" + pin_block("123456")) == "9000"
    assert run(card, "00200080") == "9000"
    assert run(card, "002000800431323334") == "6A80"  # not an 8-byte block
    assert run(card, "0020FF80") == "9000"  # reset security status
    assert run(card, "00200080") == "63C3"
    assert run(card, "00200081") == "6A86"


def test_pin_blocked_6983(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    for expected in ("63C2", "63C1", "63C0"):
        assert run(card, "0020008008" + pin_block("999999")) == expected
    assert run(card, "0020008008" + pin_block("123456")) == "6983"
    assert run(card, "00200080") == "6983"
    assert run(card, "00FB0000") == "6985"  # PUK not blocked yet
    for expected in ("63C2", "63C1", "63C0"):
        assert run(card, "002C008010" + pin_block("00000000") + pin_block("123456")) == expected
    assert run(card, "002C008010" + pin_block("12345678") + pin_block("123456")) == "6983"
    assert run(card, "00FB0000") == "9000"
    assert run(card, "00200080") == "63C3"


def test_version_serial_discovery(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    assert run(card, "00FD0000") == "0507019000"
    assert run(card, "00F80000") == f"{card.state.serial:08X}9000"
    assert run(card, "00CB3FFF035C017E") == "7E124F0BA0000003080000100001005F2F0240009000"
    assert run(card, "00CB3FFF055C035FC102") == "6A82"
    assert run(card, "00CB3FFF055C035FC102" + "00") == "6A82"
    assert run(card, "00CB0000055C035FC102") == "6A86"


def test_metadata_golden(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    assert run(card, "00F70080") == "0101FF050101060203039000"
    assert run(card, "00F70081") == "0101FF050101060203039000"
    assert run(card, "00F7009B") == "01010A020201010501019000"
    assert run(card, "00F7009A") == "6A88"
    assert run(card, "00F70096") == "6A88"  # not a YubiKey Bio


def test_management_auth_golden_tdes(make_card: Callable[..., VirtualCard]) -> None:
    """Mutual authentication with 3DES, computed independently of the card's code."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    card = make_card(firmware=(5, 4, 3))
    key = bytes.fromhex("010203040506070801020304050607080102030405060708")
    cipher = Cipher(TripleDES(key), modes.ECB())
    run(card, SELECT_PIV)
    assert run(card, "0087039B047C028000")[-4:] == "9000"
    resp = run(card, "0087039B047C028000")  # a second request replaces the witness
    assert resp.startswith("7C0A8008") and resp.endswith("9000")
    witness = bytes.fromhex(resp[8:24])
    dec = cipher.decryptor()
    plain = dec.update(witness) + dec.finalize()
    challenge = bytes.fromhex("0011223344556677")
    body = "7C14" + "8008" + plain.hex() + "8108" + challenge.hex()
    resp = run(card, "0087039B16" + body)
    enc = cipher.encryptor()
    expected = (enc.update(challenge) + enc.finalize()).hex().upper()
    assert resp == "7C0A8208" + expected + "9000"
    # Authenticated: PUT DATA now works.
    assert run(card, "00DB3FFF095C035FC1025302AABB") == "9000"
    assert run(card, "00CB3FFF055C035FC102") == "5302AABB9000"


def test_management_single_auth_and_wrong_algorithm(make_card: Callable[..., VirtualCard]) -> None:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    card = make_card(firmware=(5, 4, 3))
    run(card, SELECT_PIV)
    assert run(card, "0087089B047C028000") == "6A80"  # card holds a 3DES key
    resp = run(card, "0087039B047C028100")
    assert resp.startswith("7C0A8108")
    challenge = bytes.fromhex(resp[8:24])
    key = bytes.fromhex("010203040506070801020304050607080102030405060708")
    enc = Cipher(TripleDES(key), modes.ECB()).encryptor()
    answer = (enc.update(challenge) + enc.finalize()).hex()
    assert run(card, "0087039B0C7C0A8208" + answer) == "9000"
    assert run(card, "0087039B0C7C0A8208" + answer) == "6A80"  # challenge used up


def test_opensc_get_challenge(card: VirtualCard) -> None:
    """OpenSC's piv_get_challenge: 00 87 00 9B 04 7C028100 -> 7C xx 81 len random."""
    run(card, SELECT_PIV)
    first = run(card, "0087009B047C028100")
    second = run(card, "0087009B047C028100")
    assert first.startswith("7C1281") and first.endswith("9000")  # AES-192: 16 bytes
    assert first != second


def test_put_data_requires_auth(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    assert run(card, "00DB3FFF095C035FC1025302AABB") == "6982"


def test_generic_mode_raw(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(generic=True)
    assert run(card, "00A4040008A000000527471117") == "6A82"
    assert run(card, SELECT_PIV) == SELECT_PIV_RESPONSE
    for ins in ("FD", "F8", "F7", "F9", "FA", "FB", "FE", "FF", "F6"):
        assert run(card, f"00{ins}0000") == "6D00", ins
    assert run(card, "00200080") == "63C3"
    assert run(card, "0020008008" + pin_block("123456")) == "9000"
    assert run(card, "00CB3FFF035C017E")[-4:] == "9000"


def test_management_select(card: VirtualCard) -> None:
    assert run(card, "00A4040008A000000527471117") == b"5.7.1".hex().upper() + "9000"


@pytest.mark.parametrize(
    "apdu,sw",
    [
        ("00", "6700"),
        ("00A404", "6700"),
        ("00A4040005A0000003", "6700"),  # Lc says 5, 4 bytes follow
        ("80FD0000", "6E00"),
        ("84FD0000", "6E00"),
        ("0000000000", "6D00"),
        ("00C00000", "6985"),  # GET RESPONSE with nothing pending
    ],
)
def test_malformed(card: VirtualCard, apdu: str, sw: str) -> None:
    run(card, SELECT_PIV)
    assert run(card, apdu) == sw


def test_chaining_and_get_response(admin_card: VirtualCard) -> None:
    card = admin_card
    value = bytes(range(256)) * 2  # 512 bytes: needs 3 short command parts
    body = bytes.fromhex("5C035FC102") + b"\x53\x82\x02\x00" + value
    parts = [body[i : i + 255] for i in range(0, len(body), 255)]
    for part in parts[:-1]:
        assert run(card, "10DB3FFF" + f"{len(part):02X}" + part.hex()) == "9000"
    last = parts[-1]
    assert run(card, "00DB3FFF" + f"{len(last):02X}" + last.hex()) == "9000"
    # Read back with short APDUs: 256 bytes, then 61xx, then GET RESPONSE.
    resp = card.execute(bytes.fromhex("00CB3FFF055C035FC102"))
    assert len(resp) == 258 and resp[-2:] == bytes([0x61, 0x00])
    got = resp[:-2]
    resp = card.execute(bytes.fromhex("00C0000000"))
    assert resp[-2:] == b"\x61\x04"
    got += resp[:-2]
    resp = card.execute(bytes.fromhex("00C0000004"))
    assert resp[-2:] == b"\x90\x00"
    got += resp[:-2]
    assert got == b"\x53\x82\x02\x00" + value
    # Extended length: the whole answer at once.
    resp = card.execute(bytes.fromhex("00CB3FFF0000055C035FC1020000"))
    assert resp == b"\x53\x82\x02\x00" + value + b"\x90\x00"


def test_interrupted_chain_is_dropped(admin_card: VirtualCard) -> None:
    card = admin_card
    assert run(card, "10DB3FFF055C035FC102") == "9000"
    assert run(card, "00FD0000") == "0507019000"  # a different command: chain abandoned
    assert run(card, "00DB3FFF045302AABB") == "6A80"  # the tail alone is malformed


@pytest.fixture
def admin_card(card: VirtualCard) -> VirtualCard:
    """Card with PIV selected and the (AES-192 default) management key authenticated."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    run(card, SELECT_PIV)
    resp = run(card, "00870A9B047C028000")
    witness = bytes.fromhex(resp[8:40])
    key = bytes.fromhex("010203040506070801020304050607080102030405060708")
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    dec = cipher.decryptor()
    plain = dec.update(witness) + dec.finalize()
    body = "7C24" + "8010" + plain.hex() + "8110" + "00" * 16
    assert run(card, "00870A9B26" + body).endswith("9000")
    return card
