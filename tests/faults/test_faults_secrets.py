"""Secrets audit under faults: canary PIN, PUK, management key, PKCS#12 and escrow
passwords used through a suite of CLI runs with the APDU trace on (``-v``), including runs
where the card is pulled mid-command, an external issuer command, and failures.

A canary must not appear in any captured output, log record, APDU trace, report or file
written (the virtual card's own state file excepted: it is the card's EEPROM), in any
exception text (with its causes), nor in the argv of any subprocess. tests/cli/test_canary.py
covers the happy path once; this adds the fault and error paths, files and subprocesses.
The log-record and subprocess-argv parts are checked for the whole faults session by
``canary_guard`` in tests/faults/conftest.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

import pivtool.cli.main as climain
from pivtool.certs.ca import LabCA
from tests.cli.clihelp import make_card, run
from tests.faults.canaries import (
    CANARY_ESCROW,
    CANARY_MGMT,
    CANARY_NEW_PIN,
    CANARY_PFX,
    CANARY_PIN,
    CANARY_PUK,
    SUBPROCESS_ARGV,
    SUBPROCESS_ENV,
    binary_leaks,
    leaks,
)
from tests.faults.faulthelp import count_apdus


@pytest.fixture
def exceptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The text of every exception the CLI maps to an exit code, with its causes."""
    seen: list[str] = []
    original = climain.exit_code_for

    def recording(exc: BaseException) -> object:
        e: BaseException | None = exc
        while e is not None:
            seen.append(f"{type(e).__name__}: {e} {e!r}")
            e = e.__cause__ or e.__context__
        return original(exc)

    monkeypatch.setattr(climain, "exit_code_for", recording)
    yield seen


