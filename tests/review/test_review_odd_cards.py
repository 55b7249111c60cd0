"""Cards we did not make (issue 14 items 1, 3, 4; issue 16 item 3): odd answers to the
YubiKey extensions leave a fact unknown instead of failing every command; refusals are in
words; where the card cannot tell the PUK (or PIN) tries, no try is spent without
--allow-last-try or a person's yes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pivtool.sim.state import load_state
from tests.cli.clihelp import make_card, run, run_json, self_signed
from tests.quirks import (
    Rule,
    all_metadata_sw,
    empty_slot_metadata_without_algorithm,
    install_quirks,
    origin_zero,
    slot_metadata_sw,
)

PINS = {"PIVTOOL_PIN": "123456"}


@pytest.fixture
def quirks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Rule]]:
    """Odd answers for every card the CLI opens in the test."""
    yield from install_quirks(monkeypatch)


def _no_bare_sw(text: str) -> None:
    """No message is a bare status word (or its old all-caps name)."""
    for line in text.splitlines():
        if line.startswith("Error: "):
            assert not line[7:].startswith("SW="), line
        assert "(UNKNOWN)" not in line and "None" not in line, line


# --- item 1: capabilities discovered, never assumed ---------------------------------


def test_empty_slot_metadata_without_algorithm_is_unknown_not_fatal(
        tmp_path: Path, quirks: list[Rule]) -> None:
    card = make_card(tmp_path)
    quirks.append(empty_slot_metadata_without_algorithm)
    data = run_json(card, "info")
    # Every empty slot is "unknown" (the answer names no key), none is a failure.
    assert "9a" in data["unknown_slots"] and data["slots"] == []
    r = run(card, "info")
    assert r.exit_code == 0 and "unknown whether" in r.stdout
    r = run(card, "keys", "generate", "9a", "-a", "eccp256")
    assert r.exit_code == 0, r.output
    assert "cannot report slot keys" in r.output
    r = run(card, "certs", "selfsign", "9a", "--upn", "a@contoso.com", env=PINS)
    assert r.exit_code == 0, r.output
    for args in (["keys", "info", "9a"], ["certs", "export", "9a"], ["keys", "attest", "9a"],
                 ["check"], ["info"]):
        r = run(card, *args)
        assert r.exit_code in (0, 1), (args, r.output)
        assert "malformed metadata" not in r.output, args
    data = run_json(card, "info")
    assert [s["slot"] for s in data["slots"]] == ["9a"]
    assert data["slots"][0]["key_status"] == "present"


def test_sw_0002_after_import_is_unknown_in_words(tmp_path: Path, quirks: list[Rule]) -> None:
    card = make_card(tmp_path)
    key, pem = _key_file(tmp_path)
    assert run(card, "keys", "import", "9a", str(pem)).exit_code == 0
    quirks.append(slot_metadata_sw(0x0002, 0x9A))
    r = run(card, "keys", "info", "9a")
    assert r.exit_code == 0, r.output
    assert "key:  unknown" in r.stdout and "the card refused (SW=0002)" in r.stdout
    _no_bare_sw(r.output)
    # A certificate for the key: import cannot check the match, so it asks for --force
    # (in words), and then info lists the slot instead of leaving it out.
    cert = self_signed("odd", key)
    cpem = tmp_path / "c.pem"
    cpem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    r = run(card, "certs", "import", "9a", str(cpem))
    assert r.exit_code == 2 and "--force" in r.stderr
    _no_bare_sw(r.output)
    assert run(card, "certs", "import", "9a", str(cpem), "--force").exit_code == 0
    data = run_json(card, "info")
    slot = next(s for s in data["slots"] if s["slot"] == "9a")
    assert slot["key_status"] == "unknown" and slot["certificate"] is not None
    assert "SW=0002" in slot["key_unknown_reason"]


def test_origin_zero_lets_the_card_attest(tmp_path: Path, quirks: list[Rule]) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    quirks.append(origin_zero)
    assert run_json(card, "keys", "info", "9a")["key"]["origin"] == "unknown"
    # The card attests it (exit 1 only because the virtual card's root is not trusted).
    r = run(card, "--json", "keys", "attest", "9a")
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    assert data["slot"] == "9a" and data["matches_slot_key"] is True


def test_attest_refusal_is_the_cards_in_words(tmp_path: Path, quirks: list[Rule]) -> None:
    card = make_card(tmp_path)
    _key, pem = _key_file(tmp_path)
    assert run(card, "keys", "import", "9a", str(pem)).exit_code == 0
    quirks.append(origin_zero)  # the origin no longer says "imported": the card judges
    r = run(card, "keys", "attest", "9a")
    assert r.exit_code == 1
    assert "refused to attest slot 9a" in r.stderr and "generated on the card" in r.stderr
    _no_bare_sw(r.output)


@pytest.mark.parametrize("sw", [0x6A86, 0x6F00, 0x0002])
def test_every_metadata_answer_refused(tmp_path: Path, quirks: list[Rule], sw: int) -> None:
    """A 5.7 "YubiKey" whose GET METADATA answers are all refused: PIN tries from the empty
    VERIFY, the management key found by trying it, slots from their certificates."""
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    quirks.append(all_metadata_sw(sw))
    data = run_json(card, "info")
    assert data["pin"]["tries_left"] == 3 and data["puk"]["tries_left"] is None
    assert data["management_key"]["default"] is None
    r = run(card, "certs", "selfsign", "9a", "--upn", "a@contoso.com", env=PINS)
    assert r.exit_code == 2 and "--public-key" in r.stderr, r.output
    r = run(card, "keys", "generate", "9c", env=PINS)
    assert r.exit_code == 0, r.output
    assert run(card, "pin", "verify", env=PINS).exit_code == 0


def _key_file(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    """A P-256 private key and the PEM file holding it."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return key, pem


