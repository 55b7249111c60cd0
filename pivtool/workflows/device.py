"""YubiKey device information (serial, firmware, form factor, enabled applications per
interface) read through yubikey-manager's ``ManagementSession``.

The PIV application cannot tell whether PIV is switched off over NFC (an iPhone taps the key
over NFC) — only the YubiKey management application knows. pivtool's connections are
borrowed by a small adapter so yubikit speaks over the same card connection as the PIV
session; afterwards PIV is selected again, because selecting the management application
deselects PIV on a real YubiKey.

Generic PIV cards have no management application: the report then says "unknown" (with the
reason) instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..piv.session import PivSession

if TYPE_CHECKING:
    from ..core.connection import Connection

log = logging.getLogger(__name__)

#: JSON schema identifier of :meth:`DeviceReport.to_json`.
DEVICE_SCHEMA = "pivtool.device/1"

#: Form factors (yubikit names) whose key has a Lightning connector besides USB-C.
LIGHTNING_FORM_FACTORS = frozenset({"USB_C_LIGHTNING"})


@dataclass
class DeviceReport:
    """What the management application says about the key; ``available`` is False (and
    ``error`` says why) on generic PIV cards and keys too old to tell.

    Capability lists use yubikit's names (``PIV``, ``FIDO2``, ``OATH``...); ``None`` for an
    interface means "not reported" (a key without NFC has no NFC lists)."""

    available: bool
    error: str | None = None
    serial: int | None = None
    version: str | None = None
    form_factor: str | None = None
    usb_supported: list[str] | None = None
    usb_enabled: list[str] | None = None
    nfc_supported: list[str] | None = None
    nfc_enabled: list[str] | None = None
    config_locked: bool | None = None
    fips: bool | None = None
    #: A YubiKey 5 FIPS (5.7+): whether its PIV application is in FIPS approved mode
    #: (PIN, PUK and management key changed); None when the key does not report it.
    fips_piv_approved: bool | None = None
    #: YubiKey 5.7 PIN complexity (trivial PINs/PUKs refused); None when not reported.
    pin_complexity: bool | None = None

    @property
    def has_nfc(self) -> bool | None:
        """Whether the key has an NFC interface (None when unknown)."""
        if not self.available:
            return None
        return self.nfc_supported is not None

    def piv_enabled(self, transport: str) -> bool | None:
        """Whether PIV is enabled over ``"usb"`` or ``"nfc"``; None when unknown (no device
        info, or a YubiKey 4 that does not report enabled USB applications)."""
        enabled = self.usb_enabled if transport == "usb" else self.nfc_enabled
        if not self.available or enabled is None:
            return None
        return "PIV" in enabled

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (schema ``pivtool.device/1``)."""
        return {
            "schema": DEVICE_SCHEMA,
            "available": self.available,
            "error": self.error,
            "serial": self.serial,
            "version": self.version,
            "form_factor": self.form_factor,
            "usb": {"supported": self.usb_supported, "enabled": self.usb_enabled},
            "nfc": ({"supported": self.nfc_supported, "enabled": self.nfc_enabled}
                    if self.nfc_supported is not None else None),
            "config_locked": self.config_locked,
            "fips": self.fips,
            "fips_piv_approved": self.fips_piv_approved,
            "pin_complexity": self.pin_complexity,
        }


def _yubikit_connection(conn: Connection) -> Any:
    """Wrap a pivtool connection as yubikit's ``SmartCardConnection`` (imported lazily:
    yubikit is only needed when device information is asked for)."""
    from yubikit.core import TRANSPORT
    from yubikit.core.smartcard import SmartCardConnection

    class _BorrowedConnection(SmartCardConnection):
        """yubikit's view of a pivtool connection. It never closes the connection: the
        caller that opened it does (architecture rule 1)."""

        @property
        def transport(self) -> TRANSPORT:
            # pivtool's readers do not say USB or NFC; yubikit only uses this to pick
            # transport-specific workarounds that do not concern READ CONFIG.
            return TRANSPORT.USB

        def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
            return conn.transmit(bytes(apdu))

        def close(self) -> None:
            pass

    return _BorrowedConnection()


