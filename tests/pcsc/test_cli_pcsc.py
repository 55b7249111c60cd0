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


def test_info_through_pcscd_loads_only_what_it_needs(vcard_factory: Any) -> None:
    """Start-up cost (bench/run.py: info against ykman): the reader path of ``info`` loads
    neither the emulator, the database, Graph, nor standard modules only other commands need
    (logging: -v; json: --json; pathlib)."""
    import subprocess
    import sys

    yk = vcard_factory(serial=7001004)
    code = ("import sys\nfrom pivtool.cli.main import main\n"
            f"rc = main(['--reader', {yk.substring!r}, 'info'])\n"
            "print(rc, sorted(m for m in sys.modules if m in ('logging', 'json', 'pathlib') or "
            "m.startswith(('pivtool.sim', 'pivtool.store', 'pivtool.graph', 'sqlalchemy'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "serial 7001004" in out
    assert out.strip().endswith("0 []"), out
