"""pivtool diagnose: the bundle's structure, its 0600 file, and no secret in it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from pivtool.certs import CertRequest, LabCA, build_csr
from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, Slot
from tests.cli.clihelp import make_card, run, session

UPN = "alice@contoso.com"
CANARY_PIN = "73917391"
CANARY_PUK = "58205820"
CANARY_KEY = "c0ffee" + "5a" * 19 + "c0de"  # 24 bytes, AES-192
CANARY_ENV = {"PIVTOOL_PIN": CANARY_PIN, "PIVTOOL_PUK": CANARY_PUK,
              "PIVTOOL_MGMT_KEY": CANARY_KEY}


def _enroll_9a(card: Path, tmp_path: Path) -> None:
    lab = LabCA.init(tmp_path / "ca", "CN=Contoso Lab CA,O=Contoso",
                     crl_url="http://crl.contoso.test/lab.crl")
    s = session(card)
    try:
        s.authenticate(DEFAULT_MGMT_KEY)
        public = s.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
        s.verify_pin(b"123456")
        csr = build_csr(s.private_key(Slot.AUTHENTICATION, public),  # type: ignore[arg-type]
                        CertRequest.create(upns=[UPN]))
        cert = lab.issue(csr)
        s.put_certificate(Slot.AUTHENTICATION, cert.public_bytes(serialization.Encoding.DER))
    finally:
        s.connection.close()


def _set_canary_secrets(card: Path) -> None:
    """PIN, PUK and a PIN-protected management key (ykman-style, object 5FC109) set to
    canary values through the CLI, secrets only via the environment."""
    steps = [
        (["pin", "change"], {"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": CANARY_PIN}),
        (["puk", "change"], {"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": CANARY_PUK}),
        (["mgmt-key", "change", "--protect", "-a", "aes192"],
         {"PIVTOOL_PIN": CANARY_PIN, "PIVTOOL_NEW_MGMT_KEY": CANARY_KEY}),
    ]
    for args, env in steps:
        r = run(card, *args, env=env)
        assert r.exit_code == 0, r.output


def test_bundle_structure_and_0600_file(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _enroll_9a(card, tmp_path)
    out = tmp_path / "diag.json"
    r = run(card, "diagnose", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "mode 0600" in r.stdout
    assert os.stat(out).st_mode & 0o777 == 0o600
    data = json.loads(out.read_text())
    assert data["schema"] == "pivtool.diagnose/1"
    env = data["environment"]
    assert set(env["packages"]) == {"pivtool", "pyscard", "cryptography", "yubikey-manager",
                                    "click"}
    assert env["packages"]["cryptography"] and env["python"]["version"] and env["os"]["system"]
    assert set(data["readers"]) == {"names", "error"}  # a list, or the PC/SC error string
    assert data["selection"] == {"reader": None, "serial": None, "virtual_card": True}
    c = data["card"]
    assert c["error"] is None
    assert c["device"]["available"] is True and c["device"]["serial"] == 5550001
    assert c["device"]["version"] == "5.7.1" and "PIV" in c["device"]["usb"]["enabled"]
    assert c["application"]["aid"] and c["application"]["atr"]
    piv = c["piv"]
    assert piv["schema"] == "pivtool.info/1" and piv["serial"] == 5550001
    assert piv["pin"] == {"tries_left": 3, "tries_total": 3, "is_default": True}
    assert set(piv["management_key"]) == {"algorithm", "default", "touch_policy", "protected",
                                          "pin_derived"}
    (slot,) = piv["slots"]
    assert slot["slot"] == "9a" and slot["key"]["algorithm"] == "eccp256"
    assert slot["certificate"]["upns"] == [UPN] and slot["certificate_matches_key"] is True
    assert data["check"]["schema"] == "pivtool.check/1"
    assert {i["id"] for i in data["check"]["items"]} >= {"cert.9a", "key.9a", "pin.default"}
    ids = data["certificate_user_ids"]
    assert ids["slot"] == "9a"
    assert "X509:<PN>alice@contoso.com" in [v["value"] for v in ids["values"]]
    assert data["errors"] == []
    # Refuses to overwrite without --force; --force keeps 0600.
    assert run(card, "diagnose", "-o", str(out)).exit_code == 2
    os.chmod(out, 0o644)
    assert run(card, "diagnose", "-o", str(out), "--force").exit_code == 0
    assert os.stat(out).st_mode & 0o777 == 0o600


def test_no_secret_in_bundle(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _enroll_9a(card, tmp_path)
    _set_canary_secrets(card)
    out = tmp_path / "diag.json"
    r = run(card, "diagnose", "-o", str(out), env=CANARY_ENV)
    assert r.exit_code == 0, r.output
    stdout = run(card, "diagnose", env=CANARY_ENV)
    assert stdout.exit_code == 0
    text = out.read_text()
    assert json.loads(stdout.stdout)["card"]["piv"]["management_key"]["protected"] is True
    for blob in (text, stdout.stdout, stdout.stderr, r.output):
        lowered = blob.lower()
        for canary in (CANARY_PIN, CANARY_PUK, CANARY_KEY):
            assert canary.lower() not in lowered
            assert canary.encode().hex() not in lowered  # not even hex-encoded
    # The card's secrets were really set (so the absence above means something).
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": CANARY_PIN}).exit_code == 0


def test_without_a_card(tmp_path: Path) -> None:
    r = run(tmp_path / "no-such-card.json", "diagnose")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert "no virtual card" in data["card"]["error"]
    assert data["card"]["piv"] is None and data["check"] is None
    assert data["environment"]["packages"]["pivtool"]


@pytest.mark.parametrize("firmware", [(5, 7, 1), (4, 3, 5)])
def test_generic_and_old_cards(tmp_path: Path, firmware: tuple[int, int, int]) -> None:
    generic = make_card(tmp_path, "generic.json", generic=True)
    data = json.loads(run(generic, "diagnose").stdout)
    assert data["card"]["error"] is None
    assert data["card"]["device"]["available"] is False
    assert "generic PIV card" in data["card"]["device"]["error"]
    assert data["card"]["piv"]["card"] == "piv"
    assert data["certificate_user_ids"] is None
    old = make_card(tmp_path, "old.json", firmware=firmware)
    data = json.loads(run(old, "diagnose").stdout)
    assert data["card"]["device"]["version"] == ".".join(map(str, firmware))
