"""pivtool.pcsc logic that needs no pcscd: reader selection, error mapping; connect's
card_serial() over an in-process card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pivtool import pcsc
from pivtool.connect import card_serial
from pivtool.core.errors import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    NoServiceError,
    SharingViolationError,
    TransportError,
)
from pivtool.sim.card import VirtualCard
from pivtool.sim.state import new_card_state

READERS = ["Yubico YubiKey OTP+FIDO+CCID 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"]


def test_select_reader_unique_case_insensitive() -> None:
    assert pcsc.select_reader(READERS, "yubikey") == READERS[0]
    assert pcsc.select_reader(READERS, "PCD 00 01") == READERS[2]
    assert pcsc.select_reader(READERS[:1], None) == READERS[0]


@pytest.mark.parametrize(("readers", "needle", "message"), [
    (READERS, "Virtual PCD", "'Virtual PCD' matches several readers: 'Virtual PCD 00 00', "
                             "'Virtual PCD 00 01'"),
    (READERS, "nope", "no reader matches 'nope'; readers: 'Yubico"),
    (READERS, None, "several readers present, choose one"),
    ([], "x", "no smart card readers found"),
])
def test_select_reader_errors(readers: list[str], needle: str | None, message: str) -> None:
    with pytest.raises(NoReaderError) as info:
        pcsc.select_reader(readers, needle)
    assert message in str(info.value)


@pytest.mark.parametrize(("code", "cls", "text"), [
    (0x8010001D, NoServiceError, "is pcscd running"),
    (0x8010001E, NoServiceError, "stopped"),
    (0x8010002E, NoReaderError, "reader not available"),
    (0x80100009, NoReaderError, "reader not available"),
    (0x8010000B, SharingViolationError, "in use by another program"),
    (0x80100069, CardRemovedError, "removed"),
    (0x80100068, CardRemovedError, "reset by another program"),
    (0x80100066, NoCardError, "does not respond"),
    (0x80100016, TransportError, "0x80100016"),
])
def test_error_mapping(code: int, cls: type[Exception], text: str) -> None:
    err = pcsc._pcsc_error(code, "transmitting", "Reader 00 00")
    assert type(err) is cls
    assert text in str(err)
    assert "\n" not in str(err)


def test_no_card_vs_removed_depends_on_phase() -> None:
    assert isinstance(pcsc._pcsc_error(0x8010000C, "connecting", "R"), NoCardError)
    assert isinstance(pcsc._pcsc_error(0x8010000C, "transmitting", "R"), CardRemovedError)


def test_signed_result_codes_are_normalised() -> None:
    signed = 0x8010000B - (1 << 32)
    assert isinstance(pcsc._pcsc_error(signed, "connecting"), SharingViolationError)


def test_no_service() -> None:
    """Point the client library at a socket nobody listens on (pcsc-lite's client honours
    PCSCLITE_CSOCK_NAME even though Debian's daemon does not)."""
    code = ("from pivtool import pcsc\n"
            "try:\n    pcsc.list_readers()\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    env = dict(os.environ, PCSCLITE_CSOCK_NAME="/nonexistent/pcscd.comm",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.strip() == "NoServiceError PC/SC service not available: is pcscd running?"


def test_import_is_cheap() -> None:
    code = "import sys, pivtool.pcsc; print('smartcard' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.strip() == "False"


class _InProcess:
    """A Connection over a VirtualCard, without PC/SC."""

    def __init__(self, card: VirtualCard | None) -> None:
        self.card = card
        self.reader_name = "in-process"
        self.atr = card.atr if card else bytes.fromhex("3B00")

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        if self.card is None:  # a card without a PIV applet
            return b"", 0x6A82
        raw = self.card.execute(apdu)
        return raw[:-2], int.from_bytes(raw[-2:], "big")

    def close(self) -> None:
        pass


def test_card_serial_in_process() -> None:
    # Identification is the PIV layer's (PivSession: SELECT, GET VERSION, GET SERIAL).
    yk = _InProcess(VirtualCard(new_card_state(firmware=(5, 4, 3), serial=7654321)))
    assert card_serial(yk) == 7654321
    assert card_serial(_InProcess(VirtualCard(new_card_state(firmware=(4, 3, 5))))) is None
    assert card_serial(_InProcess(VirtualCard(new_card_state(generic=True)))) is None
    assert card_serial(_InProcess(None)) is None  # no PIV application
