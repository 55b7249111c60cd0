"""Cross-tool state through pcscd: what pivtool writes, ykman reads and uses, and the other
way round — PIN, PUK, a PIN-protected AES management key, keys, certificates and CHUID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.cli.clihelp import run, run_json
from tests.interop.interop_tools import Ykman, state

pytestmark = pytest.mark.interop

NEW_PIN, NEW_PUK = "24681357", "86427531"


def _pivtool(card: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    r = run(None, "--reader", card.substring, *args, env=env)
    assert r.exit_code == 0, r.output
    return r


def test_pivtool_protected_key_used_by_ykman(vcard_factory: Any, tmp_path: Path) -> None:
    card = vcard_factory(yubico_reader=True)
    yk = Ykman(card)
    _pivtool(card, "pin", "change", env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": NEW_PIN})
    _pivtool(card, "puk", "change",
             env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": NEW_PUK})
    _pivtool(card, "mgmt-key", "change", "-a", "aes256", "--protect",
             env={"PIVTOOL_PIN": NEW_PIN})
    st = state(card)
    assert st.mgmt_key_type == 0x0C and len(st.mgmt_key) == 32
    info = yk("piv", "info").stdout
    assert "protected by PIN" in info and "AES256" in info
    # ykman finds the key pivtool stored and uses it with the PIN alone.
    yk("piv", "keys", "generate", "-a", "ECCP256", "-P", NEW_PIN, "9c", str(tmp_path / "p.pem"))
    assert 0x9C in state(card).keys
    # ykman verifies the PIN pivtool set, and unblocks with the PUK pivtool set.
    yk("piv", "access", "change-pin", "-P", NEW_PIN, "-n", "11223344")
    assert state(card).pin == b"11223344"


def test_ykman_protected_key_used_by_pivtool(vcard_factory: Any, tmp_path: Path) -> None:
    card = vcard_factory(yubico_reader=True)
    yk = Ykman(card)
    yk("piv", "access", "change-management-key", "-m",
       "010203040506070801020304050607080102030405060708", "-P", "123456", "--protect",
       "-a", "AES192", "-f")
    data = run_json(None, "--reader", card.substring, "info")
    assert data["management_key"]["protected"] is True
    assert data["management_key"]["default"] is False
    # pivtool finds ykman's stored key after the PIN: no key on the command line or env.
    _pivtool(card, "keys", "generate", "9a", "-a", "eccp384", env={"PIVTOOL_PIN": "123456"})
    assert state(card).keys[0x9A].algorithm == 0x14
    # ...and keeps ykman's convention when it rotates the key.
    _pivtool(card, "mgmt-key", "change", "--protect", env={"PIVTOOL_PIN": "123456"})
    yk("piv", "keys", "generate", "-a", "ECCP256", "-P", "123456", "9c",
       str(tmp_path / "p.pem"))


def test_pivtool_enrollment_read_by_ykman(vcard_factory: Any, tmp_path: Path) -> None:
    from pivtool.certs.ca import LabCA

    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Cross CA", crl_url="http://127.0.0.1/ca.crl")
    card = vcard_factory(yubico_reader=True)
    yk = Ykman(card)
    _pivtool(card, "enroll", "--upn", "zoe@contoso.com", "--ca", str(ca),
             env={"PIVTOOL_NEW_PIN": NEW_PIN, "PIVTOOL_NEW_PUK": NEW_PUK})
    info = yk("piv", "info").stdout
    assert "CN=zoe@contoso.com" in info and "CHUID:" in info
    assert "No data available" not in info.split("CHUID:")[1].splitlines()[0]
    out = tmp_path / "ykman-export.pem"
    yk("piv", "certificates", "export", "9a", str(out))
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    mine = run(None, "--reader", card.substring, "certs", "export", "9a")
    assert x509.load_pem_x509_certificate(mine.stdout_bytes) == cert
    # ykman's own check of the key: a signature with the slot key verifies.
    yk("piv", "keys", "info", "9a")
    # ykman changes the PIN pivtool set; pivtool verifies the new one.
    yk("piv", "access", "change-pin", "-P", NEW_PIN, "-n", "55667788")
    _pivtool(card, "pin", "verify", env={"PIVTOOL_PIN": "55667788"})


def test_ykman_certificate_read_by_pivtool(vcard_factory: Any, tmp_path: Path) -> None:
    card = vcard_factory(yubico_reader=True)
    yk = Ykman(card)
    mgmt = "010203040506070801020304050607080102030405060708"
    yk("piv", "keys", "generate", "-m", mgmt, "-a", "ECCP256", "9a", str(tmp_path / "p.pem"))
    yk("piv", "certificates", "generate", "-m", mgmt, "-P", "123456", "-s", "CN=ykman-made",
       "9a", str(tmp_path / "p.pem"))
    yk("piv", "objects", "generate", "-m", mgmt, "chuid")
    data = run_json(None, "--reader", card.substring, "info")
    (slot,) = data["slots"]
    assert slot["certificate"]["subject"] == "CN=ykman-made"
    assert slot["certificate_matches_key"] is True and slot["key"]["origin"] == "generated"
    assert data["chuid"] is not None
    # The attestation pivtool reads for ykman's key chains to the card's f9 certificate.
    r = run(None, "--reader", card.substring, "--json", "keys", "attest", "9a")
    att = json.loads(r.stdout)
    assert att["signed_by_f9"] and att["matches_slot_key"]
    # ... and to the virtual card's own root only: without --roots it is NOT verified.
    assert r.exit_code == 1 and att["verified"] is False