def test_canaries_never_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture, exceptions: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    card = make_card(tmp_path)
    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Canary Fault CA", crl_url="http://127.0.0.1/ca.crl")
    # An issuer command: the CSR on stdin, no secret anywhere near its argv; it writes the
    # environment it got into a file (checked with every other file written, below).
    issuer = tmp_path / "issuer.py"
    issuer.write_text("import os, sys\nfrom pivtool.certs.ca import LabCA\n"
                      "open('issuer-env.txt', 'a').write(repr(sorted(os.environ.items())))\n"
                      "from cryptography.hazmat.primitives.serialization import Encoding\n"
                      f"ca = LabCA.open({str(ca)!r})\n"
                      "sys.stdout.buffer.write(ca.issue(sys.stdin.buffer.read())"
                      ".public_bytes(Encoding.PEM))\n")
    key = ec.generate_private_key(ec.SECP256R1())
    outputs: list[str] = []

    def go(*args: str, env: dict[str, str], code: int | None = 0, at: int | None = None
           ) -> None:
        full = {**env, **({"PIVTOOL_SIM_FAULTS": f"{at}:card-removed"} if at else {})}
        r = run(card, "-v", *args, env=full)
        outputs.append(r.stdout + r.stderr)
        if code is not None:
            assert r.exit_code == code, r.output

    pin = {"PIVTOOL_PIN": CANARY_PIN}
    mgmt = {**pin, "PIVTOOL_MGMT_KEY": CANARY_MGMT}
    with caplog.at_level(5):
        # A pin change pulled at its CHANGE REFERENCE, then done.
        go("pin", "change", env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": CANARY_PIN},
           code=5, at=count_apdus_for(card, ("pin", "change"),
                                      {"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "1234567"}))
        go("pin", "change", env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": CANARY_PIN})
        go("puk", "change", env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": CANARY_PUK})
        go("mgmt-key", "change", "-a", "aes192", env={**pin, "PIVTOOL_NEW_MGMT_KEY":
                                                        CANARY_MGMT})
        # Enroll through the issuer subprocess, pulled once in the management-key step
        # (the step that handles the canary key), then completed, with an escrow file.
        enroll = ("enroll", "--upn", "canary@contoso.com", "--issuer-cmd",
                  f"{sys.executable} {issuer}", "--escrow", "escrow.json")
        go(*enroll, env={**mgmt, "PIVTOOL_PUK": CANARY_PUK,
                         "PIVTOOL_ESCROW_PASSPHRASE": CANARY_ESCROW}, code=5, at=41)
        # The pull must really hit the step that handles the canary key.
        assert "Error: management key: the card was removed" in outputs[-1]
        go(*enroll, env={**mgmt, "PIVTOOL_PUK": CANARY_PUK,
                         "PIVTOOL_ESCROW_PASSPHRASE": CANARY_ESCROW})
        # PKCS#12 with a canary password: key import into 9c, certificate import.
        p12 = pkcs12.serialize_key_and_certificates(
            b"c", key, None, None, serialization.BestAvailableEncryption(CANARY_PFX.encode()))
        (tmp_path / "key.p12").write_bytes(p12)
        go("keys", "import", "9c", "key.p12", env={**mgmt, "PIVTOOL_PFX_PASSWORD": CANARY_PFX})
        go("keys", "import", "9c", "key.p12", "--force",
           env={**mgmt, "PIVTOOL_PFX_PASSWORD": "wrong-password"}, code=2)
        # The protected key: change pulled mid-way, then done; wrong PINs; a report.
        go("mgmt-key", "change", "--protect", env=mgmt, code=5, at=9)
        go("mgmt-key", "change", "--protect", env=mgmt)
        go("pin", "verify", env={"PIVTOOL_PIN": "Zz000000"}, code=3)
        go("--json", "check", "--upn", "canary@contoso.com", env=pin, code=None)
        go("diagnose", "-o", "diag.json", env=pin)
        # Locked out: recover with the canary PUK (pulled once), new canary PIN.
        go("pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "Zz000001"}, code=3)
        go("pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "Zz000002"}, code=4)
        rec = {"PIVTOOL_PUK": CANARY_PUK, "PIVTOOL_NEW_PIN": CANARY_NEW_PIN}
        go("recover", env=rec, code=5, at=30)
        go("recover", env=rec)
        go("reset", "--yes", "--backup-dir", "reset-bk", env={})
    text = "\n".join(outputs) + "\n" + caplog.text + "\n".join(
        r.getMessage() for r in caplog.records) + "\n".join(exceptions)
    assert "redacted" in text, "the APDU trace was not on"
    assert any("card was removed" in e for e in exceptions), "no fault path was exercised"
    assert not leaks(text), leaks(text)
    issuers = [a for a in SUBPROCESS_ARGV if str(issuer) in a]
    assert issuers, "the issuer command did not run"
    assert not leaks("\n".join(SUBPROCESS_ARGV))
    assert not leaks("\n".join(SUBPROCESS_ENV))
    issuer_env = (tmp_path / "issuer-env.txt").read_text()
    import re

    # Only what pivtool hands the issuer on purpose: the attestation files' paths.
    assert "PATH" in issuer_env
    assert set(re.findall(r"'(PIVTOOL_\w+)'", issuer_env)) == {
        "PIVTOOL_ATTESTATION", "PIVTOOL_ATTESTATION_INTERMEDIATE"}, issuer_env
    # Every file written (escrow, backups, diagnostics, issued certificates...), except
    # the card's own EEPROM.
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != card]
    assert any(p.name == "diag.json" for p in written)
    for p in written:
        if p.name in ("key.p12",):  # the input file holding the canary-encrypted key
            continue
        assert not binary_leaks(p.read_bytes()), (p, binary_leaks(p.read_bytes()))


def count_apdus_for(card: Path, args: tuple[str, ...], env: dict[str, str]) -> int:
    """The last APDU of *args* on a copy of *card* (where a command changes the card)."""
    import shutil

    probe = card.with_name("probe.json")
    shutil.copy(card, probe)
    try:
        return count_apdus(probe, args, env)
    finally:
        probe.unlink()
