"""Review (safety standards): nothing the user had is destroyed without --force and a backup
of the certificates, and a bad output/backup path is one line with exit 2, never a
traceback (and never after the card was changed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pivtool.certs.ca import LabCA
from pivtool.piv.constants import Slot
from tests.cli.clihelp import make_card, run, session

PIN, PUK = "24681357", "86427531"
UPN = "alice@contoso.com"
PINENV = {"PIVTOOL_PIN": PIN}


@pytest.fixture
def enrolled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    card = make_card(tmp_path)
    LabCA.init(tmp_path / "ca", "CN=Review CA", crl_url="http://127.0.0.1/ca.crl")
    r = run(card, "enroll", "--upn", UPN, "--ca", str(tmp_path / "ca"),
            env={"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK})
    assert r.exit_code == 0, r.output
    return card


def _cert_der(card: Path) -> bytes:
    s = session(card)
    try:
        return s.get_certificate_der(Slot.AUTHENTICATION)[0]
    finally:
        s.connection.close()


def test_objects_write_does_not_overwrite_a_certificate_without_force(
        enrolled: Path, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x70\x03abc")
    before = enrolled.read_bytes()
    r = run(enrolled, "objects", "write", "authentication", str(blob), env=PINENV)
    assert r.exit_code == 2, r.output
    assert "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert enrolled.read_bytes() == before


def test_objects_write_force_saves_the_certificate_first(enrolled: Path,
                                                         tmp_path: Path) -> None:
    old = _cert_der(enrolled)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x70\x03abc")
    r = run(enrolled, "objects", "write", "authentication", str(blob), "--force", env=PINENV)
    assert r.exit_code == 0, r.output
    saved = list(tmp_path.glob("pivtool-slot-9a-*-old-*.pem"))
    assert len(saved) == 1
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    assert x509.load_pem_x509_certificate(saved[0].read_bytes()).public_bytes(
        Encoding.DER) == old


def test_backup_dir_that_is_a_file_is_a_usage_error(enrolled: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = enrolled.read_bytes()
    r = run(enrolled, "enroll", "--upn", UPN, "--ca", str(tmp_path / "ca"), "--force",
            "--backup-dir", str(afile), env=PINENV)
    assert r.exit_code == 2, r.output
    assert str(afile) in r.stderr
    assert enrolled.read_bytes() == before


def test_reset_backup_dir_that_is_a_file_is_a_usage_error(enrolled: Path,
                                                          tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = enrolled.read_bytes()
    r = run(enrolled, "reset", "--yes", "--backup-dir", str(afile))
    assert r.exit_code == 2, r.output
    assert enrolled.read_bytes() == before


def test_csr_out_in_a_missing_directory_fails_before_the_card_changes(
        enrolled: Path, tmp_path: Path) -> None:
    before = enrolled.read_bytes()
    r = run(enrolled, "enroll", "--upn", UPN, "--force",
            "--csr-out", str(tmp_path / "missing" / "x.csr"), env=PINENV)
    assert r.exit_code == 2, r.output
    assert "missing" in r.stderr
    # The enrolled key is not destroyed for a CSR that could never be written.
    assert enrolled.read_bytes() == before


def test_secrets_out_in_a_missing_directory_fails_before_the_card_changes(
        tmp_path: Path) -> None:
    card = make_card(tmp_path)
    LabCA.init(tmp_path / "ca", "CN=Review CA", crl_url="http://127.0.0.1/ca.crl")
    before = card.read_bytes()
    r = run(card, "enroll", "--upn", UPN, "--ca", str(tmp_path / "ca"), "--random-pin",
            "--random-puk", "--secrets-out", str(tmp_path / "missing" / "s.json"))
    assert r.exit_code == 2, r.output
    assert card.read_bytes() == before


def test_write_secrets_oserror_is_one_line(tmp_path: Path) -> None:
    """Even when the directory goes away between the check and the write."""
    from pivtool.core.errors import UsageError
    from pivtool.workflows.enroll_pin import _write_secrets

    with pytest.raises(UsageError) as e:
        _write_secrets(str(tmp_path / "gone" / "s.json"), {"pin": "12345678"})
    assert "12345678" not in str(e.value)
