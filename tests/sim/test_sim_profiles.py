"""Card profiles: raw APDUs per kind of card (written from yubikit's version gates, SP 800-73-4
and the field notes in /work/shared/pcsc-facts.md), plus the state file and ``sim create``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from simhelpers import YubikitConnection, run
from yubikit.piv import DEFAULT_MANAGEMENT_KEY, KEY_TYPE, SLOT, PivSession

from pivtool.sim import VirtualCard
from pivtool.sim.profiles import (
    ATR_YUBIKEY4_USB,
    ATR_YUBIKEY5_NFC,
    ATR_YUBIKEY_NEO_USB,
    PROFILES,
    profile_for,
)
from pivtool.sim.state import load_state, new_card_state, save_state, state_to_json
from tests.cli.clihelp import run as cli

SELECT_PIV = "00A4040005A000000308"
SELECT_MGMT = "00A4040008A000000527471117"
AUTH_WITNESS_AES192 = "0087" + "0A9B047C028000"
AUTH_WITNESS_TDES = "0087" + "039B047C028000"
YUBICO_INS = ("FD", "F8", "F7", "F9", "FA", "FB", "FE", "FF", "F6")


def pin_block(pin: str) -> str:
    return pin.encode().hex().upper().ljust(16, "F")


def _admin(card: VirtualCard) -> PivSession:
    piv = PivSession(YubikitConnection(card))
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    return piv


def test_atr_builders_reproduce_known_atrs() -> None:
    assert ATR_YUBIKEY5_NFC.hex().upper() == "3B8D80018073C021C057597562694B6579F9"
    for atr in (ATR_YUBIKEY4_USB, ATR_YUBIKEY_NEO_USB, *(p.atr_usb for p in PROFILES.values()),
                *(p.atr_nfc for p in PROFILES.values())):
        tck = 0
        for b in atr[1:]:
            tck ^= b
        assert tck == 0, atr.hex()  # TCK makes the XOR of T0..TCK zero


def test_every_profile_answers_select_and_verify(make_card: Callable[..., VirtualCard]) -> None:
    atrs = set()
    for name in PROFILES:
        card = make_card(profile=name)
        atrs.add(card.atr)
        assert run(card, SELECT_PIV).endswith("9000"), name
        assert run(card, "0020008008" + pin_block("123456")) == "9000", name
    # Each kind of card is told apart by its ATR (the three YubiKey 5 profiles, 5.7, 5.7
    # FIPS and 5.4, share one: a FIPS key tells what it is in its device info).
    assert len(atrs) == len(PROFILES) - 2


def test_firmware_shorthand_maps_onto_profiles() -> None:
    assert profile_for((5, 7, 1)) == "yubikey-5.7"
    assert profile_for((5, 2, 7)) == "yubikey-5.4"
    assert profile_for((4, 3, 5)) == "yubikey-4.3"
    assert profile_for((1, 0, 4)) == "yubikey-neo"
    assert profile_for((5, 7, 1), generic=True) == "generic"
    assert new_card_state(firmware=(4, 3, 5)).profile == "yubikey-4.3"
    assert new_card_state(profile="yubikey-4.3").firmware == (4, 3, 7)
    with pytest.raises(ValueError):
        new_card_state(generic=True, profile="yubikey-neo")


def test_yubikey_54_and_43(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(profile="yubikey-5.4")
    run(card, SELECT_PIV)
    assert run(card, "00FD0000") == "0504039000"
    assert run(card, "00F7009B")[-4:] == "9000"
    card = make_card(profile="yubikey-4.3")
    assert card.atr == ATR_YUBIKEY4_USB
    run(card, SELECT_PIV)
    assert run(card, "00FD0000") == "0403079000"
    assert run(card, "00F80000") == "6D00"  # GET SERIAL from 5.0
    assert run(card, "00F700009A") == "6D00"  # GET METADATA from 5.3
    assert run(card, "00F99A00") == "6A80"  # ATTEST exists (empty slot)


def test_neo(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(profile="yubikey-neo")
    assert card.atr == ATR_YUBIKEY_NEO_USB
    assert run(card, SELECT_MGMT) == b"3.4.9".hex().upper() + "9000"
    assert run(card, "001D0000") == "6D00"  # no READ CONFIG: yubikit uses OTP on a NEO
    run(card, SELECT_PIV)
    assert run(card, "00FD0000") == "0100049000"
    for ins in ("F8", "F7", "F9", "F6"):
        assert run(card, f"00{ins}9A00") == "6D00", ins
    assert run(card, AUTH_WITNESS_AES192) == "6A80"  # 3DES key only
    assert run(card, AUTH_WITNESS_TDES)[-4:] == "9000"
    assert 0xF9 not in card.state.keys  # no attestation key
    piv = _admin(card)
    piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256)
    card.piv.session.mgmt_authenticated = True
    run(card, SELECT_PIV)
    card.piv.session.mgmt_authenticated = True
    gen = "0047009A"
    # P-384 needs YubiKey 4; PIN/touch policy tags too; retired slots do not exist.
    assert run(card, gen + "05AC03800114") == "6A80"
    assert run(card, gen + "08AC06800111AA0101") == "6A80"
    assert run(card, "00470082" + "05AC03800111") == "6A86"
    # SET MANAGEMENT KEY with AES: 5.4 and later.
    new = "0A9B18" + "11" * 24
    assert run(card, "00FFFFFF1B" + new) == "6A80"


def test_generic(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(profile="generic")
    assert run(card, SELECT_MGMT) == "6A82"
    run(card, SELECT_PIV)
    for ins in YUBICO_INS:
        assert run(card, f"00{ins}0000") == "6D00", ins
    # Extended-length APDUs are refused: a short-APDU-only card.
    assert run(card, "00CB3FFF000005 5C035FC102 0000".replace(" ", "")) == "6700"
    assert run(card, "00CB3FFF05 5C035FC102 00".replace(" ", "")) == "6A82"
    # PIN tries from an empty VERIFY; the PUK's cannot be read.
    assert run(card, "00200080") == "63C3"
    assert run(card, "00200081") == "6A88"
    assert run(card, "0020008108" + pin_block("12345678")) == "6A88"
    # Its management key is AES-192; 3DES is the wrong algorithm.
    assert run(card, AUTH_WITNESS_TDES) == "6A80"
    assert run(card, AUTH_WITNESS_AES192)[-4:] == "9000"
    assert card.state.mgmt_key_type == 0x0A and 0xF9 not in card.state.keys
    card.piv.session.mgmt_authenticated = True
    # Per-slot algorithm limits: 9a takes RSA-2048/P-256, not P-384; 9c takes P-384.
    assert run(card, "0047009A05AC03800114") == "6A80"
    assert run(card, "0047009A05AC03800106") == "6A80"  # no RSA-1024
    assert run(card, "0047009A05AC038001E0") == "6A80"  # no Ed25519
    assert run(card, "0047009C05AC03800114")[-4:] == "9000"
    assert run(card, "0047009A05AC03800111")[-4:] == "9000"
    assert run(card, "0047009A08AC06800111AB0101") == "6A80"  # no touch policy
    assert run(card, "004700F905AC03800111") == "6A86"  # no attestation slot


def test_yubikey_compatible_metadata(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(profile="yubikey-compatible")
    assert run(card, SELECT_MGMT) == "6A82"
    run(card, SELECT_PIV)
    assert run(card, "00FD0000") == "0504039000"
    # Empty slot: 9000, policies (PIN once, touch never) and origin 0, no algorithm.
    assert run(card, "00F7009A") == "02020201" + "030100" + "9000"
    assert run(card, "00F70096") == "6A86"  # unknown reference
    assert run(card, "00200096") == "6A86"
    piv = _admin(card)
    piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256)
    md = run(card, "00F7009A")
    assert md.startswith("010111") and "030100" in md and md.endswith("9000")  # origin 0
    # An imported key: metadata answers SW 0002; ATTEST still works.
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    piv.put_key(SLOT.SIGNATURE, key)
    assert run(card, "00F7009C") == "0002"
    attested = piv.attest_key(SLOT.SIGNATURE).public_key()
    assert isinstance(attested, ec.EllipticCurvePublicKey)
    assert attested.public_numbers() == key.public_key().public_numbers()


def test_state_file_keeps_profile_and_old_files_load(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    for name in PROFILES:
        save_state(new_card_state(profile=name), path)
        assert load_state(path).profile == name
    # A state file written before profiles: "generic" and the firmware decide.
    for generic, fw, expected in ((True, [5, 7, 1], "generic"),
                                  (False, [5, 4, 3], "yubikey-5.4"),
                                  (False, [5, 7, 1], "yubikey-5.7")):
        d = state_to_json(new_card_state(firmware=tuple(fw), generic=generic))  # type: ignore[arg-type]
        del d["profile"]
        d["generic"] = generic
        path.write_text(json.dumps(d))
        assert load_state(path).profile == expected
    d["profile"] = "nokia-3310"
    path.write_text(json.dumps(d))
    with pytest.raises(Exception, match="unknown card profile"):
        load_state(path)


def test_sim_create_profile_cli(tmp_path: Path) -> None:
    r = cli(None, "--json", "sim", "create", str(tmp_path / "a.json"), "--profile",
            "yubikey-neo")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["profile"], out["firmware"], out["generic"]) == ("yubikey-neo", "1.0.4", False)
    r = cli(None, "sim", "create", str(tmp_path / "b.json"), "--generic")
    assert r.exit_code == 0 and "PIV card" in r.output
    assert load_state(tmp_path / "b.json").profile == "generic"
    r = cli(None, "sim", "create", str(tmp_path / "c.json"), "--firmware", "4.3.5")
    assert r.exit_code == 0 and load_state(tmp_path / "c.json").profile == "yubikey-4.3"
    r = cli(None, "sim", "create", str(tmp_path / "d.json"), "--profile", "yubikey-5.4",
            "--firmware", "5.2.7")
    st = load_state(tmp_path / "d.json")
    assert r.exit_code == 0 and (st.profile, st.firmware) == ("yubikey-5.4", (5, 2, 7))
    r = cli(None, "sim", "create", str(tmp_path / "e.json"), "--generic", "--profile",
            "yubikey-neo")
    assert r.exit_code == 2 and "contradicts" in r.output
    assert not (tmp_path / "e.json").exists()
