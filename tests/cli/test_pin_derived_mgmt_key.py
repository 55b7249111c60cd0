"""ykman's legacy PIN-derived management key (PIVMAN salt, tag 82), with ykman as the judge:
the card is set up by ykman's own functions, and ykman's derivation checks pivtool's."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from ykman.piv import (
    OBJECT_ID_PIVMAN_DATA,
    PivmanData,
    derive_management_key,
    get_pivman_data,
)
from yubikit.core import TRANSPORT
from yubikit.core.smartcard import SmartCardConnection
from yubikit.piv import DEFAULT_MANAGEMENT_KEY, MANAGEMENT_KEY_TYPE
from yubikit.piv import PivSession as YkPivSession

from pivtool.connect import SimLink, open_sim_link
from pivtool.piv.objects import derive_mgmt_key
from tests.cli.clihelp import make_card, run, run_json

PIN = "135790"


class _YkConnection(SmartCardConnection):
    """yubikit over pivtool's link to the virtual card file (state saved as it changes)."""

    def __init__(self, link: SimLink) -> None:
        self.link = link

    @property
    def transport(self) -> TRANSPORT:
        return TRANSPORT.USB

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        return self.link.transmit(bytes(apdu))

    def close(self) -> None:
        self.link.close()


def _ykman(card: Path) -> YkPivSession:
    return YkPivSession(_YkConnection(open_sim_link(card)))


def _derived_card(tmp_path: Path) -> Path:
    """A card with a PIN-derived key, written by ykman's own functions (its CLI no longer
    creates one; ``pivman_change_pin`` still maintains it)."""
    card = make_card(tmp_path)
    yk = _ykman(card)
    yk.authenticate(DEFAULT_MANAGEMENT_KEY)
    yk.verify_pin("123456")
    yk.change_pin("123456", PIN)
    pivman = PivmanData()
    pivman.salt = os.urandom(16)
    yk.set_management_key(MANAGEMENT_KEY_TYPE.TDES, derive_management_key(PIN, pivman.salt))
    yk.put_object(OBJECT_ID_PIVMAN_DATA, pivman.get_bytes())
    return card


@settings(max_examples=15, deadline=None, database=None)
@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=6, max_size=8),
       st.binary(min_size=16, max_size=16))
def test_derivation_is_ykmans(pin: str, salt: bytes) -> None:
    assert derive_mgmt_key(pin.encode(), salt) == derive_management_key(pin, salt)


def test_info_shows_it_and_the_pin_opens_the_card(tmp_path: Path) -> None:
    card = _derived_card(tmp_path)
    info = run_json(card, "info")
    assert info["management_key"]["pin_derived"] is True
    assert info["management_key"]["algorithm"] == "tdes"
    assert "derived from the PIN" in run(card, "info").output
    # Only the PIN is given: pivtool derives the key to write an object.
    (tmp_path / "obj.bin").write_bytes(b"hello")
    r = run(card, "objects", "write", "5fc10d", str(tmp_path / "obj.bin"),
            env={"PIVTOOL_PIN": PIN})
    assert r.exit_code == 0, r.output


def test_wrong_pin_spends_no_try(tmp_path: Path) -> None:
    card = _derived_card(tmp_path)
    (tmp_path / "obj.bin").write_bytes(b"hello")
    r = run(card, "objects", "write", "5fc10d", str(tmp_path / "obj.bin"),
            env={"PIVTOOL_PIN": "000000"})
    assert r.exit_code == 3
    assert "derived from the PIN was not accepted" in r.output
    assert run_json(card, "info")["pin"]["tries_left"] == 3


def test_pin_change_moves_the_derived_key_along(tmp_path: Path) -> None:
    card = _derived_card(tmp_path)
    new_pin = "24682468"
    out = run_json(card, "pin", "change", env={"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": new_pin})
    assert out["derived_mgmt_key_updated"] is True
    # ykman, reading the card, derives the key from the new PIN and is let in.
    yk = _ykman(card)
    pivman = get_pivman_data(yk)
    assert pivman.has_derived_key
    yk.authenticate(derive_management_key(new_pin, pivman.salt))


def test_mgmt_key_change_retires_the_salt(tmp_path: Path) -> None:
    card = _derived_card(tmp_path)
    r = run(card, "mgmt-key", "change", "--protect", env={"PIVTOOL_PIN": PIN})
    assert r.exit_code == 0, r.output
    info = run_json(card, "info")["management_key"]
    assert (info["pin_derived"], info["protected"]) == (False, True)
    assert not get_pivman_data(_ykman(card)).has_derived_key
