"""The YubiKey management applet (AID A000000527471117), enough for device detection.

yubikit's ``ManagementSession`` selects it, parses a version from the SELECT answer (a
version string) and reads the device configuration with READ CONFIG (INS 1D), a length
byte followed by TLVs (yubikit ``management.py``: ``DeviceInfo.parse_tlvs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .apdu import Command, Sw, SwError
from .consts import FormFactor
from .tlv import tlv

if TYPE_CHECKING:
    from .card import VirtualCard

INS_READ_CONFIG = 0x1D

TAG_USB_SUPPORTED = 0x01
TAG_SERIAL = 0x02
TAG_USB_ENABLED = 0x03
TAG_FORM_FACTOR = 0x04
TAG_VERSION = 0x05
TAG_AUTO_EJECT_TIMEOUT = 0x06
TAG_CHALRESP_TIMEOUT = 0x07
TAG_DEVICE_FLAGS = 0x08
TAG_CONFIG_LOCK = 0x0A
TAG_NFC_SUPPORTED = 0x0D
TAG_NFC_ENABLED = 0x0E
TAG_FIPS_CAPABLE = 0x14
TAG_FIPS_APPROVED = 0x15
TAG_PIN_COMPLEXITY = 0x16

# Form factor flag of a FIPS series key (yubikit: ``ff_value & 0x80``).
FORM_FACTOR_FIPS = 0x80
# Bit of the PIV application in the FIPS capable/approved masks (yubikit
# ``CAPABILITY._from_fips``: bit 0 FIDO2, bit 1 PIV, bit 2 OpenPGP, bit 3 OATH, bit 4 HSM).
FIPS_PIV = 0x02

# Capability bits (yubikit CAPABILITY).
CAP_OTP = 0x01
CAP_U2F = 0x02
CAP_OPENPGP = 0x08
CAP_PIV = 0x10
CAP_OATH = 0x20
CAP_HSMAUTH = 0x100
CAP_FIDO2 = 0x200

_NO_NFC = (FormFactor.USB_A_NANO, FormFactor.USB_C_NANO, FormFactor.USB_C_LIGHTNING)


def capabilities(firmware: tuple[int, int, int]) -> int:
    """Applications of a YubiKey 5 NFC of that firmware (YubiHSM Auth from 5.4.2)."""
    caps = CAP_OTP | CAP_U2F | CAP_OPENPGP | CAP_PIV | CAP_OATH | CAP_FIDO2
    if firmware >= (5, 4, 2):
        caps |= CAP_HSMAUTH
    return caps


class ManagementApplet:
    """Handlers of the management applet."""

    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self.handlers: dict[int, Callable[[Command], bytes]] = {
            INS_READ_CONFIG: self.read_config,
        }

    def select(self) -> bytes:
        """SELECT answer: the firmware version as text, e.g. ``b"5.7.1"`` (a NEO: its
        device firmware, e.g. ``b"3.4.9"``, not the PIV applet's version)."""
        kind = self.card.profile
        if kind.management_version:
            return kind.management_version.encode("ascii")
        return ".".join(str(v) for v in self.card.state.firmware).encode("ascii")

    def dispatch(self, cmd: Command) -> bytes:
        if self.card.profile.management != "yubikey":
            # A NEO's management applet has no READ CONFIG (yubikit reads it from 4.1 on
            # and talks to the OTP applet on a NEO).
            raise SwError(Sw.INS_NOT_SUPPORTED)
        handler = self.handlers.get(cmd.ins)
        if handler is None:
            raise SwError(Sw.INS_NOT_SUPPORTED)
        return handler(cmd)

    def read_config(self, cmd: Command) -> bytes:
        """READ CONFIG (1D), page P1: length byte + device-info TLVs; one page only."""
        if cmd.p1 != 0:
            # Only page 0 exists here; TAG_MORE_DATA is never announced.
            return b"\x00"
        st = self.card.state
        kind = self.card.profile
        caps = capabilities(st.firmware).to_bytes(2, "big")
        form_factor = st.form_factor | (FORM_FACTOR_FIPS if kind.fips else 0)
        body = (
            tlv(TAG_USB_SUPPORTED, caps)
            + tlv(TAG_SERIAL, st.serial.to_bytes(4, "big"))
            + tlv(TAG_USB_ENABLED, caps)
            + tlv(TAG_FORM_FACTOR, bytes([form_factor]))
            + tlv(TAG_VERSION, bytes(st.firmware))
            + tlv(TAG_AUTO_EJECT_TIMEOUT, b"\x00\x00")
            + tlv(TAG_CHALRESP_TIMEOUT, b"\x0f")
            + tlv(TAG_DEVICE_FLAGS, b"\x00")
            + tlv(TAG_CONFIG_LOCK, b"\x00")
        )
        if st.form_factor not in _NO_NFC:
            body += tlv(TAG_NFC_SUPPORTED, caps) + tlv(TAG_NFC_ENABLED, caps)
        if kind.fips:
            # Only the PIV application is emulated, so only PIV is reported FIPS capable.
            approved = FIPS_PIV if self.card.piv.fips_approved() else 0
            body += (tlv(TAG_FIPS_CAPABLE, FIPS_PIV.to_bytes(2, "big"))
                     + tlv(TAG_FIPS_APPROVED, approved.to_bytes(2, "big")))
        if st.firmware >= (5, 7, 0):
            body += tlv(TAG_PIN_COMPLEXITY, b"\x01" if st.pin_complexity else b"\x00")
        return bytes([len(body)]) + body
