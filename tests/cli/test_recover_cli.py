"""pivtool recover on the virtual card: every path, with the card state checked afterwards."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pivtool.certs.ca import LabCA
from pivtool.certs.inspect import get_upns
from pivtool.core.errors import RetryGuardError
from pivtool.piv.constants import Slot
from pivtool.workflows.auth import StaticPrompter
from pivtool.workflows.recover import Recoverer, RecoverOptions
from tests.cli.clihelp import make_card, run, run_json, session
from tests.simcards import TDES_9B

PIN, PUK = "24681357", "86427531"
NEW = {"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK}
UPN = "alice@contoso.com"
PASS = {"PIVTOOL_ESCROW_PASSPHRASE": "correct horse battery"}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    LabCA.init(d, "CN=Test CA", crl_url="http://127.0.0.1/ca.crl")
    return d


def enrolled(tmp_path: Path, ca: Path, *extra: str, env: dict[str, str] | None = None,
             **card: Any) -> Path:
    path = make_card(tmp_path, **card)
    r = run(path, "enroll", "--upn", UPN, "--ca", str(ca), *extra, env={**NEW, **(env or {})})
    assert r.exit_code == 0, r.output
    return path


def info(card: Path) -> Any:
    return run_json(card, "info")


def cert_9a(card: Path) -> x509.Certificate | None:
    s = session(card)
    try:
        from pivtool.core.errors import NotFoundError

        try:
            return s.get_certificate(Slot.AUTHENTICATION)
        except NotFoundError:
            return None
    finally:
        s.connection.close()


def block_pin(card: Path) -> None:
    for _ in range(3):
        run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "00000000"})
    assert info(card)["pin"]["tries_left"] == 0


def spend_puk(card: Path, n: int) -> None:
    for _ in range(n):
        r = run(card, "pin", "unblock", "--allow-last-try",
                env={"PIVTOOL_PUK": "00000000", "PIVTOOL_NEW_PIN": "11112222"})
        assert r.exit_code in (3, 4)


def state_puk_left(card: Path) -> int:
    """The virtual card's own PUK counter (the card cannot report it over PIV)."""
    from pivtool.sim.state import load_state

    return load_state(card).puk_retries_left


def recover_json(card: Path, *args: str, env: dict[str, str], code: int = 0) -> Any:
    r = run(card, "--json", "recover", *args, env=env)
    assert r.exit_code == code, r.output
    data = json.loads(r.stdout)
    assert data["schema"] == "pivtool.recover/1"
    return data


# --- path 1: the PIN still works -------------------------------------------------------

def test_pin_not_blocked_reports_then_changes(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    old = cert_9a(card)
    run(card, "pin", "verify", env={"PIVTOOL_PIN": "00000000"})  # one wrong try
    data = recover_json(card, env={})
    assert data["path"] == "pin-ok" and data["before"]["pin"]["tries_left"] == 2
    r = run(card, "recover")
    assert r.exit_code == 0 and "not blocked (2 tries left)" in r.stdout
    assert info(card)["pin"]["tries_left"] == 2  # reading spent nothing
    # A new PIN supplied (with the current one): recover changes it.
    data = recover_json(card, env={"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": "135724"})
    assert data["path"] == "pin-changed"
    # Again from a 6-digit PIN (padded on the wire): the PIN is validated, not re-padded.
    data = recover_json(card, env={"PIVTOOL_PIN": "135724", "PIVTOOL_NEW_PIN": "13572468"})
    assert data["path"] == "pin-changed"
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "13572468"}).exit_code == 0
    st = info(card)
    assert st["pin"]["tries_left"] == 3 and st["puk"]["tries_left"] == 3
    assert cert_9a(card) == old


# --- path 2: unblock with the PUK -------------------------------------------------------

