"""The lab CA requiring a verified key attestation (issue 16): `ca issue --require-attestation
ATTEST,F9`, `ca init --require-attestation` with enroll passing the attestation, and the
attestation files an --issuer-cmd gets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from pivtool.certs.csr import build_csr
from pivtool.certs.profile import CertRequest
from tests.cli.clihelp import make_card, run

PIN = {"PIVTOOL_PIN": "123456"}


def _attested_card(tmp_path: Path, *generate: str) -> tuple[Path, Path, Path, Path, Path]:
    """A card with a 9a key, its CSR, attestation, f9 certificate and the card's root."""
    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a", *generate).exit_code == 0
    csr, att, f9, root = (tmp_path / n for n in ("9a.csr", "att.pem", "f9.pem", "root.pem"))
    assert run(card, "certs", "request", "9a", "--upn", "alice@contoso.com", "-o", str(csr),
               env=PIN).exit_code == 0
    run(card, "keys", "attest", "9a", "-o", str(att))
    assert run(card, "certs", "export", "f9", "-o", str(f9)).exit_code == 0
    assert run(None, "sim", "attestation-root", str(card), "-o", str(root)).exit_code == 0
    return card, csr, att, f9, root


def test_ca_issue_require_attestation(tmp_path: Path) -> None:
    _card, csr, att, f9, root = _attested_card(tmp_path, "--touch-policy", "never")
    evidence = f"{att},{f9}"
    # Against Yubico's roots (the default) the virtual card's attestation does not verify.
    assert run(None, "ca", "init", str(tmp_path / "yubico"), "--subject", "CN=Y").exit_code == 0
    r = run(None, "ca", "issue", str(tmp_path / "yubico"), str(csr), "--require-attestation",
            evidence)
    assert r.exit_code == 2 and "attestation NOT verified" in r.stderr, r.output
    # A CA trusting the card's root, wanting touch: the key has none.
    ca = tmp_path / "ca"
    assert run(None, "ca", "init", str(ca), "--subject", "CN=Attesting CA",
               "--require-attestation", "--attestation-roots", str(root),
               "--min-touch-policy", "always").exit_code == 0
    r = run(None, "ca", "issue", str(ca), str(csr), "--require-attestation", evidence)
    assert r.exit_code == 2
    assert "touch policy is never; this CA requires at least always" in r.stderr
    # No attestation at all: refused by the CA's own policy.
    r = run(None, "ca", "issue", str(ca), str(csr))
    assert r.exit_code == 2 and "issues only for attested keys" in r.stderr
    # A CSR for another key with this attestation.
    other = build_csr(ec.generate_private_key(ec.SECP256R1()),
                      CertRequest.create(upns=["alice@contoso.com"]))
    (tmp_path / "other.csr").write_bytes(other.public_bytes(Encoding.PEM))
    plain = tmp_path / "plain"
    assert run(None, "ca", "init", str(plain), "--subject", "CN=P", "--require-attestation",
               "--attestation-roots", str(root)).exit_code == 0
    r = run(None, "ca", "issue", str(plain), str(tmp_path / "other.csr"),
            "--require-attestation", evidence)
    assert r.exit_code == 2 and "the CSR's key is not the attested key" in r.stderr
    assert json.loads((plain / "index.json").read_text())["issued"] == []
    # The right key: issued, and the CA records what the attestation said.
    r = run(None, "ca", "issue", str(plain), str(csr), "--require-attestation", evidence,
            "-o", str(tmp_path / "alice.crt"))
    assert r.exit_code == 0, r.output
    assert "Key attested: YubiKey serial 5550001, PIN once, touch never; verified to " \
           "CN=pivtool sim PIV Root CA Serial 5550001" in r.stdout
    (record,) = json.loads((plain / "index.json").read_text())["issued"]
    assert record["attestation"]["yubikey_serial"] == 5550001


def test_enroll_passes_the_attestation(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    root = tmp_path / "root.pem"
    assert run(None, "sim", "attestation-root", str(card), "-o", str(root)).exit_code == 0
    env = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
    # A CA trusting only Yubico's roots refuses the virtual card's key, before any import.
    strict = tmp_path / "strict"
    assert run(None, "ca", "init", str(strict), "--subject", "CN=S",
               "--require-attestation").exit_code == 0
    r = run(card, "enroll", "--upn", "alice@contoso.com", "--ca", str(strict), env=env)
    assert r.exit_code != 0 and "attestation NOT verified" in r.output, r.output
    # One trusting the card's root issues, and records the attestation.
    ca = tmp_path / "ca"
    assert run(None, "ca", "init", str(ca), "--subject", "CN=C", "--require-attestation",
               "--attestation-roots", str(root)).exit_code == 0
    r = run(card, "enroll", "--upn", "alice@contoso.com", "--ca", str(ca), "--force",
            env={**env, "PIVTOOL_PIN": "24681357", "PIVTOOL_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    (record,) = json.loads((ca / "index.json").read_text())["issued"]
    assert record["attestation"]["verified_to"] == "CN=pivtool sim PIV Root CA Serial 5550001"


def test_issuer_command_gets_attestation_files(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    ca = tmp_path / "ca"
    assert run(None, "ca", "init", str(ca), "--subject", "CN=C").exit_code == 0
    seen = tmp_path / "seen.json"
    issuer = tmp_path / "issuer.py"
    issuer.write_text(
        "import json, os, sys\nfrom pivtool.certs.ca import LabCA\n"
        "from cryptography.hazmat.primitives.serialization import Encoding\n"
        "names = ('PIVTOOL_ATTESTATION', 'PIVTOOL_ATTESTATION_INTERMEDIATE')\n"
        f"json.dump({{n: open(os.environ[n]).read() for n in names}}, open({str(seen)!r}, 'w'))\n"
        f"ca = LabCA.open({str(ca)!r})\n"
        "sys.stdout.buffer.write(ca.issue(sys.stdin.buffer.read()).public_bytes(Encoding.PEM))\n")
    env = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
    r = run(card, "enroll", "--upn", "alice@contoso.com", "--issuer-cmd",
            f"{sys.executable} {issuer}", env=env)
    assert r.exit_code == 0, r.output
    files = json.loads(seen.read_text())
    att = x509.load_pem_x509_certificate(files["PIVTOOL_ATTESTATION"].encode())
    f9 = x509.load_pem_x509_certificate(files["PIVTOOL_ATTESTATION_INTERMEDIATE"].encode())
    att.verify_directly_issued_by(f9)
    cert = x509.load_pem_x509_certificate(
        run(card, "certs", "export", "9a").stdout_bytes)
    assert cert.public_key() == att.public_key()
