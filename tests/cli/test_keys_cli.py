"""pivtool keys: generate, import, info, export, attest, move, delete — exit codes and the
card state afterwards, against the in-process virtual card."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from pivtool.core.errors import NotFoundError
from pivtool.piv.constants import ObjectId, Slot
from tests.cli.clihelp import make_card, run, run_json, session
from tests.simcards import TDES_9B

PIN = {"PIVTOOL_PIN": "123456"}
PFX_PASS = "pfx-S3cret-Zebra"


def _spki(key: ec.EllipticCurvePublicKey | object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_for(key: ec.EllipticCurvePrivateKey, cn: str = "alice@contoso.com"
              ) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))


def _slot_key(card: Path, slot: Slot) -> bytes | None:
    s = session(card)
    try:
        return _spki(s.get_slot_metadata(slot).public_key())
    except NotFoundError:
        return None
    finally:
        s.connection.close()


def _chuid_guid(card: Path) -> str | None:
    data = run_json(card, "info")
    return data["chuid"]["guid"] if data["chuid"] else None


# --- generate -------------------------------------------------------------------------


def test_generate_writes_public_key_and_refuses_to_replace(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    pub = tmp_path / "pub.pem"
    r = run(card, "keys", "generate", "9a", "-o", str(pub))
    assert r.exit_code == 0, r.output
    assert "eccp256" in r.stdout and "slot 9a" in r.stdout
    on_card = _slot_key(card, Slot.AUTHENTICATION)
    assert on_card == _spki(serialization.load_pem_public_key(pub.read_bytes()))

    # A key in the slot is not replaced without --force: exit 2, same key afterwards.
    r = run(card, "keys", "generate", "authentication")
    assert r.exit_code == 2 and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _slot_key(card, Slot.AUTHENTICATION) == on_card

    data = run_json(card, "keys", "generate", "9a", "--force", "-a", "eccp384")
    assert data["replaced"] is True and data["algorithm"] == "eccp384"
    assert _slot_key(card, Slot.AUTHENTICATION) != on_card
    assert _spki(serialization.load_pem_public_key(data["public_key_pem"].encode())) == \
        _slot_key(card, Slot.AUTHENTICATION)


def test_generate_to_stdout_keeps_status_on_stderr(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "keys", "generate", "9d", "--pin-policy", "never", "--touch-policy",
            "cached")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert "Generated" in r.stderr
    info = run_json(card, "keys", "info", "9d")
    assert info["key"] == {"algorithm": "eccp256", "pin_policy": "never",
                           "touch_policy": "cached", "origin": "generated"}


def test_generate_existing_output_file_refused_before_card(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    out = tmp_path / "exists.pem"
    out.write_text("keep me")
    r = run(card, "keys", "generate", "9a", "-o", str(out))
    assert r.exit_code == 2 and "exists" in r.stderr
    assert out.read_text() == "keep me"
    assert _slot_key(card, Slot.AUTHENTICATION) is None


def test_unknown_slot_and_algorithm_are_usage_errors(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "keys", "generate", "9z")
    assert r.exit_code == 2 and "unknown slot" in r.output
    r = run(card, "keys", "info", "bogus")
    assert r.exit_code == 2
    r = run(card, "keys", "generate", "9a", "-a", "dsa1024")
    assert r.exit_code == 2 and "unknown algorithm" in r.output


def test_algorithm_not_in_firmware_leaves_card_untouched(tmp_path: Path) -> None:
    card = make_card(tmp_path, firmware=(5, 4, 3))
    before = card.read_bytes()
    r = run(card, "keys", "generate", "9a", "-a", "ed25519", env=PIN)
    assert r.exit_code == 2
    assert "5.7" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert card.read_bytes() == before
    # Bio-only PIN policies too.
    r = run(card, "keys", "generate", "9a", "--pin-policy", "match-once")
    assert r.exit_code == 2 and card.read_bytes() == before


def test_generate_on_generic_card(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True, mgmt_key_type=TDES_9B)
    r = run(card, "keys", "generate", "9a", "-a", "eccp256", "-o", str(tmp_path / "p.pem"))
    assert r.exit_code == 0, r.output
    assert "cannot report slot keys" in r.stdout
    info = run_json(card, "keys", "info", "9a")
    assert info["key"] is None and info["metadata_available"] is False
    # Nothing to take the public key from: no metadata, no certificate.
    r = run(card, "keys", "export", "9a")
    assert r.exit_code == 1 and "no certificate" in r.stderr
    # YubiKey-only policies are refused before anything is sent.
    r = run(card, "keys", "generate", "9c", "--touch-policy", "always")
    assert r.exit_code == 2 and "YubiKey extension" in r.stderr


# --- info / export ------------------------------------------------------------------


def test_info_and_export_formats(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9c").exit_code == 0
    info = run_json(card, "keys", "info", "9c")
    assert info["schema"] == "pivtool.key/1"
    assert info["slot"] == "9c" and info["name"] == "signature"
    assert info["key"]["pin_policy"] == "always"  # the YubiKey default for 9c
    assert info["public_key_source"] == "metadata"
    assert info["certificate"] is None and info["certificate_matches_key"] is None
    der = tmp_path / "k.der"
    r = run(card, "keys", "export", "9c", "--format", "der", "-o", str(der))
    assert r.exit_code == 0, r.output
    assert der.read_bytes() == _slot_key(card, Slot.SIGNATURE)
    data = run_json(card, "keys", "export", "9c")
    assert data["schema"] == "pivtool.public-key/1" and data["source"] == "metadata"
    assert data["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    # An empty slot: info says so, export fails with one line.
    assert run_json(card, "keys", "info", "9d")["key"] is None
    r = run(card, "keys", "export", "9d")
    assert r.exit_code == 1 and "holds no key" in r.stderr


# --- import -------------------------------------------------------------------------


def test_import_pkcs12_with_certificate(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert_for(key)
    pfx = tmp_path / "alice.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"alice", key, cert, None,
        serialization.BestAvailableEncryption(PFX_PASS.encode())))
    data = run_json(card, "keys", "import", "9a", str(pfx),
                    env={"PIVTOOL_PFX_PASSWORD": PFX_PASS})
    assert data["format"] == "pkcs12" and data["algorithm"] == "eccp256"
    assert data["certificate"]["written"] is True
    assert data["certificate"]["chuid_guid"] == _chuid_guid(card)
    info = run_json(card, "keys", "info", "9a")
    assert info["key"]["origin"] == "imported"
    assert info["certificate_matches_key"] is True
    assert _slot_key(card, Slot.AUTHENTICATION) == _spki(key.public_key())
    # Imported keys cannot be attested.
    r = run(card, "keys", "attest", "9a")
    assert r.exit_code == 1 and "imported" in r.stderr


def test_import_wrong_pfx_password_one_line_no_secret(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    pfx = tmp_path / "k.p12"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"k", key, _cert_for(key), None,
        serialization.BestAvailableEncryption(PFX_PASS.encode())))
    before = card.read_bytes()
    wrong = "Wrong-Horse-Battery"
    r = run(card, "keys", "import", "9a", str(pfx), env={"PIVTOOL_PFX_PASSWORD": wrong})
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "password" in r.stderr
    assert wrong not in r.output and PFX_PASS not in r.output
    assert card.read_bytes() == before
    # No password at all, non-interactive: a usage error naming where to put it.
    r = run(card, "keys", "import", "9a", str(pfx))
    assert r.exit_code == 2 and "PIVTOOL_PFX_PASSWORD" in r.stderr


def test_import_pem_no_cert_and_encrypted_with_password_file(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "k.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.BestAvailableEncryption(PFX_PASS.encode()))
        + _cert_for(key).public_bytes(serialization.Encoding.PEM))
    pw = tmp_path / "pw"
    pw.write_text(PFX_PASS + "\n")
    data = run_json(card, "keys", "import", "9d", str(pem), "--no-cert", "--password-file",
                    str(pw), "--pin-policy", "never")
    assert data["certificate"] is None and data["format"] == "pem"
    assert any("--no-cert" in n for n in data["notes"])
    info = run_json(card, "keys", "info", "9d")
    assert info["key"]["algorithm"] == "eccp384" and info["key"]["pin_policy"] == "never"
    assert info["certificate"] is None


def test_import_der_key(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    der = tmp_path / "k.der"
    der.write_bytes(key.private_bytes(serialization.Encoding.DER,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    r = run(card, "keys", "import", "82", str(der))
    assert r.exit_code == 0, r.output
    assert _slot_key(card, Slot.RETIRED1) == _spki(key.public_key())


def test_import_malformed_files(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    before = card.read_bytes()
    cases = {
        "bad.pem": b"-----BEGIN PRIVATE KEY-----\nnot base64 !!\n-----END PRIVATE KEY-----\n",
        "bad.der": b"\x30\x03\x02\x01\x00",
        "bad.p12": b"\x30\x10\x02\x01\x03" + b"\x00" * 13,
        "text.txt": b"hello world\n",
        "empty": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        r = run(card, "keys", "import", "9a", str(path), env={"PIVTOOL_PFX_PASSWORD": "x"})
        assert r.exit_code == 2, (name, r.output)
        assert len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
        assert "Traceback" not in r.output
    r = run(card, "keys", "import", "9a", str(tmp_path / "missing.pem"))
    assert r.exit_code == 2 and "cannot read" in r.stderr
    # An unsupported curve is refused before the card is touched.
    p521 = tmp_path / "p521.pem"
    p521.write_bytes(ec.generate_private_key(ec.SECP521R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    r = run(card, "keys", "import", "9a", str(p521))
    assert r.exit_code == 2 and "secp521r1" in r.stderr
    assert card.read_bytes() == before


def test_import_refused_on_generic_card(tmp_path: Path) -> None:
    card = make_card(tmp_path, generic=True)
    pem = tmp_path / "k.pem"
    pem.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    before = card.read_bytes()
    r = run(card, "keys", "import", "9a", str(pem))
    assert r.exit_code == 2 and "YubiKey extension" in r.stderr
    assert card.read_bytes() == before


# --- attest -------------------------------------------------------------------------


def test_attest_checks_against_f9(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a", "--touch-policy", "always").exit_code == 0
    out = tmp_path / "att.pem"
    # The virtual card's f9 chains to its own root, not Yubico's: written, NOT verified.
    r = run(card, "keys", "attest", "9a", "-o", str(out))
    assert r.exit_code == 1, r.output
    assert "NOT verified" in r.stdout
    att = x509.load_pem_x509_certificate(out.read_bytes())
    f9_pem = run(card, "certs", "export", "f9").stdout_bytes
    att.verify_directly_issued_by(x509.load_pem_x509_certificate(f9_pem))
    assert _spki(att.public_key()) == _slot_key(card, Slot.AUTHENTICATION)
    r = run(card, "--json", "keys", "attest", "9a")
    data = json.loads(r.stdout)
    assert data["schema"] == "pivtool.attestation/1"
    assert data["serial"] == 5550001 and data["firmware"] == "5.7.1"
    assert data["pin_policy"] == "once" and data["touch_policy"] == "always"
    assert data["signed_by_f9"] is True and data["matches_slot_key"] is True
    r = run(card, "keys", "attest", "9c")
    assert r.exit_code == 1 and "holds no key" in r.stderr


# --- move / delete --------------------------------------------------------------------


def test_move_key_with_certificate(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    assert run(card, "certs", "selfsign", "9a", "--upn", "alice@contoso.com",
               env=PIN).exit_code == 0
    key_9a = _slot_key(card, Slot.AUTHENTICATION)
    guid = _chuid_guid(card)
    assert run(card, "keys", "generate", "9d").exit_code == 0
    # Occupied destination: refused without --force.
    r = run(card, "keys", "move", "9a", "9d")
    assert r.exit_code == 2 and "--force" in r.stderr
    assert _slot_key(card, Slot.AUTHENTICATION) == key_9a

    data = run_json(card, "keys", "move", "9a", "9d", "--force", "--backup-dir",
                    str(tmp_path / "bk"))
    assert data["certificate_moved"] is True and data["replaced_key"] is True
    assert _slot_key(card, Slot.AUTHENTICATION) is None
    assert _slot_key(card, Slot.KEY_MANAGEMENT) == key_9a
    info = run_json(card, "keys", "info", "9d")
    assert info["certificate"]["upns"] == ["alice@contoso.com"]
    assert info["certificate_matches_key"] is True
    assert run_json(card, "keys", "info", "9a")["certificate"] is None
    assert _chuid_guid(card) not in (None, guid)


def test_move_and_delete_need_firmware_5_7(tmp_path: Path) -> None:
    card = make_card(tmp_path, firmware=(5, 4, 3))
    assert run(card, "keys", "generate", "9a").exit_code == 0
    before = card.read_bytes()
    # Refused from the firmware version before anything is sent: exit 2, like bad input.
    r = run(card, "keys", "move", "9a", "9c")
    assert r.exit_code == 2 and "5.7" in r.stderr
    r = run(card, "keys", "delete", "9a", "--yes")
    assert r.exit_code == 2 and "5.7" in r.stderr
    assert card.read_bytes() == before


def test_delete_confirms_and_backs_up_certificate(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    assert run(card, "certs", "selfsign", "9a", "--upn", "bob@contoso.com",
               env=PIN).exit_code == 0
    cert_pem = run(card, "certs", "export", "9a").stdout_bytes
    guid = _chuid_guid(card)
    # Non-interactive without --yes: refused, nothing deleted.
    r = run(card, "keys", "delete", "9a")
    assert r.exit_code == 2 and "--yes" in r.stderr
    assert _slot_key(card, Slot.AUTHENTICATION) is not None

    backup_dir = tmp_path / "saved"
    data = run_json(card, "keys", "delete", "9a", "--yes", "--backup-dir", str(backup_dir))
    assert data["key_deleted"] is True and data["certificate_deleted"] is True
    saved = Path(data["backup"])
    assert saved.parent == backup_dir and saved.read_bytes() == cert_pem
    assert "5550001" in saved.name
    assert (saved.stat().st_mode & 0o777) == 0o600
    assert _slot_key(card, Slot.AUTHENTICATION) is None
    assert run_json(card, "keys", "info", "9a")["certificate"] is None
    assert _chuid_guid(card) not in (None, guid)
    r = run(card, "keys", "delete", "9a", "--yes")
    assert r.exit_code == 1 and "holds no key" in r.stderr


def test_delete_keep_cert(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9e").exit_code == 0
    assert run(card, "certs", "selfsign", "9e", "--upn", "x@contoso.com").exit_code == 0
    r = run(card, "keys", "delete", "9e", "--yes", "--keep-cert", "--backup-dir",
            str(tmp_path))
    assert r.exit_code == 0, r.output
    s = session(card)
    try:
        assert s.get_data(ObjectId.CARD_AUTH)
    finally:
        s.connection.close()
    assert json.loads(run(card, "--json", "keys", "info", "9e").stdout)["key"] is None


def test_pkcs12_reimport_with_force_saves_old_cert_next_to_file(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    env = {"PIVTOOL_PFX_PASSWORD": PFX_PASS}
    files = []
    for n in (1, 2):
        key = ec.generate_private_key(ec.SECP256R1())
        pfx = tmp_path / f"user{n}.pfx"
        pfx.write_bytes(pkcs12.serialize_key_and_certificates(
            b"u", key, _cert_for(key, f"user{n}@contoso.com"), None,
            serialization.BestAvailableEncryption(PFX_PASS.encode())))
        files.append(pfx)
    assert run(card, "keys", "import", "9a", str(files[0]), env=env).exit_code == 0
    first_cert = run(card, "certs", "export", "9a").stdout_bytes
    r = run(card, "keys", "import", "9a", str(files[1]), env=env)
    assert r.exit_code == 2 and "--force" in r.stderr
    data = run_json(card, "keys", "import", "9a", str(files[1]), "--force", env=env)
    assert data["replaced"] is True
    saved = Path(data["certificate"]["backup"])
    assert saved.name.startswith("user2.pfx.old-slot-9a-") and saved.parent == tmp_path
    assert saved.read_bytes() == first_cert
    assert run_json(card, "keys", "info", "9a")["certificate"]["subject"] == \
        "CN=user2@contoso.com"


def test_protected_management_key_needs_the_pin(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "mgmt-key", "change", "--protect", env=PIN)
    assert r.exit_code == 0, r.output
    before = card.read_bytes()
    r = run(card, "keys", "generate", "9a")
    assert r.exit_code == 2 and "PIVTOOL_PIN" in r.stderr
    assert card.read_bytes() == before
    r = run(card, "keys", "generate", "9a", env={"PIVTOOL_PIN": "654321"})
    assert r.exit_code == 3 and _slot_key(card, Slot.AUTHENTICATION) is None
    r = run(card, "keys", "generate", "9a", env=PIN)
    assert r.exit_code == 0, r.output
    assert _slot_key(card, Slot.AUTHENTICATION) is not None
    assert "123456" not in r.output
