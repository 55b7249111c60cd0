"""State persistence, the in-process connection, fault injection, and secrecy."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from simhelpers import run
from yubikit.piv import DEFAULT_MANAGEMENT_KEY, KEY_TYPE, SLOT, PivSession

from pivtool.sim import (
    FaultKind,
    Faults,
    SimCardRemovedError,
    SimCardResetError,
    SimConnection,
    SimStateError,
    SimTransportError,
    VirtualCard,
    load_state,
    new_card_state,
    open_sim,
    save_state,
)
from pivtool.sim.state import state_to_json


class _SimYubikit:
    """yubikit SmartCardConnection over a SimConnection (exercises transmit())."""

    def __new__(cls, conn: SimConnection) -> object:
        from yubikit.core import TRANSPORT
        from yubikit.core.smartcard import SmartCardConnection

        class Adapter(SmartCardConnection):
            @property
            def transport(self) -> TRANSPORT:
                return TRANSPORT.USB

            def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
                return conn.transmit(apdu)

            def close(self) -> None:
                conn.close()

        return Adapter()


def test_new_card_defaults() -> None:
    st = new_card_state(firmware=(5, 4, 3), serial=87654321)
    assert st.serial == 87654321
    assert st.mgmt_key_type == 0x03
    assert new_card_state().mgmt_key_type == 0x0A
    assert (st.pin, st.puk) == (b"123456", b"12345678")
    assert (st.pin_retries_left, st.puk_retries_left) == (3, 3)
    assert 0xF9 in st.keys and 0x5FFF01 in st.objects
    assert "123456" not in repr(st)


def test_round_trip(tmp_path: Path, make_card: Callable[..., VirtualCard]) -> None:
    card = make_card()
    piv = PivSession(_SimYubikit(SimConnection(card)))  # type: ignore[arg-type]
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ED25519)
    piv.put_object(0x5FC102, b"chuid")
    path = tmp_path / "card.json"
    save_state(card.state, path)
    loaded = load_state(path)
    assert state_to_json(loaded) == state_to_json(card.state)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "card.json"
    st = new_card_state(serial=1)
    save_state(st, path)
    before = path.read_bytes()
    st.serial = 2

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_state(st, path)
    assert path.read_bytes() == before  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]  # no temp left


def test_save_never_world_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with a permissive umask the file (and its temp) are created 0600."""
    old = os.umask(0)
    try:
        seen: list[int] = []
        real_replace = os.replace

        def spy(src: str, dst: str) -> None:
            seen.append(stat.S_IMODE(os.stat(src).st_mode))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", spy)
        save_state(new_card_state(), tmp_path / "c.json")
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert stat.S_IMODE(os.stat(tmp_path / "c.json").st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"format": "other", "version": 1}).encode(),
        json.dumps({"format": "pivtool-sim-state", "version": 99}).encode(),
        json.dumps({"format": "pivtool-sim-state", "version": 1}).encode(),
    ],
)
def test_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SimStateError):
        load_state(path)


def test_truncated_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    save_state(new_card_state(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SimStateError):
        load_state(path)
    with pytest.raises(SimStateError, match="not found"):
        load_state(tmp_path / "missing.json")
    d = json.loads(json.dumps(state_to_json(new_card_state())))
    d["pin"] = "zz"
    path.write_text(json.dumps(d))
    with pytest.raises(SimStateError) as e:
        load_state(path)
    assert "zz" not in str(e.value)


def test_connection_persists_only_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "card.json"
    save_state(new_card_state(), path)
    saves: list[int] = []
    import pivtool.sim.attach as attach

    real_save = attach.save_state

    def counting(state: object, p: object) -> None:
        saves.append(1)
        real_save(state, p)  # type: ignore[arg-type]

    monkeypatch.setattr(attach, "save_state", counting)
    with open_sim(path) as conn:
        assert conn.transmit(bytes.fromhex("00A4040005A000000308"))[1] == 0x9000
        assert conn.transmit(bytes.fromhex("00FD0000"))[1] == 0x9000
        assert conn.transmit(bytes.fromhex("00200080"))[1] == 0x63C3
        assert saves == []
        # A wrong PIN changes the retry counter: persisted.
        assert conn.transmit(bytes.fromhex("0020008008303030303030FFFF"))[1] == 0x63C2
        assert saves == [1]
    assert load_state(path).pin_retries_left == 2
    with open_sim(path) as conn:
        conn.transmit(bytes.fromhex("00A4040005A000000308"))
        assert conn.transmit(bytes.fromhex("00200080"))[1] == 0x63C2


def test_connection_clears_security_status(card: VirtualCard) -> None:
    conn = SimConnection(card)
    assert conn.atr == card.atr and "sim" in conn.reader_name
    conn.transmit(bytes.fromhex("00A4040005A000000308"))
    conn.transmit(bytes.fromhex("0020008008313233343536FFFF"))
    assert conn.transmit(bytes.fromhex("00200080"))[1] == 0x9000
    conn.close()
    with pytest.raises(SimTransportError):
        conn.transmit(bytes.fromhex("00200080"))
    conn2 = SimConnection(card)
    assert conn2.transmit(bytes.fromhex("00200080"))[1] == 0x6D00  # nothing selected
    conn2.transmit(bytes.fromhex("00A4040005A000000308"))
    assert conn2.transmit(bytes.fromhex("00200080"))[1] == 0x63C3


def test_faults(card: VirtualCard) -> None:
    select = bytes.fromhex("00A4040005A000000308")
    conn = SimConnection(card, faults=Faults(at=2, kind=FaultKind.TRANSMISSION_ERROR))
    conn.transmit(select)
    with pytest.raises(SimTransportError):
        conn.transmit(select)
    assert conn.transmit(select)[1] == 0x9000

    conn = SimConnection(card, faults=Faults(at=1, kind=FaultKind.CARD_REMOVED))
    with pytest.raises(SimCardRemovedError):
        conn.transmit(select)
    with pytest.raises(SimCardRemovedError):
        conn.transmit(select)

    conn = SimConnection(card, faults=Faults(at=3, kind=FaultKind.RESET))
    conn.transmit(select)
    conn.transmit(bytes.fromhex("0020008008313233343536FFFF"))
    with pytest.raises(SimCardResetError):
        conn.transmit(bytes.fromhex("00200080"))
    assert conn.transmit(bytes.fromhex("00200080"))[1] == 0x6D00  # reset: deselected

    conn = SimConnection(card, faults=Faults(at=1, kind=FaultKind.GARBAGE))
    data, sw = conn.transmit(select)
    assert data != b"" and sw == 0x9000


def test_transcript_has_no_secrets(make_card: Callable[..., VirtualCard]) -> None:
    card = make_card()
    piv = PivSession(_SimYubikit(SimConnection(card)))  # type: ignore[arg-type]
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.verify_pin("123456")
    piv.change_pin("123456", "97531864")
    piv.change_puk("12345678", "24680246")
    piv.set_management_key(piv.management_key_type, bytes.fromhex("11" * 24))
    run(card, "0020008008" + b"777777".hex() + "FFFF")
    text = "\n".join(card.transcript)
    for secret in ("123456", "97531864", "12345678", "24680246", "777777", "1111", "0102030405"):
        assert secret not in text
    assert "PIN changed" in text and "management key set" in text
