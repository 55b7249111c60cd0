"""pivtool ca: init, issue, revoke, crl, list — checked with cryptography and openssl."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pivtool.certs import CertRequest, build_csr
from tests.cli.clihelp import run

PASS = "correct horse battery staple"
ENV = {"PIVTOOL_CA_PASSPHRASE": PASS}
SUBJECT = "CN=Contoso Lab CA,O=Contoso"
CRL_URL = "http://crl.contoso.test/lab.crl"

# openssl is part of the test set-up (scripts/dev installs it): missing is a failure,
# never a skip.
requires_openssl = pytest.mark.usefixtures("openssl_cli")


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False,
                          timeout=30)


def _csr(path: Path, upn: str | None = "alice@contoso.com") -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    if upn is None:  # a CSR without UPN or e-mail: the lab CA must refuse it
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name.from_rfc4514_string("CN=nobody"))
               .sign(key, hashes.SHA256()))
    else:
        csr = build_csr(key, CertRequest.create(upns=[upn]))
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    r = run(None, "ca", "init", str(d), "--subject", SUBJECT, "--crl-url", CRL_URL,
            "--passphrase", env=ENV)
    assert r.exit_code == 0, r.output
    return d


def test_init_key_0600_encrypted_and_no_passphrase_in_output(ca_dir: Path) -> None:
    assert os.stat(ca_dir / "ca.key").st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (ca_dir / "ca.key").read_bytes()
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    assert cert.subject.rfc4514_string() == SUBJECT
    # A second init into the same directory refuses (exit 1, one line, nothing replaced).
    r = run(None, "ca", "init", str(ca_dir), "--subject", SUBJECT, env=ENV)
    assert r.exit_code == 2 and "already contains a CA" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_init_json_and_unencrypted(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    r = run(None, "--json", "ca", "init", str(d), "--subject", SUBJECT, "--key-type", "eccp384",
            "--days", "30", env=ENV)  # a passphrase in the env is ignored without --passphrase
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["encrypted"] is False and data["key_type"] == "eccp384"
    assert data["ca"]["subject"] == SUBJECT and data["ca"]["is_ca"] is True
    assert PASS not in r.output
    assert b"BEGIN PRIVATE KEY" in (d / "ca.key").read_bytes()
    # An unencrypted CA never asks for a passphrase.
    csr = _csr(tmp_path / "req.pem")
    r = run(None, "ca", "issue", str(d), str(csr), "-o", str(tmp_path / "c.pem"))
    assert r.exit_code == 0, r.output


@requires_openssl
def test_issue_revoke_crl_list(ca_dir: Path, tmp_path: Path) -> None:
    cert_path = tmp_path / "alice.pem"
    r = run(None, "ca", "issue", str(ca_dir), str(_csr(tmp_path / "a.csr")), "-o",
            str(cert_path), env=ENV)
    assert r.exit_code == 0, r.output
    assert "alice@contoso.com" in r.stdout and PASS not in r.output
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    serial = format(cert.serial_number, "x")
    ok = _openssl("verify", "-CAfile", str(ca_dir / "ca.pem"), str(cert_path))
    assert ok.returncode == 0, ok.stderr
    text = _openssl("x509", "-in", str(cert_path), "-noout", "-text").stdout
    assert CRL_URL in text and "Microsoft Smartcard Login" in text

    # A second user stays valid.
    r = run(None, "ca", "issue", str(ca_dir), str(_csr(tmp_path / "b.csr", "bob@contoso.com")),
            "-o", str(tmp_path / "bob.pem"), "--days", "10", env=ENV)
    assert r.exit_code == 0, r.output

    r = run(None, "--json", "ca", "revoke", str(ca_dir), serial, "--reason", "keycompromise",
            env=ENV)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["status"] == "revoked" and rec["reason"] == "keyCompromise"

    crl_path = tmp_path / "crl.pem"
    r = run(None, "ca", "crl", str(ca_dir), "-o", str(crl_path), "--format", "pem", env=ENV)
    assert r.exit_code == 0, r.output
    assert "1 revoked" in r.stdout and CRL_URL in r.stdout
    parsed = _openssl("crl", "-in", str(crl_path), "-noout", "-text")
    assert parsed.returncode == 0, parsed.stderr
    assert serial.upper() in parsed.stdout.upper().replace(":", "")
    revoked = _openssl("verify", "-crl_check", "-CAfile", str(ca_dir / "ca.pem"),
                       "-CRLfile", str(crl_path), str(cert_path))
    assert revoked.returncode != 0 and "revoked" in (revoked.stdout + revoked.stderr)
    good = _openssl("verify", "-crl_check", "-CAfile", str(ca_dir / "ca.pem"),
                    "-CRLfile", str(crl_path), str(tmp_path / "bob.pem"))
    assert good.returncode == 0, good.stderr
    # DER to stdout (what gets published), also kept in the CA directory.
    r = run(None, "ca", "crl", str(ca_dir), env=ENV)
    assert r.exit_code == 0
    assert x509.load_der_x509_crl(r.stdout_bytes).get_revoked_certificate_by_serial_number(
        cert.serial_number) is not None
    assert (ca_dir / "crl.der").exists()

    data = json.loads(run(None, "--json", "ca", "list", str(ca_dir), env=ENV).stdout)
    by_upn = {tuple(i["upns"]): i for i in data["issued"]}
    assert by_upn[("alice@contoso.com",)]["status"] == "revoked"
    assert by_upn[("bob@contoso.com",)]["status"] == "valid"
    text_list = run(None, "ca", "list", str(ca_dir), env=ENV).stdout
    assert "revoked" in text_list and "bob@contoso.com" in text_list


def test_issue_to_stdout_json(ca_dir: Path, tmp_path: Path) -> None:
    r = run(None, "--json", "ca", "issue", str(ca_dir), str(_csr(tmp_path / "a.csr")), env=ENV)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    cert = x509.load_pem_x509_certificate(data["certificate_pem"].encode())
    assert data["serial"] == format(cert.serial_number, "x").rjust(32, "0")


def test_bad_csr_is_usage_error(ca_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csr"
    bad.write_text("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n"
                   "-----END CERTIFICATE REQUEST-----\n")
    r = run(None, "ca", "issue", str(ca_dir), str(bad), "-o", str(tmp_path / "x.pem"), env=ENV)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "certificate signing request" in r.stderr
    assert "Traceback" not in r.output


def test_csr_without_upn_refused(ca_dir: Path, tmp_path: Path) -> None:
    r = run(None, "ca", "issue", str(ca_dir), str(_csr(tmp_path / "n.csr", None)),
            "-o", str(tmp_path / "x.pem"), env=ENV)
    assert r.exit_code == 2 and "UPN" in r.stderr
    assert not (tmp_path / "x.pem").exists()


def test_existing_output_refused_before_issuing(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.pem"
    out.write_text("keep me")
    r = run(None, "ca", "issue", str(ca_dir), str(_csr(tmp_path / "a.csr")), "-o", str(out),
            env=ENV)
    assert r.exit_code == 2 and "--force" in r.stderr
    assert out.read_text() == "keep me"
    assert json.loads(run(None, "--json", "ca", "list", str(ca_dir), env=ENV).stdout)[
        "issued"] == []


def test_wrong_passphrase(ca_dir: Path, tmp_path: Path) -> None:
    wrong = "tr0ub4dor&3-wrong"
    r = run(None, "ca", "list", str(ca_dir), env={"PIVTOOL_CA_PASSPHRASE": wrong})
    assert r.exit_code == 2
    assert "wrong password" in r.stderr and "CA key" in r.stderr
    assert wrong not in r.output and PASS not in r.output
    # From a file, too.
    pf = tmp_path / "pass.txt"
    pf.write_text(wrong + "\n")
    r = run(None, "ca", "revoke", str(ca_dir), "01", "--passphrase-file", str(pf))
    assert r.exit_code == 2 and wrong not in r.output


def test_missing_passphrase_names_the_sources(ca_dir: Path) -> None:
    r = run(None, "ca", "list", str(ca_dir))
    assert r.exit_code == 2
    assert "PIVTOOL_CA_PASSPHRASE" in r.stderr and "--passphrase-file" in r.stderr


def test_passphrase_file_works(ca_dir: Path, tmp_path: Path) -> None:
    pf = tmp_path / "pass.txt"
    pf.write_text(PASS + "\n")
    r = run(None, "ca", "list", str(ca_dir), "--passphrase-file", str(pf))
    assert r.exit_code == 0 and "No certificates issued yet." in r.stdout


def test_unknown_serial_and_missing_ca(ca_dir: Path, tmp_path: Path) -> None:
    r = run(None, "ca", "revoke", str(ca_dir), "abcdef", env=ENV)
    assert r.exit_code == 2 and "no certificate with serial" in r.stderr
    r = run(None, "ca", "list", str(tmp_path / "nope"))
    assert r.exit_code == 2 and "ca.json is missing" in r.stderr


def test_ca_issue_says_which_policies_it_dropped(tmp_path: Path) -> None:
    mfa, ok = "1.3.6.1.4.1.311.21.8.1.2.3", "1.3.6.1.4.1.99999.1"
    csr = tmp_path / "req.csr"
    csr.write_bytes(build_csr(ec.generate_private_key(ec.SECP256R1()), CertRequest.create(
        upns=["alice@contoso.com"], policies=[ok, mfa])).public_bytes(
            serialization.Encoding.PEM))
    ca = tmp_path / "ca"
    r = run(None, "ca", "init", str(ca), "--subject", "CN=Lab", "--allow-policy", ok)
    assert r.exit_code == 0 and f"issues {ok} when asked" in r.stdout
    r = run(None, "ca", "issue", str(ca), str(csr), "-o", str(tmp_path / "a.crt"))
    assert r.exit_code == 0, r.output
    assert f"Dropped requested certificate policies (not on this CA's allow-list, 'ca init " \
           f"--allow-policy'): {mfa}" in r.stdout
    cert = x509.load_pem_x509_certificate((tmp_path / "a.crt").read_bytes())
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [ok]
    r = run(None, "--json", "ca", "issue", str(ca), str(csr))
    assert json.loads(r.stdout)["dropped_policies"] == [mfa]
