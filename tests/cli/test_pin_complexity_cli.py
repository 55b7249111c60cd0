"""pivtool on a YubiKey with PIN complexity (5.7) and on a YubiKey 5 FIPS (issue 20 item 4).

The virtual key refuses a trivial new PIN/PUK with 6985 after checking the old one; pivtool
must say which rule it broke, that no try was spent, and leave the card as it was. `check`
warns while a FIPS key's PIV application is not in FIPS approved mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelp import make_card, run, run_json


@pytest.mark.parametrize(("command", "env"), [
    (("pin", "change"), {"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "111111"}),
    (("puk", "change"), {"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": "password"}),
])
def test_trivial_value_refused_clearly_no_try_spent(
    tmp_path: Path, command: tuple[str, ...], env: dict[str, str]
) -> None:
    card = make_card(tmp_path, pin_complexity=True)
    r = run(card, *command, env=env)
    assert r.exit_code == 1, r.output
    assert "PIN complexity" in r.stderr and "no try was spent" in r.stderr
    assert "111111" not in r.stderr and "password" not in r.stderr.split("such as")[0]
    info = run_json(card, "info")
    assert info["pin"]["tries_left"] == 3 and info["puk"]["tries_left"] == 3
    assert info["pin"]["is_default"] and info["puk"]["is_default"]
    device = run_json(card, "diagnose")["card"]["device"]
    assert device["pin_complexity"] is True and device["fips_piv_approved"] is None


def test_unblock_with_trivial_pin_refused(tmp_path: Path) -> None:
    card = make_card(tmp_path, pin_complexity=True)
    r = run(card, "pin", "unblock",
            env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PIN": "123123"})
    assert r.exit_code == 1 and "PIN complexity" in r.stderr, r.output
    assert run_json(card, "info")["puk"]["tries_left"] == 3


def test_ordinary_pin_still_changes(tmp_path: Path) -> None:
    card = make_card(tmp_path, pin_complexity=True)
    r = run(card, "pin", "change", env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "24681357"})
    assert r.exit_code == 0, r.output
    assert not run_json(card, "info")["pin"]["is_default"]


def test_check_warns_until_fips_key_is_approved(tmp_path: Path) -> None:
    card = make_card(tmp_path, profile="yubikey-5.7-fips")

    def fips_item() -> dict[str, str]:
        report = run(card, "--json", "check")
        items = json.loads(report.stdout)["items"]
        return next(i for i in items if i["id"] == "fips.piv")

    assert fips_item()["status"] == "warn"
    assert "not in FIPS approved mode" in fips_item()["message"]
    run(card, "pin", "change", env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "24681357"})
    run(card, "puk", "change", env={"PIVTOOL_PIN": "24681357", "PIVTOOL_PUK": "12345678",
                                    "PIVTOOL_NEW_PUK": "86427531"})
    r = run(card, "mgmt-key", "change", "--generate", "--protect",
            env={"PIVTOOL_PIN": "24681357"})
    assert r.exit_code == 0, r.output
    assert fips_item()["status"] == "pass"


def test_no_fips_item_on_other_keys(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    report = run(card, "--json", "check")
    assert all(i["id"] != "fips.piv" for i in json.loads(report.stdout)["items"])
