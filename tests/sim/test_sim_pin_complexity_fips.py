"""PIN complexity (YubiKey 5.7) and the YubiKey 5 FIPS profile, judged by yubikit.

Sources: Yubico .NET SDK "PIN complexity policy" (violations are ConditionsNotSatisfied,
6985; examples 11111111, password, 12345678), ykman's device tests (TestPinComplexity:
111111, 22222222, abc123, password, 123123 refused; 123458 and 12345679 accepted), Yubico's
YubiKey 5 FIPS PIV exceptions and ykman's FIPS checks (RSA1024, X25519, PIN policy NEVER,
TDES management key).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from simhelpers import YubikitConnection, run
from yubikit.core.smartcard import ApduError
from yubikit.management import CAPABILITY, ManagementSession
from yubikit.piv import (
    DEFAULT_MANAGEMENT_KEY,
    KEY_TYPE,
    MANAGEMENT_KEY_TYPE,
    PIN_POLICY,
    SLOT,
    PivSession,
)

from pivtool.sim import VirtualCard
from pivtool.sim.state import new_card_state

SELECT_PIV = "00A4040005A000000308"


def pin_block(pin: str) -> str:
    return pin.encode().hex().upper().ljust(16, "F")


@pytest.mark.parametrize("new", ["111111", "22222222", "4444444", "abc123", "password",
                                 "PASSWORD", "123123", "12345678", "123456"])
def test_trivial_pin_refused_6985_no_try_spent(
    make_card: Callable[..., VirtualCard], new: str
) -> None:
    card = make_card(pin_complexity=True)
    run(card, SELECT_PIV)
    assert run(card, "0024008010" + pin_block("123456") + pin_block(new)) == "6985"
    assert run(card, "00200080") == "63C3"  # the right old PIN: no try spent
    assert run(card, "0020008008" + pin_block("123456")) == "9000"  # PIN unchanged
    # The PUK and the unblock (new PIN) follow the same rule.
    assert run(card, "0024008110" + pin_block("12345678") + pin_block(new)) == "6985"
    assert run(card, "002C008010" + pin_block("12345678") + pin_block(new)) == "6985"
    assert run(card, "00F70081") == "0101FF050101060203039000"  # PUK: default, 3 of 3 left


@pytest.mark.parametrize("new", ["123458", "12345679", "11234567", "24681357"])
def test_ordinary_pins_accepted(make_card: Callable[..., VirtualCard], new: str) -> None:
    card = make_card(pin_complexity=True)
    piv = PivSession(YubikitConnection(card))
    piv.change_pin("123456", new)
    piv.verify_pin(new)


def test_wrong_old_pin_counts_before_complexity(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card(pin_complexity=True)
    run(card, SELECT_PIV)
    assert run(card, "0024008010" + pin_block("000000") + pin_block("111111")) == "63C2"


def test_complexity_off_by_default_and_reported(make_card: Callable[..., VirtualCard]) -> None:
    plain = make_card()
    assert not ManagementSession(YubikitConnection(plain)).read_device_info().pin_complexity
    PivSession(YubikitConnection(plain)).change_pin("123456", "111111")
    strict = make_card(pin_complexity=True)
    assert ManagementSession(YubikitConnection(strict)).read_device_info().pin_complexity


def test_complexity_needs_5_7() -> None:
    with pytest.raises(ValueError, match=r"5\.7"):
        new_card_state(firmware=(5, 4, 3), pin_complexity=True)


# --- FIPS -------------------------------------------------------------------------------


@pytest.fixture
def fips_card(make_card: Callable[..., VirtualCard]) -> VirtualCard:
    return make_card(profile="yubikey-5.7-fips")


def test_fips_capable_then_approved_after_credentials_change(fips_card: VirtualCard) -> None:
    def info() -> object:
        return ManagementSession(YubikitConnection(fips_card)).read_device_info()

    first = info()
    assert first.is_fips and first.pin_complexity  # type: ignore[attr-defined]
    assert CAPABILITY.PIV in first.fips_capable  # type: ignore[attr-defined]
    assert CAPABILITY.PIV not in first.fips_approved  # type: ignore[attr-defined]
    piv = PivSession(YubikitConnection(fips_card))
    piv.change_pin("123456", "12345679")
    piv.change_puk("12345678", "12345670")
    assert CAPABILITY.PIV not in info().fips_approved  # type: ignore[attr-defined]
    piv = PivSession(YubikitConnection(fips_card))  # info() selected the management applet
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.set_management_key(MANAGEMENT_KEY_TYPE.AES192, bytes(range(1, 25)))
    assert CAPABILITY.PIV in info().fips_approved  # type: ignore[attr-defined]


@pytest.mark.parametrize(("key_type", "pin_policy"), [
    (KEY_TYPE.RSA1024, PIN_POLICY.DEFAULT),
    (KEY_TYPE.X25519, PIN_POLICY.DEFAULT),
    (KEY_TYPE.ECCP256, PIN_POLICY.NEVER),
])
def test_fips_refuses_excluded_keys(
    fips_card: VirtualCard, key_type: KEY_TYPE, pin_policy: PIN_POLICY
) -> None:
    piv = PivSession(YubikitConnection(fips_card))
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    with pytest.raises(ApduError) as e:
        piv.generate_key(SLOT.AUTHENTICATION, key_type, pin_policy=pin_policy)
    assert e.value.sw == 0x6A80
    piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, pin_policy=PIN_POLICY.ONCE)


def test_fips_refuses_3des_management_key(fips_card: VirtualCard) -> None:
    piv = PivSession(YubikitConnection(fips_card))
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    with pytest.raises(ApduError) as e:
        piv.set_management_key(MANAGEMENT_KEY_TYPE.TDES, bytes(range(1, 25)))
    assert e.value.sw == 0x6A80