def test_three_wrong_pins_then_unblock_keeps_everything(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    old = cert_9a(card)
    before = info(card)
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "00000000"}).exit_code == 3
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "00000000"}).exit_code == 3
    assert run(card, "pin", "verify", "--allow-last-try",
               env={"PIVTOOL_PIN": "00000000"}).exit_code == 4
    assert info(card)["pin"]["tries_left"] == 0
    # As in docs/pin-locked.md: secrets from files.
    (tmp_path / "puk.txt").write_text(PUK + "\n")
    (tmp_path / "new-pin.txt").write_text("11223344\n")
    r = run(card, "recover", "--puk-file", str(tmp_path / "puk.txt"), "--new-pin-file",
            str(tmp_path / "new-pin.txt"))
    assert r.exit_code == 0, r.output
    # Explained before it acted, and the PUK never printed.
    err = r.stderr.splitlines()
    plan = next(i for i, line in enumerate(err) if line.startswith("[->] unblock PIN"))
    done = next(i for i, line in enumerate(err) if line.startswith("[ok] unblock PIN"))
    assert plan < done and "keeps every key and certificate" in err[plan]
    assert PUK not in r.output
    after = info(card)
    assert after["pin"]["tries_left"] == 3 and after["puk"]["tries_left"] == 3
    assert after["slots"] == before["slots"] and cert_9a(card) == old
    assert after["management_key"]["protected"] is True
    # The PIN-protected management key works with just the new PIN.
    r = run(card, "mgmt-key", "change", "--protect", env={"PIVTOOL_PIN": "11223344"})
    assert r.exit_code == 0, r.output
    assert info(card)["slots"] == before["slots"]


