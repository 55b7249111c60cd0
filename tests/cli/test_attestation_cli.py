"""Attestation that proves something (issue 16): the chain attestation -> f9 -> a trusted
root, checked signature by signature; Yubico's published roots by default, --roots for
others; "verified to ROOT" or "NOT verified" (exit 1), never a claim without the chain."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pivtool.sim.attestation import attestation_root_ca
from pivtool.sim.state import load_state, save_state
from tests.cli.clihelp import make_card, run, run_json, self_signed, store_certificate_object

VECTORS = Path(__file__).parent.parent / "certs" / "vectors"
PIV_ROOT = "CN=Yubico PIV Root CA Serial 263751"


def _root_file(card: Path, tmp_path: Path) -> Path:
    """The virtual card's attestation root, exported as the emulator knows it."""
    path = tmp_path / "sim-root.pem"
    path.write_bytes(attestation_root_ca(load_state(card)).public_bytes(
        serialization.Encoding.PEM))
    return path


def test_virtual_yubikey_verified_only_with_its_root(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    r = run(card, "keys", "attest", "9a", "-o", str(tmp_path / "att.pem"))
    assert r.exit_code == 1, r.output
    assert "NOT verified" in r.stdout and "verified to" not in r.stdout
    assert "does not chain to a trusted attestation root" in r.stdout
    roots = _root_file(card, tmp_path)
    root_subject = attestation_root_ca(load_state(card)).subject.rfc4514_string()
    r = run(card, "keys", "attest", "9a", "--roots", str(roots))
    assert r.exit_code == 0, r.output
    assert f"verified to {root_subject}" in r.stderr  # the PEM is on stdout
    data = run_json(card, "keys", "attest", "9a", "--roots", str(roots))
    assert data["verified"] is True and data["verified_to"] == root_subject
    assert data["signed_by_f9"] is True and data["matches_slot_key"] is True
    # The command-line export gives the same root file.
    r = run(None, "sim", "attestation-root", str(card))
    assert r.exit_code == 0 and r.stdout_bytes == roots.read_bytes()
    # The same pair as files, no card: verify-attestation.
    f9 = tmp_path / "f9.pem"
    f9.write_bytes(run(card, "certs", "export", "f9").stdout_bytes)
    r = run(None, "keys", "verify-attestation", str(tmp_path / "att.pem"), str(f9))
    assert r.exit_code == 1 and "NOT verified" in r.stdout
    r = run(None, "keys", "verify-attestation", str(tmp_path / "att.pem"), str(f9),
            "--roots", str(roots))
    assert r.exit_code == 0 and f"verified to {root_subject}" in r.stdout


def _forge_f9(card: Path) -> None:
    """Put a self-made "Yubico" attestation key and certificate into the card's f9."""
    from pivtool.sim.state import SlotKey

    key = ec.generate_private_key(ec.SECP256R1())
    state = load_state(card)
    old = state.keys[0xF9]
    state.keys[0xF9] = SlotKey(old.algorithm, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode(), old.pin_policy, old.touch_policy, old.origin)
    save_state(state, card)
    store_certificate_object(card, 0x5FFF01,
                             self_signed("Totally Yubico Attestation", key, ca=True))


def test_forged_f9_is_not_verified(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _forge_f9(card)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    r = run(card, "--json", "keys", "attest", "9a")
    assert r.exit_code == 1, r.output
    import json

    data = json.loads(r.stdout)
    # The forged f9 did sign the attestation: that proves nothing.
    assert data["signed_by_f9"] is True and data["verified"] is False
    assert data["verified_to"] is None
    assert "CN=Totally Yubico Attestation does not chain" in data["reason"]
    r = run(card, "keys", "attest", "9a")
    assert r.exit_code == 1 and "NOT verified" in r.stderr
    assert "proved" not in r.output.lower() and "verified to" not in r.output
    # Not even the virtual card's own root vouches for it.
    r = run(card, "keys", "attest", "9a", "--roots", str(_root_file(card, tmp_path)))
    assert r.exit_code == 1


def test_real_yubikey_attestations_verify_to_yubico_roots() -> None:
    for year, root, serial, fw in (("2016", PIV_ROOT, 15732500, "5.4.3"),
                                   ("2018", "CN=Yubico U2F Root CA Serial 457200631",
                                    None, "4.3.7")):
        att, f9 = VECTORS / f"gopiv-{year}-attest-9a.pem", VECTORS / f"gopiv-{year}-f9.pem"
        data = run_json(None, "keys", "verify-attestation", str(att), str(f9))
        assert data["schema"] == "pivtool.attestation-verify/1"
        assert data["verified"] is True and data["verified_to"] == root
        assert data["slot"] == "9a" and data["serial"] == serial and data["firmware"] == fw
        assert data["pin_policy"] == "once" and data["touch_policy"] == "never"
        r = run(None, "keys", "verify-attestation", str(att), str(f9))
        # A YubiKey 4 attestation carries no serial: none is shown (never "None").
        who = f"YubiKey serial {serial}" if serial is not None else "YubiKey"
        assert f"Slot 9a: key generated on {who} (firmware {fw})" in r.stdout
        assert f"attestation verified to {root}." in r.stdout


def test_mismatched_pairs_and_other_roots_are_not_verified(tmp_path: Path) -> None:
    # go-piv's InvalidChain: the attestation of one YubiKey with the f9 of another.
    r = run(None, "keys", "verify-attestation", str(VECTORS / "gopiv-2018-attest-9a.pem"),
            str(VECTORS / "gopiv-2016-f9.pem"))
    assert r.exit_code == 1 and "not signed by this f9 certificate" in r.stdout
    # --roots replaces Yubico's roots: a real pair is then not verified.
    card = make_card(tmp_path)
    r = run(None, "keys", "verify-attestation", str(VECTORS / "gopiv-2016-attest-9a.pem"),
            str(VECTORS / "gopiv-2016-f9.pem"), "--roots", str(_root_file(card, tmp_path)))
    assert r.exit_code == 1 and "NOT verified" in r.stdout
    r = run(None, "keys", "verify-attestation", str(tmp_path / "missing.pem"),
            str(VECTORS / "gopiv-2016-f9.pem"))
    assert r.exit_code == 2 and "cannot read attestation certificate" in r.stderr
