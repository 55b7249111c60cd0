"""enroll --escrow, pivtool escrow list/show: secrets stay hidden unless named, errors are one
line with the documented exit code, and the card state is what the escrow says."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pivtool.certs.ca import LabCA
from tests.cli.clihelp import make_card, run, run_json

PUK = "86427531"
NEW = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": PUK}
PASS = {"PIVTOOL_ESCROW_PASSPHRASE": "correct horse battery"}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    LabCA.init(d, "CN=Test CA", crl_url="http://127.0.0.1/ca.crl")
    return d


def enroll(card: Path, ca: Path, esc: Path, upn: str = "alice@contoso.com",
           env: dict[str, str] | None = None) -> Any:
    r = run(card, "enroll", "--upn", upn, "--ca", str(ca), "--escrow", str(esc),
            env={**NEW, **PASS, **(env or {})})
    return r


def test_enroll_escrow_list_show_reveal(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    esc = tmp_path / "escrow.pivtool"
    r = enroll(card, ca, esc)
    assert r.exit_code == 0, r.output
    assert "[ok] escrow: PUK for serial 5550001" in r.stderr and PUK not in r.output
    assert stat.S_IMODE(os.stat(esc).st_mode) == 0o600
    assert PUK.encode() not in esc.read_bytes() and b"alice" not in esc.read_bytes()
    # The management key is stored PIN-protected by enroll, so only the PUK is escrowed.
    assert run_json(card, "info")["management_key"]["protected"] is True
    data = run_json(None, "escrow", "list", str(esc), env=PASS)
    assert data["schema"] == "pivtool.escrow-list/1"
    (entry,) = data["entries"]
    assert entry["serial"] == 5550001 and entry["upn"] == "alice@contoso.com"
    assert entry["secrets"] == {"puk": True, "mgmt_key": False}
    assert entry["created"].endswith("Z") and PUK not in json.dumps(data)
    r = run(None, "escrow", "list", str(esc), env=PASS)
    assert r.exit_code == 0 and "5550001" in r.stdout and PUK not in r.output
    r = run(None, "escrow", "show", str(esc), "5550001", env=PASS)
    assert r.exit_code == 0 and "--reveal puk" in r.stdout and PUK not in r.output
    data = run_json(None, "escrow", "show", str(esc), "5550001", "--reveal", "puk", env=PASS)
    assert data["schema"] == "pivtool.escrow-entry/1" and data["revealed"] == {"puk": PUK}
    r = run(None, "escrow", "show", str(esc), "5550001", "--reveal", "puk", env=PASS)
    assert f"PUK: {PUK}" in r.stdout
    r = run(None, "escrow", "show", str(esc), "5550001", "--reveal", "mgmt-key", env=PASS)
    assert r.exit_code == 2 and "no mgmt-key" in r.stderr
    r = run(None, "escrow", "show", str(esc), "1234", env=PASS)
    assert r.exit_code == 2 and "no entry for serial 1234" in r.stderr
    # The escrowed PUK is the card's PUK: it unblocks the PIN.
    for _ in range(3):
        run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "00000000"})
    r = run(card, "pin", "unblock", env={"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 0


def test_two_cards_one_file_and_passphrase_file(tmp_path: Path, ca: Path) -> None:
    esc = tmp_path / "escrow.pivtool"
    one = make_card(tmp_path, "one.json", serial=1001)
    two = make_card(tmp_path, "two.json", serial=1002)
    assert enroll(one, ca, esc, "a@contoso.com").exit_code == 0
    pw = tmp_path / "pass.txt"
    pw.write_text(PASS["PIVTOOL_ESCROW_PASSPHRASE"] + "\n")
    r = run(two, "enroll", "--upn", "b@contoso.com", "--ca", str(ca), "--escrow", str(esc),
            "--escrow-passphrase-file", str(pw), env=NEW)
    assert r.exit_code == 0, r.output
    data = run_json(None, "escrow", "list", str(esc), "--escrow-passphrase-file", str(pw))
    assert [(e["serial"], e["upn"]) for e in data["entries"]] == [
        (1001, "a@contoso.com"), (1002, "b@contoso.com")]


def test_unprotected_mgmt_key_is_escrowed(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    key_file = tmp_path / "mk.hex"
    r = run(card, "mgmt-key", "change", "--generate", "--key-out", str(key_file))
    assert r.exit_code == 0, r.output
    key = key_file.read_text().strip()
    esc = tmp_path / "escrow.pivtool"
    r = enroll(card, ca, esc, env={"PIVTOOL_MGMT_KEY": key})
    assert r.exit_code == 0, r.output
    assert "PUK and management key" in r.stderr and key not in r.output
    assert run_json(card, "info")["management_key"]["protected"] is False
    data = run_json(None, "escrow", "list", str(esc), env=PASS)
    assert data["entries"][0]["secrets"] == {"puk": True, "mgmt_key": True}
    assert data["entries"][0]["mgmt_key_algorithm"] == "aes192"
    data = run_json(None, "escrow", "show", str(esc), "5550001", "--reveal", "mgmt-key",
                    env=PASS)
    assert data["revealed"] == {"mgmt_key": key}


def test_kept_puk_is_checked_before_escrow(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    run(card, "puk", "change", env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": "55554444"})
    esc = tmp_path / "escrow.pivtool"
    r = enroll(card, ca, esc, env={"PIVTOOL_PUK": "00000000"})
    assert r.exit_code == 3 and "escrow" in r.stderr and "wrong PUK" in r.stderr
    st = run_json(card, "info")
    assert st["puk"]["tries_left"] == 2 and st["slots"] == []
    assert not esc.exists()
    r = enroll(card, ca, esc, env={"PIVTOOL_PUK": "55554444", "PIVTOOL_PIN": "24681357"})
    assert r.exit_code == 0, r.output
    data = run_json(None, "escrow", "show", str(esc), "5550001", "--reveal", "puk", env=PASS)
    assert data["revealed"]["puk"] == "55554444"
    assert run_json(card, "info")["puk"]["tries_left"] == 3


def test_wrong_passphrase_exit_3_before_card(tmp_path: Path, ca: Path) -> None:
    esc = tmp_path / "escrow.pivtool"
    assert enroll(make_card(tmp_path, "one.json"), ca, esc).exit_code == 0
    wrong = {"PIVTOOL_ESCROW_PASSPHRASE": "not the passphrase"}
    for args in (["list", str(esc)], ["show", str(esc), "5550001", "--reveal", "puk"]):
        r = run(None, "escrow", *args, env=wrong)
        assert r.exit_code == 3, r.output
        assert r.stderr == f"Error: wrong escrow passphrase for {esc}\n" and r.stdout == ""
    card = make_card(tmp_path, "two.json", serial=1002)
    r = enroll(card, ca, esc, env=wrong)
    assert r.exit_code == 3
    st = run_json(card, "info")
    assert st["pin"]["is_default"] and st["slots"] == []  # the card was not touched


def _flip(esc: Path, field: str, index: int = 3) -> None:
    doc = json.loads(esc.read_text())
    raw = bytearray(base64.b64decode(doc[field]))
    raw[index] ^= 0x80
    doc[field] = base64.b64encode(bytes(raw)).decode()
    esc.write_text(json.dumps(doc))


@pytest.mark.parametrize("field", ["ciphertext", "nonce"])
def test_tampered_file_exit_2(tmp_path: Path, ca: Path, field: str) -> None:
    esc = tmp_path / "escrow.pivtool"
    assert enroll(make_card(tmp_path), ca, esc).exit_code == 0
    _flip(esc, field)
    r = run(None, "escrow", "list", str(esc), env=PASS)
    assert r.exit_code == 2 and "integrity check" in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.splitlines()) == 1


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    esc = tmp_path / "escrow.pivtool"
    r = run(None, "escrow", "list", str(esc), env=PASS)
    assert r.exit_code == 2 and "does not exist" in r.stderr
    esc.write_text("not json")
    r = run(None, "escrow", "list", str(esc), env=PASS)
    assert r.exit_code == 2 and "corrupt" in r.stderr
    esc.write_text(json.dumps({"format": "something-else"}))
    r = run(None, "escrow", "list", str(esc), env=PASS)
    assert r.exit_code == 2 and "not a pivtool escrow file" in r.stderr


def test_new_file_needs_a_real_passphrase(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    esc = tmp_path / "escrow.pivtool"
    r = enroll(card, ca, esc, env={"PIVTOOL_ESCROW_PASSPHRASE": "short"})
    assert r.exit_code == 2 and "at least 8" in r.stderr
    r = run(card, "enroll", "--upn", "a@contoso.com", "--ca", str(ca), "--escrow", str(esc),
            env=NEW)
    assert r.exit_code == 2 and "PIVTOOL_ESCROW_PASSPHRASE" in r.stderr
    r = enroll(card, ca, tmp_path / "no-such-folder" / "escrow.pivtool")
    assert r.exit_code == 2 and "not writable" in r.stderr
    assert not esc.exists() and run_json(card, "info")["pin"]["is_default"]