# --- item 3: every SW in words --------------------------------------------------------


def test_generate_refused_algorithm_in_words(tmp_path: Path, quirks: list[Rule]) -> None:
    card = make_card(tmp_path, generic=True)

    def refuse_p384(apdu: bytes, answer: tuple[bytes, int]) -> tuple[bytes, int] | None:
        if apdu[1] == 0x47 and apdu[3] == 0x9A and bytes.fromhex("800114") in apdu:
            return b"", 0x6A80
        return None

    quirks.append(refuse_p384)
    r = run(card, "keys", "generate", "9a", "-a", "eccp384")
    assert r.exit_code == 1
    assert "generate a key in slot 9a (authentication): the card refuses this algorithm" \
        in r.stderr
    _no_bare_sw(r.output)


# --- item 4 / issue 16 item 3: the retry guard where counts are unreadable ------------


@pytest.mark.parametrize("kind", ["fw43", "generic"])
def test_puk_guard_holds_without_metadata(tmp_path: Path, kind: str) -> None:
    card = (make_card(tmp_path, firmware=(4, 3, 7)) if kind == "fw43"
            else make_card(tmp_path, generic=True))
    wrong = {"PIVTOOL_PUK": "00000000", "PIVTOOL_NEW_PUK": "87654321",
             "PIVTOOL_NEW_PIN": "11112222"}
    for args in (["puk", "change"], ["pin", "unblock"]):
        for _ in range(3):  # three in a row used to block the PUK
            r = run(card, *args, env=wrong)
            assert r.exit_code == 4, r.output
            assert "cannot tell how many PUK tries are left" in r.stderr
            assert "--allow-last-try" in r.stderr
        assert load_state(card).puk_retries_left == 3
    # With --allow-last-try the try is spent, and the card's answers are in words.
    r = run(card, "puk", "change", "--allow-last-try", env=wrong)
    assert r.exit_code == 3 and "wrong PUK, 2 tries left" in r.stderr
    for _ in range(2):
        run(card, "pin", "unblock", "--allow-last-try", env=wrong)
    r = run(card, "pin", "unblock", "--allow-last-try", env=wrong)
    assert r.exit_code == 4 and "the PUK is blocked" in r.stderr
    _no_bare_sw(r.output)


def test_pin_guard_where_the_empty_verify_is_refused(tmp_path: Path,
                                                      quirks: list[Rule]) -> None:
    card = make_card(tmp_path, generic=True)

    def no_status_query(apdu: bytes, answer: tuple[bytes, int]) -> tuple[bytes, int] | None:
        return (b"", 0x6A80) if apdu[:4] == bytes.fromhex("00200080") and len(apdu) == 4 \
            else None

    quirks.append(no_status_query)
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "00000000"})
    assert r.exit_code == 4 and "cannot tell how many PIN tries" in r.stderr
    assert load_state(card).pin_retries_left == 3


@pytest.mark.parametrize("kind", ["fw43", "generic"])
def test_enroll_replaces_factory_pin_and_puk_without_metadata(tmp_path: Path,
                                                              kind: str) -> None:
    from pivtool.certs.ca import LabCA

    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Lab CA")
    card = (make_card(tmp_path, firmware=(4, 3, 7)) if kind == "fw43"
            else make_card(tmp_path, generic=True))
    env = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
    base = ("enroll", "--upn", "g@contoso.com", "--ca", str(ca))
    # The PUK's tries are unreadable: changing the factory PUK needs --allow-last-try, and
    # the refusal comes before anything changed.
    r = run(card, *base, env=env)
    assert r.exit_code == 4 and "--keep-puk" in r.stderr, r.output
    st = load_state(card)
    assert st.pin == b"123456" and st.puk == b"12345678" and 0x9A not in st.keys
    r = run(card, "--json", *base, "--allow-last-try", env=env)
    assert r.exit_code == 0, r.output
    steps = {s["step"]: s["detail"] for s in json.loads(r.stdout)["steps"]}
    assert steps["PIN and PUK"].startswith("PIN set; PUK set")
    st = load_state(card)
    assert st.pin == b"24681357" and st.puk == b"86427531"
    # 123456 no longer verifies.
    assert run(card, "pin", "verify", env=PINS).exit_code == 3


