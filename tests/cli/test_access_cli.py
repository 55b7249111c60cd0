"""pin / puk / mgmt-key / reset through the CLI, with exit codes and the card state after."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pivtool.piv.constants import ObjectId
from tests.cli.clihelp import make_card, run, run_json, session

PIN = {"PIVTOOL_PIN": "123456"}


def test_info_fresh_card(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    data = run_json(card, "info")
    assert data["schema"] == "pivtool.info/1"
    assert data["version"] == "5.7.1" and data["serial"] == 5550001
    assert data["pin"] == {"tries_left": 3, "tries_total": 3, "is_default": True}
    assert data["management_key"]["algorithm"] == "aes192"
    assert data["management_key"]["default"] is True
    assert data["slots"] == []
    assert any("PIN is the factory default" in w for w in data["warnings"])


def test_pin_verify_wrong_and_guard(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "pin", "verify", env=PIN).exit_code == 0
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "000000"})
    assert r.exit_code == 3 and "2 tries left" in r.stderr
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "000000"})
    assert r.exit_code == 3 and "1 try left" in r.stderr
    # The retry guard: the last try is not spent without --force.
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "000000"})
    assert r.exit_code == 4 and "only 1 PIN try left" in r.stderr
    assert run_json(card, "info")["pin"]["tries_left"] == 1
    r = run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "000000"})
    assert r.exit_code == 4  # now blocked
    assert run_json(card, "info")["pin"]["tries_left"] == 0
    r = run(card, "pin", "verify", "--allow-last-try", env=PIN)
    assert r.exit_code == 4 and "blocked" in r.stderr


def test_pin_length_is_usage_error_without_spending(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "12345"})
    assert r.exit_code == 2 and "6-8" in r.stderr
    assert run_json(card, "info")["pin"]["tries_left"] == 3


def test_secret_missing_non_interactive(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "pin", "verify")
    assert r.exit_code == 2 and "PIVTOOL_PIN" in r.stderr


def test_pin_change_unblock_via_files(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    new_pin = tmp_path / "newpin"
    new_pin.write_text("24681357\n")
    assert run(card, "pin", "change", "--new-pin-file", str(new_pin), env=PIN).exit_code == 0
    assert run_json(card, "info")["pin"]["is_default"] is False
    env = {"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": "87654321"}
    assert run(card, "puk", "change", env=env).exit_code == 0
    for _ in range(3):
        run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "000000"})
    assert run_json(card, "info")["pin"]["tries_left"] == 0
    r = run(card, "pin", "unblock", env={"PIVTOOL_PUK": "87654321",
                                         "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 0, r.output
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "11223344"}).exit_code == 0


def test_wrong_puk_exit_3(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "puk", "change", env={"PIVTOOL_PUK": "00000000",
                                        "PIVTOOL_NEW_PUK": "87654321"})
    assert r.exit_code == 3 and "wrong PUK" in r.stderr


def test_set_retries(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "pin", "set-retries", "5", "6", "--yes", env=PIN)
    assert r.exit_code == 0, r.output
    data = run_json(card, "info")
    assert data["pin"]["tries_total"] == 5 and data["puk"]["tries_total"] == 6
    r = run(card, "pin", "set-retries", "5", "6", env=PIN)  # no --yes, not a terminal
    assert r.exit_code == 2 and "--yes" in r.stderr


def test_mgmt_key_protect_and_use(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "mgmt-key", "change", "--protect", env=PIN)
    assert r.exit_code == 0, r.output
    data = run_json(card, "info")
    assert data["management_key"] == {"algorithm": "aes192", "default": False,
                                      "touch_policy": "never", "protected": True,
                                      "pin_derived": False}
    # The key is found by itself after the PIN: set-retries needs it.
    assert run(card, "pin", "set-retries", "3", "3", "--yes", env=PIN).exit_code == 0
    s = session(card)
    try:
        s.verify_pin("123456")
        stored = s.get_data(ObjectId.PRINTED)
        assert stored.startswith(b"\x88")
    finally:
        s.connection.close()


def test_mgmt_key_generate_needs_destination(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "mgmt-key", "change", "--generate")
    assert r.exit_code == 2 and "--key-out" in r.stderr
    out = tmp_path / "mk.hex"
    r = run(card, "mgmt-key", "change", "--generate", "-a", "aes256", "--key-out", str(out))
    assert r.exit_code == 0, r.output
    assert os.stat(out).st_mode & 0o777 == 0o600
    key = out.read_text().strip()
    assert len(bytes.fromhex(key)) == 32
    # Not the default any more: a command needing it must be given the key.
    r = run(card, "pin", "set-retries", "3", "3", "--yes", env=PIN)
    assert r.exit_code == 2 and "PIVTOOL_MGMT_KEY" in r.stderr
    r = run(card, "pin", "set-retries", "3", "3", "--yes",
            env={**PIN, "PIVTOOL_MGMT_KEY": "00" * 32})
    assert r.exit_code == 3  # wrong management key
    r = run(card, "pin", "set-retries", "3", "3", "--yes", env={**PIN, "PIVTOOL_MGMT_KEY": key})
    assert r.exit_code == 0, r.output


def test_mgmt_key_algorithm_not_on_firmware(tmp_path: Path) -> None:
    card = make_card(tmp_path, firmware=(5, 2, 7))
    r = run(card, "mgmt-key", "change", "-a", "aes128", "--protect", env=PIN)
    assert r.exit_code == 2 and "aes128" in r.stderr


def test_reset_blocks_itself_and_backs_up(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    ca = tmp_path / "ca"
    from pivtool.certs.ca import LabCA

    LabCA.init(ca, "CN=Test CA", crl_url="http://127.0.0.1/ca.crl")
    env = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
    assert run(card, "enroll", "--upn", "bob@contoso.com", "--ca", str(ca),
               env=env).exit_code == 0
    backup = tmp_path / "bk"
    r = run(card, "reset", "--backup-dir", str(backup))
    assert r.exit_code == 2  # needs confirmation
    assert run_json(card, "info")["slots"]
    data = run_json(card, "reset", "--yes", "--backup-dir", str(backup))
    assert data["reset"] and data["pin_tries_spent"] == 3 and data["puk_tries_spent"] == 3
    assert any("9a" in d for d in data["destroyed"])
    saved = backup / "slot-9a.pem"
    assert saved.exists()
    text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(saved)],
                          capture_output=True, text=True, check=True).stdout
    assert "bob@contoso.com" in text
    info = run_json(card, "info")
    assert info["slots"] == [] and info["pin"]["is_default"]


def test_reset_generic_card_explains(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True)
    r = run(card, "reset", "--yes")
    assert r.exit_code == 2 and "issuer" in r.stderr


def test_no_card_exit_5(tmp_path: Path) -> None:
    r = run(None, "--reader", "no-such-reader-xyz", "info")
    assert r.exit_code == 5
