"""The Entra CBA readiness checklist for a card: is this key ready for certificate-based
sign-in on iOS, macOS and Windows?

Each item is pass, warn or fail with a one-line fix, or skip (with what it needs) when it
could not be evaluated — no CA bundle, no UPN, no CRL given: nothing unchecked looks
checked. Nothing here spends a PIN try, needs a secret, or writes to the card: the
checklist reads what the card gives away for free (metadata, certificate objects, CHUID,
device configuration). Where a card cannot tell (no GET METADATA, no management
application) the item says "not checked" at warn level rather than guessing.

:func:`evaluate` is pure (state in, report out); :func:`check_card` reads the card first.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..certs.check import check_entra_certificate
from ..certs.errors import CertInputError
from ..core.errors import ApduError, NotSupportedError, SecurityStatusError, UsageError
from ..piv.constants import DEFAULT_MGMT_KEY, Slot
from ..piv.session import PivSession
from ..piv.version import Version, has_metadata
from .device import LIGHTNING_FORM_FACTORS, DeviceReport, read_device_info
from .state import CardSnapshot, SlotState, read_card_state

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "CHECK_SCHEMA",
    "PLATFORMS",
    "CheckItem",
    "CheckReport",
    "check_card",
    "evaluate",
]

#: JSON schema identifier of :meth:`CheckReport.to_json`.
CHECK_SCHEMA = "pivtool.check/1"
#: Platforms with specific requirements.
PLATFORMS: tuple[str, ...] = ("ios", "macos", "windows")

Status = Literal["pass", "warn", "fail", "skip"]

# Fix texts that name pivtool commands, in one place so they stay in step with the CLI.
FIX_ENROLL = "enroll the key: pivtool enroll --upn USER@DOMAIN (or import the issued " \
             "certificate: pivtool certs import 9a CERT)"
FIX_ENROLL_MACOS = "enroll slot 9d as well: pivtool enroll --upn USER@DOMAIN --macos"
FIX_PIN = "pivtool pin change"
FIX_PUK = "pivtool puk change"
FIX_MGMT = "change the management key: pivtool mgmt-key change --generate --protect"
FIX_CHUID = "write a CHUID: pivtool objects chuid --generate"

# Certificate findings that only matter on one platform.
_CERT_PLATFORM = {"key-algorithm.ios": "ios"}


@dataclass(frozen=True)
class CheckItem:
    """One line of the checklist. ``platform`` is None for items every platform needs."""

    id: str
    status: Status
    message: str
    fix: str = ""
    platform: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``id``, ``status`` (pass|warn|fail|skip), ``message``, ``fix`` (empty on a
        pass), ``platform`` (ios|macos|windows or null for all)."""
        return {"id": self.id, "status": self.status, "message": self.message,
                "fix": self.fix, "platform": self.platform}