def _names(caps: Any) -> list[str]:
    from yubikit.management import CAPABILITY

    return sorted(c.name for c in CAPABILITY if c & caps and c.name)


def read_device_info(session: PivSession) -> DeviceReport:
    """Read the key's device information over the session's connection, then re-select PIV.

    Never raises for a card that lacks the management application or refuses it: the
    report is then ``available=False`` with the reason in ``error``."""
    if not session.is_yubikey:
        return DeviceReport(False, "generic PIV card: no YubiKey management application")
    try:
        report = _read_info(session.connection)
    except Exception as e:  # any refusal means "unknown", never a failed command
        log.debug("device info unavailable: %s", e)
        report = DeviceReport(False, f"device information unavailable: {_one_line(e)}")
    # A YubiKey has one selected application per connection: go back to PIV.
    session.select()
    return report


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _read_info(conn: Connection) -> DeviceReport:
    from yubikit.core import TRANSPORT
    from yubikit.management import CAPABILITY, ManagementSession

    info = ManagementSession(_yubikit_connection(conn)).read_device_info()
    fips_piv = CAPABILITY.PIV in info.fips_capable
    usb_enabled = info.config.enabled_capabilities.get(TRANSPORT.USB)
    nfc_supported = info.supported_capabilities.get(TRANSPORT.NFC)
    nfc_enabled = info.config.enabled_capabilities.get(TRANSPORT.NFC)
    return DeviceReport(
        available=True,
        serial=info.serial,
        version=str(info.version),
        form_factor=info.form_factor.name,
        usb_supported=_names(info.supported_capabilities.get(TRANSPORT.USB, 0)),
        usb_enabled=_names(usb_enabled) if usb_enabled is not None else None,
        nfc_supported=_names(nfc_supported) if nfc_supported is not None else None,
        nfc_enabled=(_names(nfc_enabled or 0) if nfc_supported is not None else None),
        config_locked=bool(info.is_locked),
        fips=bool(info.is_fips),
        fips_piv_approved=(CAPABILITY.PIV in info.fips_approved) if fips_piv else None,
        # Keys before 5.7 have no such setting (yubikit then reports False).
        pin_complexity=bool(info.pin_complexity) if info.version >= (5, 7, 0) else None,
    )


def describe_card(session: PivSession) -> dict[str, Any]:
    """One row of ``pivtool list``: kind, serial, firmware and form factor (the latter from
    the management application through yubikit; ``None`` where the card cannot say)."""
    from ..core.errors import NotSupportedError

    serial: int | None = None
    form_factor: str | None = None
    if session.is_yubikey:
        try:
            serial = session.get_serial()
        except NotSupportedError:
            serial = None  # firmware < 5 has no GET SERIAL over PIV
        report = read_device_info(session)
        form_factor = report.form_factor
        if serial is None:
            serial = report.serial
    return {"reader": session.connection.reader_name,
            "card": "yubikey" if session.is_yubikey else "piv",
            "serial": serial,
            "version": str(session.version) if session.version else None,
            "form_factor": form_factor}


def list_cards(readers: list[str], open_shared: Callable[[str], Connection],
               name: str | None = None, serial: int | None = None) -> list[dict[str, Any]]:
    """``pivtool list``: one :func:`describe_card` row per reader whose name contains
    *name* (case-insensitive) and, with *serial*, only the key with that serial. An empty
    reader is a row with card "none", a reader that cannot be used (busy, gone) one with
    "unavailable"; both say why in "error". *open_shared* opens a reader without taking it
    from other programs (the CLI passes pcsc's shared connection: workflows do not import
    pcsc)."""
    from ..core.errors import NoCardError, TransportError

    rows: list[dict[str, Any]] = []
    wanted = (name or "").lower()
    for reader in readers:
        if wanted not in reader.lower():
            continue
        try:
            conn = open_shared(reader)
            try:
                row = describe_card(PivSession(conn))
            finally:
                conn.close()
        except NoCardError as e:
            row = {"reader": reader, "card": "none", "error": str(e)}
        except TransportError as e:
            row = {"reader": reader, "card": "unavailable", "error": str(e)}
        if serial is None or row.get("serial") == serial:
            rows.append(row)
    return rows
