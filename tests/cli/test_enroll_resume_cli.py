"""enroll: pre-flight before the card changes, transactional replace (MOVE KEY), and the
same command finishing an interrupted enrollment (journal) without spending a try."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pivtool.certs.ca import LabCA
from pivtool.sim.state import load_state
from tests.cli.clihelp import make_card, run
from tests.faults.faulthelp import run_faulted

UPN = "alice@contoso.com"
NEW = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
PIN = {"PIVTOOL_PIN": "24681357"}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    LabCA.init(tmp_path / "ca", "CN=Resume CA")
    return tmp_path / "ca"


def flaky_issuer(tmp: Path, ca: Path) -> tuple[Path, Path]:
    """An issuer command that fails ("CA down") until the returned flag file exists."""
    import sys

    script, flag = tmp / "issuer.py", tmp / "ok"
    script.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        f"if not os.path.exists({str(flag)!r}):\n"
        "    sys.exit('CA down')\n"
        "from cryptography.hazmat.primitives.serialization import Encoding\n"
        "from pivtool.certs.ca import LabCA\n"
        f"cert = LabCA.open({str(ca)!r}).issue(sys.stdin.buffer.read())\n"
        "sys.stdout.buffer.write(cert.public_bytes(Encoding.PEM))\n")
    script.chmod(0o755)
    return script, flag


def snapshot(card: Path) -> dict[str, object]:
    st = load_state(card)
    return {"pin": st.pin, "puk": st.puk, "mgmt": st.mgmt_key, "keys": dict(st.keys),
            "objects": dict(st.objects), "tries": (st.pin_retries_left, st.puk_retries_left)}


def enrolled(tmp_path: Path, ca: Path, **kw: object) -> Path:
    card = make_card(tmp_path, **kw)  # type: ignore[arg-type]
    r = run(card, "enroll", "--upn", UPN, "--ca", str(ca), env=NEW)
    assert r.exit_code == 0, r.output
    return card


@pytest.mark.parametrize("bad", [
    ("--ca", "no-such-ca"),
    ("--issuer-cmd", "./missing.sh"),
    ("--issuer-cmd", "no-such-issuer-command-x"),
])
def test_force_with_a_bad_issuer_changes_nothing(tmp_path: Path, ca: Path,
                                                 bad: tuple[str, str]) -> None:
    card = enrolled(tmp_path, ca)
    before = snapshot(card)
    r = run(card, "enroll", "--upn", UPN, *bad, "--force", env={**PIN, **NEW})
    assert r.exit_code == 2, r.output
    assert snapshot(card) == before


def test_wrong_ca_passphrase_on_a_fresh_key_changes_nothing(tmp_path: Path) -> None:
    LabCA.init(tmp_path / "eca", "CN=Encrypted CA", passphrase=b"right passphrase")
    card = make_card(tmp_path)
    before = snapshot(card)
    r = run(card, "enroll", "--upn", UPN, "--ca", str(tmp_path / "eca"),
            env={**NEW, "PIVTOOL_CA_PASSPHRASE": "wrong passphrase"})
    assert r.exit_code == 2, r.output
    assert snapshot(card) == before


def test_failing_issuer_after_changes_says_what_changed(tmp_path: Path) -> None:
    """An issuer that exists but fails: not exit 2 (the PIN was set); the error names what
    changed and the same command, once the issuer works, finishes on the same key."""
    card = make_card(tmp_path)
    LabCA.init(tmp_path / "ca", "CN=Flaky CA")
    script, flag = flaky_issuer(tmp_path, tmp_path / "ca")
    args = ("enroll", "--upn", UPN, "--issuer-cmd", str(script))
    r = run(card, *args, env=NEW)
    assert r.exit_code == 1, r.output
    # (enroll changes the PUK first, then the PIN: both are named)
    assert "already changed on the card: PUK set" in r.stderr and "PIN set" in r.stderr
    assert "run the same command again" in r.stderr
    key_before = load_state(card).keys[0x9A]
    flag.write_text("")
    r = run(card, *args, env=NEW)
    assert r.exit_code == 0, r.output
    st = load_state(card)
    assert st.keys[0x9A] == key_before  # the key generated first is the one certified
    assert st.pin_retries_left == 3 and st.puk_retries_left == 3
    assert "already enrolled" in run(card, *args, env=NEW).stdout


def test_force_replaces_transactionally_with_move_key(tmp_path: Path, ca: Path) -> None:
    """5.7: the new key is made in a retired slot; an issuer failure leaves 9a's key and
    certificate working; the same command then moves the checked key into 9a."""
    card = enrolled(tmp_path, ca)
    old = load_state(card)
    script, flag = flaky_issuer(tmp_path, ca)
    args = ("enroll", "--upn", UPN, "--issuer-cmd", str(script), "--force",
            "--backup-dir", str(tmp_path / "bk"))
    r = run(card, *args, env=PIN)
    assert r.exit_code == 1 and "issue certificate" in r.stderr, r.output
    mid = load_state(card)
    assert mid.keys[0x9A] == old.keys[0x9A]  # the working credential is untouched
    assert mid.objects[0x5FC105] == old.objects[0x5FC105]
    staged = [s for s in mid.keys if 0x82 <= s <= 0x95]
    assert len(staged) == 1
    flag.write_text("")
    r = run(card, *args, env=PIN)
    assert r.exit_code == 0, r.output
    done = load_state(card)
    assert done.keys[0x9A] == mid.keys[staged[0]]  # that very key, moved; no second key
    assert not [s for s in done.keys if 0x82 <= s <= 0x95]
    assert done.pin_retries_left == 3


def test_force_without_move_key_warns_before(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca, firmware=(5, 4, 3))
    r = run(card, "--json", "enroll", "--upn", UPN, "--ca", str(ca), "--force",
            "--backup-dir", str(tmp_path / "bk"), env=PIN)
    assert r.exit_code == 0, r.output
    steps = {s["step"]: s for s in json.loads(r.stdout)["steps"]}
    assert "old credential is gone" in steps["check slots"]["detail"]


def test_force_with_only_a_new_pin_never_guesses(tmp_path: Path, ca: Path) -> None:
    card = enrolled(tmp_path, ca)
    r = run(card, "enroll", "--upn", UPN, "--ca", str(ca), "--force",
            "--backup-dir", str(tmp_path / "bk"), env={"PIVTOOL_NEW_PIN": "24681357"})
    assert r.exit_code == 2 and "current PIN" in r.stderr, r.output
    assert load_state(card).pin_retries_left == 3


@pytest.mark.parametrize("n", [40, 50, 55, 58])
def test_answer_lost_then_same_command(tmp_path: Path, ca: Path, n: int) -> None:
    card = make_card(tmp_path)
    args = ("enroll", "--upn", UPN, "--ca", str(ca))
    r = run_faulted(card, args, {**NEW, **PIN}, at=n, kind="answer-lost")
    assert r.exit_code == 5, r.output
    r = run(card, *args, env={**NEW, **PIN})  # the PIN given is the old one: never tried
    assert r.exit_code == 0, r.output
    st = load_state(card)
    assert st.pin == b"24681357" and st.pin_retries_left == 3 and st.puk_retries_left == 3
    ca_index = LabCA.open(ca).issued()
    assert len(ca_index) == 1  # one certificate issued, never a second


def test_recover_reenroll_with_a_bad_issuer_resets_nothing(tmp_path: Path, ca: Path) -> None:
    """recover --puk-unknown --reenroll: the issuer is checked before the reset destroys
    the keys (exit 2, the card exactly as before)."""
    card = enrolled(tmp_path, ca)
    for _ in range(3):
        run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "00000000"})
    before = snapshot(card)
    r = run(card, "recover", "--puk-unknown", "--reenroll", "--ca", str(tmp_path / "nope"),
            "--yes", "--backup-dir", str(tmp_path / "bk"), env=NEW)
    assert r.exit_code == 2, r.output
    assert snapshot(card) == before