def test_wrong_puk_spends_one_try(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    block_pin(card)
    r = run(card, "recover", env={"PIVTOOL_PUK": "00000000", "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 3 and "wrong PUK, 2 tries left" in r.stderr
    assert "Traceback" not in r.output
    st = info(card)
    assert st["pin"]["tries_left"] == 0 and st["puk"]["tries_left"] == 2


def test_puk_needed_mentions_alternatives(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    block_pin(card)
    r = run(card, "recover", env={"PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 2 and "--puk-unknown" in r.stderr and "--escrow" in r.stderr
    assert info(card)["puk"]["tries_left"] == 3


def test_last_puk_try_guard_non_interactive(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    block_pin(card)
    spend_puk(card, 2)
    assert info(card)["puk"]["tries_left"] == 1
    env = {"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": "11223344"}
    # --yes is not enough for the last PUK try.
    r = run(card, "recover", "--yes", env=env)
    assert r.exit_code == 4 and "--allow-last-try" in r.stderr
    st = info(card)
    assert st["puk"]["tries_left"] == 1 and st["pin"]["tries_left"] == 0
    assert len(st["slots"]) == 1
    data = recover_json(card, "--allow-last-try", env=env)
    assert data["path"] == "unblocked"
    st = info(card)
    assert st["puk"]["tries_left"] == 3 and st["pin"]["tries_left"] == 3
    assert len(st["slots"]) == 1


@pytest.mark.parametrize("answer", [False, True])
def test_last_puk_try_guard_interactive(tmp_path: Path, answer: bool) -> None:
    card = make_card(tmp_path)
    block_pin(card)
    spend_puk(card, 2)
    prompter = StaticPrompter({"puk": b"12345678", "new_pin": b"11223344"}, yes=answer)
    opts = RecoverOptions(interactive=True)
    s = session(card)
    try:
        if answer:
            assert Recoverer(s, prompter, opts).run().path == "unblocked"
        else:
            with pytest.raises(RetryGuardError):
                Recoverer(s, prompter, opts).run()
    finally:
        s.connection.close()
    st = info(card)
    assert st["puk"]["tries_left"] == (3 if answer else 1)
    assert st["pin"]["tries_left"] == (3 if answer else 0)


# --- path 3: reset ----------------------------------------------------------------------

def test_pin_and_puk_blocked_reset_and_reenroll(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    old = cert_9a(card)
    assert old is not None
    block_pin(card)
    spend_puk(card, 3)
    assert info(card)["puk"]["tries_left"] == 0
    backup = tmp_path / "backup"
    env = {"PIVTOOL_NEW_PIN": "31415926", "PIVTOOL_NEW_PUK": "27182818"}
    # Without --yes (and no terminal): explained, nothing destroyed.
    r = run(card, "recover", "--reenroll", "--ca", str(ca), "--backup-dir", str(backup),
            env=env)
    assert r.exit_code == 2 and "--yes" in r.stderr
    assert "slot 9a (authentication): eccp256 key (generated) and certificate" in r.stderr
    assert len(info(card)["slots"]) == 1 and not backup.exists()
    data = recover_json(card, "--yes", "--reenroll", "--ca", str(ca), "--backup-dir",
                        str(backup), env=env)
    assert data["path"] == "reset" and data["upn"] == UPN
    assert any(d.startswith("slot 9a") for d in data["destroyed"])
    assert data["reenroll"]["status"] == "enrolled"
    # The old certificate is in the backup, the new one has the same UPN and another key.
    saved = x509.load_pem_x509_certificate((backup / "slot-9a.pem").read_bytes())
    assert saved == old and data["backup"] == [str(backup / "slot-9a.pem")]
    new = cert_9a(card)
    assert new is not None and get_upns(new) == [UPN]
    assert new.public_key() != old.public_key()
    st = info(card)
    assert st["pin"] == {"tries_left": 3, "tries_total": 3, "is_default": False}
    assert st["puk"] == {"tries_left": 3, "tries_total": 3, "is_default": False}
    assert st["management_key"]["protected"] is True
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "31415926"}).exit_code == 0
    assert data["after"]["slots"][0]["certificate"]["upns"] == [UPN]


def test_puk_unknown_resets_and_prints_enroll_command(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    old = cert_9a(card)
    assert old is not None
    block_pin(card)
    backup = tmp_path / "bk"
    data = recover_json(card, "--puk-unknown", "--yes", "--backup-dir", str(backup), env={})
    assert data["path"] == "reset" and data["reenroll"] is None
    assert f"pivtool enroll --upn {UPN}" in data["reenroll_command"]
    assert (backup / "slot-9a.pem").read_bytes() == old.public_bytes(Encoding.PEM)
    st = info(card)
    assert st["slots"] == [] and st["pin"]["is_default"] and st["puk"]["is_default"]
    assert st["pin"]["tries_left"] == 3


def test_reenroll_inputs_checked_before_reset(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    block_pin(card)
    spend_puk(card, 3)
    r = run(card, "recover", "--yes", "--reenroll")  # no issuer
    assert r.exit_code == 2 and "issuer" in r.stderr
    r = run(card, "recover", "--yes", "--reenroll", "--ca", str(ca),
            env={"PIVTOOL_NEW_PIN": "31415926"})  # no new PUK
    assert r.exit_code == 2 and "PIVTOOL_NEW_PUK" in r.stderr
    r = run(card, "recover", "--ca", str(ca))  # issuer without --reenroll
    assert r.exit_code == 2
    st = info(card)
    assert len(st["slots"]) == 1 and st["pin"]["tries_left"] == 0


# --- escrow -----------------------------------------------------------------------------

def test_puk_from_escrow(tmp_path: Path, ca: Path) -> None:
    esc = tmp_path / "escrow.json"
    card = enrolled(tmp_path, ca, "--escrow", str(esc), env=PASS)
    old = cert_9a(card)
    block_pin(card)
    r = run(card, "recover", "--escrow", str(esc),
            env={**PASS, "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 0, r.output
    assert "from the escrow" in r.stdout and PUK not in r.output
    block_pin(card)
    data = recover_json(card, "--escrow", str(esc),
                        env={**PASS, "PIVTOOL_NEW_PIN": "11223344"})
    assert data["path"] == "unblocked" and data["puk_source"] == "escrow"
    assert PUK not in json.dumps(data)
    st = info(card)
    assert st["pin"]["tries_left"] == 3 and st["puk"]["tries_left"] == 3
    assert cert_9a(card) == old
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "11223344"}).exit_code == 0


def test_wrong_escrow_passphrase_touches_nothing(tmp_path: Path, ca: Path) -> None:
    esc = tmp_path / "escrow.json"
    card = enrolled(tmp_path, ca, "--escrow", str(esc), env=PASS)
    block_pin(card)
    r = run(card, "recover", "--escrow", str(esc),
            env={"PIVTOOL_ESCROW_PASSPHRASE": "wrong passphrase",
                 "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 3 and r.stderr.strip() == \
        f"Error: wrong escrow passphrase for {esc}"
    st = info(card)
    assert st["pin"]["tries_left"] == 0 and st["puk"]["tries_left"] == 3
    assert len(st["slots"]) == 1


def test_tampered_escrow_detected(tmp_path: Path, ca: Path) -> None:
    esc = tmp_path / "escrow.json"
    card = enrolled(tmp_path, ca, "--escrow", str(esc), env=PASS)
    block_pin(card)
    doc = json.loads(esc.read_text())
    import base64

    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[5] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    esc.write_text(json.dumps(doc))
    r = run(card, "recover", "--escrow", str(esc), env={**PASS, "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 2 and "integrity" in r.stderr and "Traceback" not in r.output
    st = info(card)
    assert st["pin"]["tries_left"] == 0 and st["puk"]["tries_left"] == 3


# --- generic card -----------------------------------------------------------------------

def test_generic_card_explains_issuer(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path, "generic.json", generic=True, mgmt_key_type=TDES_9B)
    r = run(card, "enroll", "--upn", UPN, "--ca", str(ca), "--allow-last-try",
            env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "13572468",
                 "PIVTOOL_NEW_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    old = cert_9a(card)
    block_pin(card)
    data = recover_json(card, "--puk-unknown", "--yes", env={}, code=1)
    assert data["path"] == "issuer-needed" and data["card"] == "piv"
    r = run(card, "recover", "--puk-unknown", "--yes")
    assert r.exit_code == 1 and "issuer" in r.stderr and "changed nothing" in r.stderr
    # A PUK that turns out blocked leads to the same answer, without a reset attempt.
    spend_puk(card, 3)
    r = run(card, "recover", "--allow-last-try",
            env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 1 and "issuer" in r.stderr
    st = info(card)
    assert st["pin"]["tries_left"] == 0 and cert_9a(card) == old


def test_generic_card_unblock_with_puk(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True)
    block_pin(card)
    env = {"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PIN": "11223344"}
    # The card cannot report PUK tries: the try may be the last one, so a script must say
    # --allow-last-try (issue 16 item 3); nothing is spent without it.
    r = run(card, "recover", env=env)
    assert r.exit_code == 4 and "cannot tell how many PUK tries" in r.stderr
    assert "--allow-last-try" in r.stderr
    assert state_puk_left(card) == 3
    data = recover_json(card, "--allow-last-try", env=env)
    assert data["path"] == "unblocked" and data["before"]["puk"]["tries_left"] is None
    assert info(card)["pin"]["tries_left"] == 3


# --- the documentation ------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "pin-locked.md"


def _doc_commands() -> list[list[str]]:
    text = DOC.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    out = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(("pivtool ", "PIVTOOL_")):
                argv = [a for a in shlex.split(line) if "=" not in a or a.startswith("-")]
                out.append(argv[1:])
    return out


def test_doc_commands_exist() -> None:
    """Every pivtool command line in docs/pin-locked.md names real commands and options
    (the same options the tests above run)."""
    from pivtool.cli.main import cli

    cmds = _doc_commands()
    assert len(cmds) >= 8
    used = set()
    for argv in cmds:
        ctx = click.Context(cli)
        cmd: click.Command = cli
        rest = [a for a in argv if a not in ("--sim",)]
        while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
            sub = cmd.get_command(ctx, rest[0])
            assert sub is not None, f"unknown command in docs: {argv}"
            used.add(rest[0])
            cmd, rest = sub, rest[1:]
        names = {o for p in cmd.params for o in getattr(p, "opts", [])}
        names |= {o for p in cli.params for o in getattr(p, "opts", [])}
        for arg in rest:
            if arg.startswith("-"):
                assert arg.split("=")[0] in names, f"{arg} is not an option of {argv}"
    assert {"recover", "escrow", "enroll"} <= used
