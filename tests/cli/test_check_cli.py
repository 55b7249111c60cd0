"""pivtool check: each checklist item shown failing (or warning), then the fix making it pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pivtool.certs import CertRequest, LabCA, build_csr
from pivtool.core.errors import InvalidPinError
from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, ObjectId, PinPolicy, Slot
from pivtool.piv.objects import Chuid
from pivtool.piv.session import PivSession
from pivtool.sim.consts import FormFactor
from pivtool.workflows.device import DeviceReport
from tests.cli.clihelp import make_card, run, session

UPN = "alice@contoso.com"
NEW_PIN = "24681357"
ALL_CAPS = ["FIDO2", "OATH", "OPENPGP", "OTP", "PIV", "U2F"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA.init(tmp_path_factory.mktemp("ca") / "ca", "CN=Contoso Lab CA,O=Contoso",
                      crl_url="http://crl.contoso.test/lab.crl")


@contextmanager
def admin(card: Path) -> Iterator[PivSession]:
    """A session on the card, authenticated with the factory management key."""
    s = session(card)
    try:
        s.authenticate(DEFAULT_MGMT_KEY)
        yield s
    finally:
        s.connection.close()


def put_key_and_cert(card: Path, lab: LabCA, slot: Slot = Slot.AUTHENTICATION,
                     key_type: KeyType = KeyType.ECCP256,
                     pin_policy: PinPolicy = PinPolicy.DEFAULT) -> x509.Certificate:
    """Enroll-like setup: key generated on the card, CSR signed on the card, issued by *lab*."""
    with admin(card) as s:
        public = s.generate_key(slot, key_type, pin_policy)
        s.verify_pin(b"123456")
        csr = build_csr(s.private_key(slot, public),  # type: ignore[arg-type]
                        CertRequest.create(upns=[UPN]))
        cert = lab.issue(csr)
        s.put_certificate(slot, cert.public_bytes(serialization.Encoding.DER))
    return cert


def check(card: Path, *args: str, env: dict[str, str] | None = None
          ) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run ``pivtool --json check ARGS``: exit code and the items by id."""
    r = run(card, "--json", "check", *args, env=env)
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    assert data["schema"] == "pivtool.check/1"
    return r.exit_code, {i["id"]: i for i in data["items"]}


def test_fresh_card_text_lists_every_item(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "check", "--platform", "all")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith("YubiKey 5.7.1, serial 5550001")
    marks = [line.split()[0] for line in lines[1:-1] if not line.startswith(" ")]
    assert set(marks) <= {"PASS", "WARN", "FAIL"} and "FAIL" in marks
    ids = [line.split()[1] for line in lines[1:-1] if not line.startswith(" ")]
    assert ids == ["piv.usb", "piv.nfc", "cert.9a", "key.9a", "pin.default", "puk.default",
                   "mgmt-key.default", "pin.tries", "macos.9d", "macos.pin-numeric",
                   "windows.chuid"]
    # Every FAIL/WARN line is followed by its fix.
    for i, line in enumerate(lines[1:-1], start=1):
        if line.startswith(("FAIL", "WARN")):
            assert lines[i + 1].strip().startswith("fix: ")
    assert lines[-1].startswith("NOT READY: ")


