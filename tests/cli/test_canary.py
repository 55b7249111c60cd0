"""Secrets audit: canary PIN/PUK/management key through the CLI with -v (APDU trace on).

The canary must not appear in any output, log line, trace, or file the commands write. The
virtual card's own state file is excluded: it is the card's EEPROM, which holds the PIN by
definition (mode 0600)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pivtool.certs.ca import LabCA
from tests.cli.clihelp import make_card, run

CANARY_PIN = "Qz7!pX3k"
CANARY_PUK = "Wv9#mR2j"
CANARY_MGMT = "c0ffee5eedc0ffee5eedc0ffee5eedc0ffee5eedc0ffee5e"
CANARIES = [CANARY_PIN, CANARY_PUK, CANARY_MGMT, CANARY_MGMT.upper()]
CANARY_BYTES = [CANARY_PIN.encode(), CANARY_PUK.encode(), bytes.fromhex(CANARY_MGMT)]


def _hexes(b: bytes) -> list[str]:
    return [b.hex(), b.hex().upper(), repr(b)]


def test_canary_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    card = make_card(tmp_path)
    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Canary CA", crl_url="http://127.0.0.1/ca.crl")
    work = tmp_path / "work"
    work.mkdir()
    outputs: list[str] = []

    def go(*args: str, env: dict[str, str], ok: bool = True) -> None:
        r = run(card, "-v", *args, env=env)
        outputs.append(r.stdout + r.stderr)
        if ok:
            assert r.exit_code == 0, r.output

    pin = {"PIVTOOL_PIN": CANARY_PIN}
    with caplog.at_level(5):
        go("pin", "change", env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": CANARY_PIN})
        go("puk", "change", env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": CANARY_PUK})
        go("pin", "verify", env=pin)
        go("mgmt-key", "change", "-a", "aes192",
           env={**pin, "PIVTOOL_NEW_MGMT_KEY": CANARY_MGMT})
        go("enroll", "--upn", "canary@contoso.com", "--ca", str(ca), "--backup-dir",
           str(work / "bk"), env={**pin, "PIVTOOL_MGMT_KEY": CANARY_MGMT})
        go("mgmt-key", "change", "--protect", env={**pin, "PIVTOOL_MGMT_KEY": CANARY_MGMT})
        go("info", env={})
        go("--json", "info", env={})
        go("pin", "verify", env={"PIVTOOL_PIN": "Zz000000"}, ok=False)
        go("puk", "change", env={"PIVTOOL_PUK": "Zz000000", "PIVTOOL_NEW_PUK": CANARY_PUK},
           ok=False)
        go("pin", "unblock", env={"PIVTOOL_PUK": CANARY_PUK, "PIVTOOL_NEW_PIN": CANARY_PIN})
        go("reset", "--yes", "--backup-dir", str(work / "reset-bk"), env={})
    text = "\n".join(outputs) + "\n" + caplog.text
    assert "redacted" in text  # the trace really was on
    for c in CANARIES:
        assert c not in text
    for b in CANARY_BYTES:
        for form in _hexes(b):
            assert form not in text
    for path in list(work.rglob("*")) + list(ca.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for b in CANARY_BYTES:
                assert b not in data and b.hex().encode() not in data, path
    logging.getLogger("pivtool").handlers.clear()