@dataclass
class CheckReport:
    """The checklist for one card."""

    reader: str
    card: str  # "yubikey" | "piv"
    version: str | None
    serial: int | None
    platforms: list[str]
    expected_upn: str | None
    items: list[CheckItem]

    @property
    def ok(self) -> bool:
        """True when no item failed (warnings allowed)."""
        return not any(i.status == "fail" for i in self.items)

    def counts(self) -> dict[str, int]:
        """How many items passed, warned, failed and were skipped (not evaluated)."""
        out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for i in self.items:
            out[i.status] += 1
        return out

    def item(self, item_id: str) -> CheckItem | None:
        """The item with *item_id*, if it was checked."""
        return next((i for i in self.items if i.id == item_id), None)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (schema ``pivtool.check/1``)."""
        return {
            "schema": CHECK_SCHEMA,
            "card": {"reader": self.reader, "card": self.card, "version": self.version,
                     "serial": self.serial},
            "platforms": self.platforms,
            "expected_upn": self.expected_upn,
            "ok": self.ok,
            "summary": self.counts(),
            "items": [i.to_json() for i in self.items],
        }


# --------------------------------------------------------------------------- reading


def check_card(session: PivSession, *, expected_upn: str | None = None,
               ca_bundle: Sequence[x509.Certificate] | None = None,
               platforms: Collection[str] = PLATFORMS, pin_numeric: bool | None = None,
               now: _dt.datetime | None = None,
               crl: x509.CertificateRevocationList | None = None) -> CheckReport:
    """Read the card (device information, PIV state) and run the checklist.

    *pin_numeric* is the caller's local verdict on a PIN it holds (never sent to the card);
    None means the PIN is not known. Spends no PIN try. On a YubiKey without GET METADATA
    the default management key is tried, which costs nothing on a YubiKey (its management
    key has no retry counter)."""
    device = read_device_info(session)
    state = read_card_state(session)
    if state.is_yubikey and state.mgmt_key_default is None:
        state.mgmt_key_default = probe_default_mgmt_key(session)
    return evaluate(state, device, expected_upn=expected_upn, ca_bundle=ca_bundle,
                    platforms=platforms, pin_numeric=pin_numeric, now=now, crl=crl)


def probe_default_mgmt_key(session: PivSession) -> bool | None:
    """Whether a YubiKey accepts the factory management key (None when it cannot tell).
    Only for YubiKeys: a generic card may count wrong management keys."""
    if not session.is_yubikey:
        return None
    try:
        session.authenticate(DEFAULT_MGMT_KEY)
    except SecurityStatusError:
        return False
    except (ApduError, UsageError, NotSupportedError):
        return None
    return True


# --------------------------------------------------------------------------- the items


def evaluate(state: CardSnapshot, device: DeviceReport, *, expected_upn: str | None = None,
             ca_bundle: Sequence[x509.Certificate] | None = None,
             platforms: Collection[str] = PLATFORMS, pin_numeric: bool | None = None,
             now: _dt.datetime | None = None,
             crl: x509.CertificateRevocationList | None = None) -> CheckReport:
    """Run the checklist over already-read card *state* and *device* information."""
    wanted = [p for p in PLATFORMS if p in platforms]
    unknown = set(platforms) - set(PLATFORMS)
    if unknown:
        raise UsageError(f"unknown platform(s): {', '.join(sorted(unknown))}")
    version = Version.parse(state.version) if state.version else None
    metadata = version is not None and has_metadata(version)

    items: list[CheckItem] = []
    items += _interfaces(state, device, "ios" in wanted)
    slot9a = state.slot(Slot.AUTHENTICATION)
    items.append(_cert_9a(slot9a))
    items += _key_9a(slot9a, metadata)
    cert = slot9a.certificate if slot9a is not None else None
    if cert is not None:
        items += _cert_findings(cert, expected_upn, ca_bundle, now, wanted, crl)
    items += _secrets(state)
    items += _fips(device)
    items.append(_pin_tries(state))
    if "macos" in wanted:
        items.append(_macos_9d(state.slot(Slot.KEY_MANAGEMENT), metadata))
        items.append(_macos_pin(pin_numeric))
    if "windows" in wanted:
        items.append(_windows_chuid(state))
    return CheckReport(
        reader=state.reader,
        card="yubikey" if state.is_yubikey else "piv",
        version=state.version,
        serial=state.serial,
        platforms=wanted,
        expected_upn=expected_upn,
        items=items,
    )


def _fips(device: DeviceReport) -> list[CheckItem]:
    """A YubiKey 5 FIPS is only operating as FIPS 140-3 validated once its PIV application
    is in FIPS approved mode (Yubico: PIN, PUK and management key changed from the
    defaults); other keys get no item."""
    if device.fips_piv_approved is None:
        return []
    if device.fips_piv_approved:
        return [CheckItem("fips.piv", "pass", "YubiKey FIPS: PIV is in FIPS approved mode")]
    return [CheckItem("fips.piv", "warn",
                      "YubiKey FIPS: PIV is not in FIPS approved mode (its configuration is "
                      "not FIPS-approved)",
                      "change the PIN, the PUK and the management key from their defaults "
                      "(pivtool pin change, puk change, mgmt-key change --generate --protect)")]


def _interfaces(state: CardSnapshot, device: DeviceReport, ios: bool) -> list[CheckItem]:
    if not state.is_yubikey:
        # A generic card has no per-interface switches: PIV works wherever it answers.
        return [CheckItem("piv.usb", "pass",
                          "generic PIV card: the PIV application answers on this connection")]
    items: list[CheckItem] = []
    if not device.available:
        items.append(CheckItem(
            "piv.usb", "warn",
            f"cannot read which interfaces have PIV enabled ({device.error}); PIV answers "
            "on this connection",
            "check with 'ykman info' that PIV is enabled over USB" + (" and NFC" if ios else "")))
        return items
    usb = device.piv_enabled("usb")
    if usb is False:
        items.append(CheckItem("piv.usb", "fail", "PIV is disabled over USB",
                               "enable it: ykman config usb --enable PIV"))
    elif usb is None:
        items.append(CheckItem("piv.usb", "pass",
                               "PIV answers on this connection (this firmware does not report "
                               "its enabled USB applications)"))
    else:
        items.append(CheckItem("piv.usb", "pass", "PIV is enabled over USB"))
    if ios:
        items.append(_nfc(device))
    return items


def _nfc(device: DeviceReport) -> CheckItem:
    if device.has_nfc:
        if device.piv_enabled("nfc"):
            return CheckItem("piv.nfc", "pass", "PIV is enabled over NFC", platform="ios")
        return CheckItem("piv.nfc", "fail",
                         "PIV is disabled over NFC: an iPhone/iPad tapping the key finds no "
                         "certificate", "enable it: ykman config nfc --enable PIV",
                         platform="ios")
    if device.form_factor in LIGHTNING_FORM_FACTORS:
        return CheckItem("piv.nfc", "pass",
                         "no NFC; iPhone/iPad reach the key through its Lightning connector",
                         platform="ios")
    return CheckItem("piv.nfc", "warn",
                     "the key has no NFC: iPhone/iPad can use it over USB-C only",
                     "for older iPhones use a YubiKey with NFC or a Lightning connector",
                     platform="ios")


def _cert_9a(slot: SlotState | None) -> CheckItem:
    if slot is not None and slot.certificate_error:
        return CheckItem("cert.9a", "fail",
                         f"slot 9a holds an unreadable certificate: {slot.certificate_error}",
                         "import the certificate again: pivtool certs import 9a CERT")
    if slot is None or slot.certificate is None:
        return CheckItem("cert.9a", "fail", "no certificate in slot 9a (PIV Authentication)",
                         FIX_ENROLL)
    return CheckItem("cert.9a", "pass",
                     "certificate in slot 9a, readable without the PIN: "
                     f"{slot.certificate.subject.rfc4514_string() or '(empty subject)'}")


def _key_9a(slot: SlotState | None, metadata: bool) -> list[CheckItem]:
    if not metadata or (slot is not None and slot.key_unknown):
        why = slot.key_unknown if slot is not None and slot.key_unknown else "no GET METADATA"
        return [CheckItem("key.9a", "warn",
                          f"private key in 9a not checked: the card does not report it "
                          f"({why})",
                          "prove it by signing with the key (needs the PIN), e.g. in a "
                          "test sign-in")]
    if slot is None or slot.key_algorithm is None:
        return [CheckItem("key.9a", "fail", "no private key in slot 9a", FIX_ENROLL)]
    desc = f"{slot.key_algorithm}, {slot.origin}"
    match = slot.cert_matches_key()
    if match is False:
        items = [CheckItem("key.9a", "fail",
                           f"the certificate in 9a does not belong to the key in 9a ({desc})",
                           "import the certificate issued for this key, or enroll again")]
    elif match is None:
        items = [CheckItem("key.9a", "pass",
                           f"private key present in 9a ({desc}); no certificate to compare")]
    else:
        items = [CheckItem("key.9a", "pass",
                           f"private key present in 9a ({desc}) and matches the certificate")]
    if slot.pin_policy == "never":
        items.append(CheckItem("key.9a.pin-policy", "warn",
                               "the 9a key signs without the PIN: the key alone is one "
                               "factor, not phishing-resistant MFA",
                               "enroll again with a PIN policy: pivtool enroll --upn "
                               "USER@DOMAIN --pin-policy once --force"))
    return items


def _cert_findings(cert: x509.Certificate, expected_upn: str | None,
                   ca_bundle: Sequence[x509.Certificate] | None, now: _dt.datetime | None,
                   platforms: Sequence[str],
                   crl: x509.CertificateRevocationList | None = None) -> list[CheckItem]:
    try:
        findings = check_entra_certificate(cert, expected_upn, ca_bundle, now, crl)
    except CertInputError as e:
        return [CheckItem("cert.parse", "fail", f"the 9a certificate cannot be checked: {e}",
                          "issue a new certificate")]
    items = []
    for f in findings:
        platform = _CERT_PLATFORM.get(f.id)
        if platform is not None and platform not in platforms:
            continue
        items.append(CheckItem(f"cert.{f.id}", f.status, f.message, f.fix, platform))
    return items


def _secrets(state: CardSnapshot) -> list[CheckItem]:
    items: list[CheckItem] = []
    not_checked = "not checked: this card cannot tell without spending a try"
    if state.pin.is_default is None:
        items.append(CheckItem("pin.default", "warn", f"default PIN {not_checked}",
                               f"make sure it was changed ({FIX_PIN})"))
    elif state.pin.is_default:
        items.append(CheckItem("pin.default", "fail",
                               "the PIN is the factory default (123456)",
                               f"change it: {FIX_PIN}"))
    else:
        items.append(CheckItem("pin.default", "pass", "the PIN is not the factory default"))

    if state.puk.blocked:
        why = ("blocked on purpose (ykman's PIN-protected management key setup)"
               if state.puk_blocked_by_ykman else "blocked")
        items.append(CheckItem("puk.default", "warn",
                               f"the PUK is {why}: a blocked PIN can then only be fixed by a "
                               "reset, which destroys the keys",
                               "keep the PIN safe; reset and re-enroll if it gets blocked"))
    elif state.puk.is_default is None:
        items.append(CheckItem("puk.default", "warn", f"default PUK {not_checked}",
                               f"make sure it was changed ({FIX_PUK})"))
    elif state.puk.is_default:
        items.append(CheckItem("puk.default", "fail",
                               "the PUK is the factory default (12345678): anyone holding "
                               "the key can set a new PIN", f"change it: {FIX_PUK}"))
    else:
        items.append(CheckItem("puk.default", "pass", "the PUK is not the factory default"))

    if state.mgmt_key_default is None:
        items.append(CheckItem("mgmt-key.default", "warn",
                               "default management key not checked: this card cannot tell "
                               "safely", "make sure the management key was changed"))
    elif state.mgmt_key_default:
        items.append(CheckItem("mgmt-key.default", "fail",
                               "the management key is the factory default: anyone can "
                               "replace the keys and certificates", FIX_MGMT))
    else:
        how = ", stored PIN-protected" if state.mgmt_key_protected else ""
        items.append(CheckItem("mgmt-key.default", "pass",
                               f"the management key is not the factory default "
                               f"({state.mgmt_key_algorithm}{how})"))
    return items


def _pin_tries(state: CardSnapshot) -> CheckItem:
    left, total = state.pin.tries_left, state.pin.tries_total
    if left is None:
        return CheckItem("pin.tries", "warn", "PIN tries left unknown (the PIN is verified "
                                              "in this session)",
                         "run the check again on a fresh connection")
    if left == 0:
        fix = ("unblock it with the PUK: pivtool pin unblock" if not state.puk.blocked
               else "the PUK is blocked too: pivtool reset, then enroll again")
        return CheckItem("pin.tries", "fail", "the PIN is blocked", fix)
    of = f"/{total}" if total else ""
    if left <= 1:
        return CheckItem("pin.tries", "warn",
                         f"only {left}{of} PIN try left: one more wrong PIN blocks it",
                         "enter the correct PIN once (that resets the counter), e.g. "
                         "pivtool pin verify --allow-last-try")
    return CheckItem("pin.tries", "pass", f"{left}{of} PIN tries left")


def _macos_9d(slot: SlotState | None, metadata: bool) -> CheckItem:
    has_cert = slot is not None and slot.certificate is not None
    has_key = slot is not None and slot.key_algorithm is not None
    if not has_cert:
        what = "a key but no certificate" if has_key else "no key and no certificate"
        return CheckItem("macos.9d", "fail",
                         f"slot 9d (Key Management) has {what}: macOS smart-card pairing "
                         "needs 9a and 9d", FIX_ENROLL_MACOS, "macos")
    assert slot is not None
    if not metadata or slot.key_unknown:
        return CheckItem("macos.9d", "pass",
                         f"certificate in slot 9d (key not checked: "
                         f"{slot.key_unknown or 'no GET METADATA'})", platform="macos")
    if not has_key:
        return CheckItem("macos.9d", "fail",
                         "slot 9d has a certificate but no private key: macOS pairing needs "
                         "the 9d key", FIX_ENROLL_MACOS, "macos")
    if slot.cert_matches_key() is False:
        return CheckItem("macos.9d", "fail",
                         "the certificate in 9d does not belong to the key in 9d",
                         FIX_ENROLL_MACOS, "macos")
    return CheckItem("macos.9d", "pass", "key and matching certificate in slot 9d",
                     platform="macos")


def _macos_pin(pin_numeric: bool | None) -> CheckItem:
    if pin_numeric is None:
        return CheckItem("macos.pin-numeric", "warn",
                         "cannot check that the PIN is digits only (macOS refuses other "
                         "PINs); pivtool cannot read the PIN",
                         "if the PIN has letters, change it to digits (pivtool pin change); "
                         "set PIVTOOL_PIN to check it locally (it is not sent to the card)",
                         "macos")
    if pin_numeric:
        return CheckItem("macos.pin-numeric", "pass",
                         "the PIN given is digits only (checked locally, not sent to the "
                         "card)", platform="macos")
    return CheckItem("macos.pin-numeric", "fail",
                     "the PIN given is not digits only: macOS will not accept it",
                     "change it to 6-8 digits: pivtool pin change", "macos")


def _windows_chuid(state: CardSnapshot) -> CheckItem:
    if state.chuid_guid:
        return CheckItem("windows.chuid", "pass", f"CHUID present (GUID {state.chuid_guid})",
                         platform="windows")
    return CheckItem("windows.chuid", "fail",
                     "no CHUID: Windows' smart-card driver identifies the card (and caches "
                     "its certificates) by it", FIX_CHUID, "windows")
