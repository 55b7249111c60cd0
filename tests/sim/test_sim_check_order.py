"""Golden status words for the order of checks: format, security status, existence, conditions.

A card that looks for an object before checking access tells an unauthenticated client
whether it exists; ykman's PIN-protected management key relies on the opposite (issue 20:
``TestManagementKeyReadOnly`` in ykman's device tests). SP 800-73-4 Table 2 names the
objects read with the PIN; a YubiKey answers 6982 for them without the PIN, full or empty.
"""

from __future__ import annotations

import pytest
from simhelpers import run
from yubikit.piv import DEFAULT_MANAGEMENT_KEY, PivSession

from pivtool.sim import VirtualCard

SELECT_PIV = "00A4040005A000000308"
PIN_PROTECTED = ("5FC103", "5FC108", "5FC109", "5FC121")  # fingerprints, facial, printed, iris


def pin_block(pin: str) -> str:
    return pin.encode().hex().upper().ljust(16, "F")


def get_data(card: VirtualCard, tag: str) -> str:
    return run(card, "00CB3FFF055C03" + tag)


@pytest.mark.parametrize("tag", PIN_PROTECTED)
def test_pin_protected_object_is_6982_without_pin_empty_or_not(
    card: VirtualCard, piv: PivSession, tag: str
) -> None:
    run(card, SELECT_PIV)
    assert get_data(card, tag) == "6982"  # empty, no PIN: access first
    run(card, "0020008008" + pin_block("123456"))
    assert get_data(card, tag) == "6A82"  # empty, PIN verified: now existence

    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.put_object(int(tag, 16), b"\x01\x02")
    card.power_cycle()
    run(card, SELECT_PIV)
    assert get_data(card, tag) == "6982"  # full, no PIN
    run(card, "0020008008" + pin_block("123456"))
    assert get_data(card, tag) == "530201029000"


def test_ordinary_object_needs_no_pin(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    assert get_data(card, "5FC105") == "6A82"  # 9A certificate: always readable, empty


def test_malformed_tag_list_before_security(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    assert run(card, "00CB3FFF045C035FC1") == "6A80"  # 5C says 3 bytes, has 2
    assert run(card, "00CB3FFF035D017E") == "6A80"  # not a tag list


def test_change_pin_old_value_before_new_value_format(card: VirtualCard) -> None:
    """The old PIN is compared first, so a malformed new PIN after a wrong old one costs a
    try — yubikit's reset blocks the PIN this way (empty blocks) and needs the count."""
    run(card, SELECT_PIV)
    assert run(card, "0024008010" + pin_block("000000") + pin_block("12345")) == "63C2"
    assert run(card, "0024008010" + "FF" * 16) == "63C1"
    # Right old PIN, malformed new one: refused, PIN unchanged, tries back to 3.
    assert run(card, "0024008010" + pin_block("123456") + pin_block("12345")) == "6A80"
    assert run(card, "00200080") == "63C3"
    assert run(card, "0020008008" + pin_block("123456")) == "9000"


def test_unblock_puk_before_new_pin_format(card: VirtualCard) -> None:
    run(card, SELECT_PIV)
    for left in ("63C2", "63C1", "63C0"):
        assert run(card, "002C008010" + "FF" * 16) == left
    assert run(card, "002C008010" + pin_block("12345678") + pin_block("654321")) == "6983"