def test_enroll_keep_puk_and_non_default_puk(tmp_path: Path) -> None:
    from pivtool.certs.ca import LabCA

    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Lab CA")
    card = make_card(tmp_path, firmware=(4, 3, 7))
    env = {"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": "11223344"}
    assert run(card, "puk", "change", "--allow-last-try", env=env).exit_code == 0
    env = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
    base = ("--json", "enroll", "--upn", "g@contoso.com", "--ca", str(ca))
    # Not the default: the card refuses 12345678, which proves it; the PUK is kept.
    r = run(card, *base, "--allow-last-try", env=env)
    assert r.exit_code == 0, r.output
    detail = {s["step"]: s["detail"] for s in json.loads(r.stdout)["steps"]}["PIN and PUK"]
    assert "PUK kept (it is not the factory default" in detail
    assert load_state(card).puk == b"11223344"
    card2 = make_card(tmp_path, "c2.json", firmware=(4, 3, 7))
    r = run(card2, *base, "--keep-puk", env=env)
    assert r.exit_code == 0, r.output
    assert load_state(card2).puk_retries_left == 3 and load_state(card2).pin == b"24681357"


def test_enroll_random_pin_and_puk_always_take_effect(tmp_path: Path) -> None:
    from pivtool.certs.ca import LabCA

    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Lab CA")
    card = make_card(tmp_path)
    env = {"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "11112222",
           "PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": "33334444"}
    assert run(card, "pin", "change", env=env).exit_code == 0
    assert run(card, "puk", "change", env=env).exit_code == 0
    out = tmp_path / "secrets.json"
    r = run(card, "enroll", "--upn", "r@contoso.com", "--ca", str(ca), "--random-pin",
            "--random-puk", "--secrets-out", str(out),
            env={"PIVTOOL_PIN": "11112222", "PIVTOOL_PUK": "33334444"})
    assert r.exit_code == 0, r.output
    written = json.loads(out.read_text())
    st = load_state(card)
    assert st.pin == written["pin"].encode() and st.puk == written["puk"].encode()


# --- item 2: the generic path all the way ------------------------------------------------


def test_public_key_file_for_cards_that_cannot_report_keys(tmp_path: Path,
                                                           openssl_cli: str) -> None:
    import subprocess

    card = make_card(tmp_path, generic=True)
    pub = tmp_path / "pub.pem"
    assert run(card, "keys", "generate", "9a", "-o", str(pub)).exit_code == 0
    r = run(card, "certs", "request", "9a", "--upn", "g@contoso.com", env=PINS)
    assert r.exit_code == 2 and "--public-key FILE" in r.stderr
    csr = tmp_path / "req.csr"
    r = run(card, "certs", "request", "9a", "--public-key", str(pub), "--upn",
            "g@contoso.com", "-o", str(csr), env=PINS)
    assert r.exit_code == 0, r.output
    done = subprocess.run([openssl_cli, "req", "-in", str(csr), "-verify", "-noout"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    # Another key's file: the test signature shows it before anything is built or written.
    other = tmp_path / "other.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    r = run(card, "certs", "selfsign", "9a", "--public-key", str(other), "--upn",
            "g@contoso.com", env=PINS)
    assert r.exit_code == 2 and "test signature" in r.stderr
    assert run_json(card, "info")["slots"] == []
    der = tmp_path / "pub.der"
    der.write_bytes(serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    r = run(card, "certs", "selfsign", "9a", "--public-key", str(der), "--upn",
            "g@contoso.com", env=PINS)
    assert r.exit_code == 0, r.output
    data = run_json(card, "info")
    assert [s["slot"] for s in data["slots"]] == ["9a"]
    assert data["slots"][0]["key_status"] == "unknown"
    r = run(card, "info")
    assert "only slots with a certificate are listed" in r.stdout


def test_recover_does_not_call_unknown_keys_none(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    r = run(card, "recover", env=PINS)
    assert r.exit_code == 0, r.output
    assert "keys unknown (the card does not report them)" in r.output
    assert "holds no keys" not in r.output
