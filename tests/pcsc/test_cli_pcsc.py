"""The CLI through pcscd: --reader / --serial selection, list, info and a PIN change on a
virtual card served by vpcd."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.clihelp import run, run_json

pytestmark = pytest.mark.pcsc


def test_list_and_info_by_reader(vcard_factory: Any) -> None:
    yk = vcard_factory(serial=7001001)
    generic = vcard_factory(generic=True)
    rows = run_json(None, "--reader", yk.substring, "list")["readers"]
    assert [(r["card"], r["serial"], r["version"]) for r in rows] == [
        ("yubikey", 7001001, "5.7.1")]
    assert rows[0]["form_factor"]  # from the management application, through yubikit
    rows = run_json(None, "--reader", generic.substring, "list")["readers"]
    assert [r["card"] for r in rows] == ["piv"]
    info = run_json(None, "--reader", yk.substring, "info")
    assert info["serial"] == 7001001 and info["reader"] == yk.reader


def test_select_by_serial_and_change_pin(vcard_factory: Any) -> None:
    vcard_factory(serial=7001002)
    other = vcard_factory(serial=7001003)
    info = run_json(None, "--serial", "7001003", "info")
    assert info["reader"] == other.reader
    r = run(None, "--serial", "7001003", "pin", "change",
            env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "24681357"})
    assert r.exit_code == 0, r.output
    assert other.load_state().pin == b"24681357"
    r = run(None, "--serial", "99999999", "info")
    assert r.exit_code == 5