def test_default_pin_puk_mgmt_key_then_changed(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _, items = check(card)
    for item_id in ("pin.default", "puk.default", "mgmt-key.default"):
        assert items[item_id]["status"] == "fail" and items[item_id]["fix"]
    assert "pivtool pin change" in items["pin.default"]["fix"]
    assert run(card, "pin", "change", env={"PIVTOOL_PIN": "123456",
                                           "PIVTOOL_NEW_PIN": NEW_PIN}).exit_code == 0
    assert run(card, "puk", "change", env={"PIVTOOL_PUK": "12345678",
                                           "PIVTOOL_NEW_PUK": "86427531"}).exit_code == 0
    r = run(card, "mgmt-key", "change", "--generate", "--protect",
            env={"PIVTOOL_PIN": NEW_PIN})
    assert r.exit_code == 0, r.output
    _, items = check(card)
    for item_id in ("pin.default", "puk.default", "mgmt-key.default"):
        assert items[item_id]["status"] == "pass", items[item_id]
    assert "PIN-protected" in items["mgmt-key.default"]["message"]


def test_no_certificate_then_enrolled(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    _, items = check(card, "--platform", "ios")
    assert items["cert.9a"]["status"] == "fail" and "pivtool enroll" in items["cert.9a"]["fix"]
    assert items["key.9a"]["status"] == "fail"
    assert not any(i.startswith("cert.eku") for i in items)
    put_key_and_cert(card, lab)
    _, items = check(card, "--platform", "ios", "--upn", UPN)
    for item_id in ("cert.9a", "key.9a", "cert.eku.client-auth", "cert.eku.smartcard-logon",
                    "cert.upn.present", "cert.upn.match", "cert.key-usage", "cert.validity",
                    "cert.crl.distribution-point", "cert.key-algorithm.ios"):
        assert items[item_id]["status"] == "pass", items[item_id]
    assert "readable without the PIN" in items["cert.9a"]["message"]
    assert "matches the certificate" in items["key.9a"]["message"]


def test_wrong_upn_fails(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    put_key_and_cert(card, lab)
    code, items = check(card, "--upn", "bob@contoso.com")
    assert code == 1 and items["cert.upn.match"]["status"] == "fail"
    assert "bob@contoso.com" in items["cert.upn.match"]["message"]
    _, items = check(card, "--upn", "Alice@Contoso.com")  # UPNs compare case-insensitively
    assert items["cert.upn.match"]["status"] == "pass"


def test_no_crl_distribution_point_warns(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    no_cdp = LabCA.init(tmp_path / "nocdp", "CN=No CDP CA")
    put_key_and_cert(card, no_cdp)
    _, items = check(card)
    cdp = items["cert.crl.distribution-point"]
    assert cdp["status"] == "warn" and "CRL distribution point" in cdp["fix"]
    put_key_and_cert(card, lab)  # re-enroll from a CA that writes one HTTP CDP
    _, items = check(card)
    assert items["cert.crl.distribution-point"]["status"] == "pass"


def test_chain_to_ca_bundle(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    put_key_and_cert(card, lab)
    other = LabCA.init(tmp_path / "other", "CN=Fabrikam CA")
    _, items = check(card, "--ca-bundle", str(other.directory / "ca.pem"))
    assert items["cert.chain"]["status"] == "fail"
    _, items = check(card, "--ca-bundle", str(lab.directory / "ca.pem"))
    assert items["cert.chain"]["status"] == "pass"
    r = run(card, "check", "--ca-bundle", str(tmp_path / "missing.pem"))
    assert r.exit_code == 2


def test_certificate_of_another_key_fails(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    put_key_and_cert(card, lab)
    stranger = lab.issue(build_csr(ec.generate_private_key(ec.SECP256R1()),
                                   CertRequest.create(upns=[UPN])))
    with admin(card) as s:
        s.put_certificate(Slot.AUTHENTICATION, stranger.public_bytes(serialization.Encoding.DER))
    _, items = check(card)
    assert items["key.9a"]["status"] == "fail" and "does not belong" in items["key.9a"]["message"]
    put_key_and_cert(card, lab)
    _, items = check(card)
    assert items["key.9a"]["status"] == "pass"


def test_pin_policy_never_warns(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    put_key_and_cert(card, lab, pin_policy=PinPolicy.NEVER)
    _, items = check(card)
    assert items["key.9a.pin-policy"]["status"] == "warn"
    put_key_and_cert(card, lab, pin_policy=PinPolicy.ONCE)
    _, items = check(card)
    assert "key.9a.pin-policy" not in items


def test_algorithm_ios_cannot_use(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    put_key_and_cert(card, lab, key_type=KeyType.ED25519)
    _, items = check(card, "--platform", "ios")
    assert items["cert.key-algorithm.ios"]["status"] == "warn"
    assert items["cert.key-algorithm.ios"]["platform"] == "ios"
    _, items = check(card, "--platform", "windows")
    assert "cert.key-algorithm.ios" not in items
    put_key_and_cert(card, lab, key_type=KeyType.ECCP384)
    _, items = check(card, "--platform", "ios")
    assert items["cert.key-algorithm.ios"]["status"] == "pass"


def test_pin_tries_low_then_blocked_then_unblocked(tmp_path: Path) -> None:
    card = make_card(tmp_path)

    def wrong_pin() -> None:
        s = session(card)
        try:
            with pytest.raises(InvalidPinError):
                s.verify_pin(b"999999")
        finally:
            s.connection.close()

    wrong_pin()
    _, items = check(card)
    assert items["pin.tries"]["status"] == "pass" and "2/3" in items["pin.tries"]["message"]
    wrong_pin()
    _, items = check(card)
    assert items["pin.tries"]["status"] == "warn" and "1/3" in items["pin.tries"]["message"]
    wrong_pin()
    _, items = check(card)
    assert items["pin.tries"]["status"] == "fail"
    assert "pivtool pin unblock" in items["pin.tries"]["fix"]
    r = run(card, "pin", "unblock", env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PIN": NEW_PIN})
    assert r.exit_code == 0, r.output
    _, items = check(card)
    assert items["pin.tries"]["status"] == "pass"


def test_macos_needs_9d(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    put_key_and_cert(card, lab)
    _, items = check(card, "--platform", "macos")
    assert items["macos.9d"]["status"] == "fail" and "--macos" in items["macos.9d"]["fix"]
    put_key_and_cert(card, lab, slot=Slot.KEY_MANAGEMENT)
    _, items = check(card, "--platform", "macos")
    assert items["macos.9d"]["status"] == "pass"


def test_macos_pin_numeric_checked_locally(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _, items = check(card, "--platform", "macos")
    assert items["macos.pin-numeric"]["status"] == "warn"
    assert "PIVTOOL_PIN" in items["macos.pin-numeric"]["fix"]
    r = run(card, "check", "--platform", "macos", env={"PIVTOOL_PIN": "abc12345"})
    assert "abc12345" not in r.output
    _, items = check(card, "--platform", "macos", env={"PIVTOOL_PIN": "abc12345"})
    assert items["macos.pin-numeric"]["status"] == "fail"
    pin_file = tmp_path / "pin"
    pin_file.write_text(NEW_PIN + "\n")
    _, items = check(card, "--platform", "macos", "--pin-file", str(pin_file))
    assert items["macos.pin-numeric"]["status"] == "pass"
    # Never sent to the card: NEW_PIN is not this card's PIN, yet no try was spent.
    assert "3/3" in items["pin.tries"]["message"]


def test_windows_needs_chuid(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _, items = check(card, "--platform", "windows")
    assert items["windows.chuid"]["status"] == "fail" and items["windows.chuid"]["fix"]
    with admin(card) as s:
        s.put_data(ObjectId.CHUID, Chuid.generate().encode())
    _, items = check(card, "--platform", "windows")
    assert items["windows.chuid"]["status"] == "pass"


def test_platform_selection(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _, items = check(card, "--platform", "windows")
    assert "windows.chuid" in items and "piv.nfc" not in items
    assert not any(i.startswith("macos.") for i in items)
    _, items = check(card, "--platform", "ios", "--platform", "macos")
    assert "piv.nfc" in items and "macos.9d" in items and "windows.chuid" not in items
    r = run(card, "check", "--platform", "android")
    assert r.exit_code == 2


def _device(usb: list[str], nfc: list[str] | None) -> DeviceReport:
    return DeviceReport(True, serial=5550001, version="5.7.1", form_factor="USB_A_KEYCHAIN",
                        usb_supported=ALL_CAPS, usb_enabled=usb,
                        nfc_supported=ALL_CAPS if nfc is not None else None, nfc_enabled=nfc)


def test_piv_disabled_on_interfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The virtual key always has PIV enabled; the device configuration is swapped for one
    # where an admin ran 'ykman config usb/nfc --disable PIV'.
    import pivtool.workflows.check as wf

    card = make_card(tmp_path)
    no_piv = [c for c in ALL_CAPS if c != "PIV"]
    monkeypatch.setattr(wf, "read_device_info", lambda s: _device(no_piv, no_piv))
    _, items = check(card, "--platform", "ios")
    assert items["piv.usb"]["status"] == "fail"
    assert items["piv.usb"]["fix"] == "enable it: ykman config usb --enable PIV"
    assert items["piv.nfc"]["status"] == "fail" and "nfc --enable PIV" in items["piv.nfc"]["fix"]
    monkeypatch.setattr(wf, "read_device_info", lambda s: _device(ALL_CAPS, ALL_CAPS))
    _, items = check(card, "--platform", "ios")
    assert items["piv.usb"]["status"] == items["piv.nfc"]["status"] == "pass"


@pytest.mark.parametrize(("form_factor", "status"), [
    (FormFactor.USB_C_LIGHTNING, "pass"),
    (FormFactor.USB_C_NANO, "warn"),
    (FormFactor.USB_C_KEYCHAIN, "pass"),  # the simulated 5C NFC has NFC with PIV on
])
def test_ios_reach_by_form_factor(tmp_path: Path, form_factor: FormFactor, status: str) -> None:
    card = make_card(tmp_path, form_factor=form_factor)
    _, items = check(card, "--platform", "ios")
    assert items["piv.nfc"]["status"] == status


def test_generic_card_says_not_checked(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True)
    _, items = check(card)
    assert items["piv.usb"]["status"] == "pass" and "generic" in items["piv.usb"]["message"]
    assert "piv.nfc" not in items
    assert items["key.9a"]["status"] == "warn" and "not checked" in items["key.9a"]["message"]
    assert items["pin.default"]["status"] == "warn"
    assert items["mgmt-key.default"]["status"] == "warn"


def test_old_yubikey_probes_default_mgmt_key(tmp_path: Path) -> None:
    card = make_card(tmp_path, firmware=(4, 3, 5))  # no GET METADATA before 5.3
    _, items = check(card)
    assert items["mgmt-key.default"]["status"] == "fail"
    assert items["piv.usb"]["status"] == "pass"  # YubiKey 4 does not report enabled USB apps


def test_fully_enrolled_card_is_ready(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    r = run(card, "enroll", "--upn", UPN, "--ca", str(lab.directory), "--macos",
            env={"PIVTOOL_NEW_PIN": NEW_PIN, "PIVTOOL_NEW_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    r = run(card, "check", "--upn", UPN, "--ca-bundle", str(lab.directory / "ca.pem"),
            env={"PIVTOOL_PIN": NEW_PIN})
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.stdout and "WARN" not in r.stdout
    assert r.stdout.splitlines()[-1].startswith("READY: 0 failed, 0 warning(s)")
    assert NEW_PIN not in r.output
