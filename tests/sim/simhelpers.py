"""Helpers shared by the virtual YubiKey tests."""

from __future__ import annotations

from yubikit.core import TRANSPORT
from yubikit.core.smartcard import SmartCardConnection

from pivtool.sim import VirtualCard


class YubikitConnection(SmartCardConnection):
    """yubikit's SmartCardConnection over a VirtualCard, as pcscd would carry it."""

    def __init__(self, card: VirtualCard, transport: TRANSPORT = TRANSPORT.USB) -> None:
        self.card = card
        self._transport = transport
        self.apdus: list[bytes] = []

    @property
    def transport(self) -> TRANSPORT:
        return self._transport

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        self.apdus.append(bytes(apdu))
        response = self.card.execute(apdu)
        return response[:-2], int.from_bytes(response[-2:], "big")

    def close(self) -> None:
        pass


def run(card: VirtualCard, hexapdu: str) -> str:
    """Send a hex APDU, get the hex response (upper case, no spaces)."""
    return card.execute(bytes.fromhex(hexapdu.replace(" ", ""))).hex().upper()
