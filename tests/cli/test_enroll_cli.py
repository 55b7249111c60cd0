"""pivtool enroll with each issuer mode, checked with cryptography and with openssl."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pivtool.certs.ca import LabCA
from tests.cli.clihelp import make_card, run, run_json

NEW = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    LabCA.init(d, "CN=Contoso Lab CA,O=Contoso", crl_url="http://127.0.0.1:8080/ca.crl",
               allowed_policies=["1.3.6.1.4.1.99999.1"])
    return d


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True,
                          check=True).stdout


def test_enroll_with_lab_ca(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    data = run_json(card, "enroll", "--upn", "alice@contoso.com", "--email",
                    "alice@contoso.com", "--policy", "1.3.6.1.4.1.99999.1", "--ca", str(ca),
                    env=NEW)
    assert data["status"] == "enrolled"
    assert [s["step"] for s in data["steps"]] == [
        "read card", "check slots", "PIN and PUK", "management key", "generate key",
        "certificate request", "issue certificate", "check certificate",
        "import certificate", "CHUID and CCC", "prove key"]
    assert all(s["status"] == "done" for s in data["steps"])
    ids = {i["value"] for i in data["certificate_user_ids"]}
    assert "X509:<PN>alice@contoso.com" in ids
    info = run_json(card, "info")
    assert info["pin"]["is_default"] is False and info["puk"]["is_default"] is False
    assert info["management_key"]["default"] is False
    assert info["management_key"]["protected"] is True
    assert info["chuid"] is not None and info["ccc"] is not None
    (slot,) = info["slots"]
    assert slot["slot"] == "9a" and slot["key"]["origin"] == "generated"
    assert slot["certificate_matches_key"] is True
    # The certificate, read back from the card, checked by cryptography and by openssl.
    pem = tmp_path / "cert.pem"
    from tests.cli.clihelp import session

    s = session(card)
    try:
        from pivtool.piv.constants import Slot

        cert = s.get_certificate(Slot.AUTHENTICATION)
    finally:
        s.connection.close()
    from cryptography.hazmat.primitives.serialization import Encoding

    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    upn = [n for n in san if isinstance(n, x509.OtherName) and n.type_id == UPN_OID]
    assert upn and upn[0].value == b"\x0c\x11alice@contoso.com"  # UTF8String
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SMARTCARD_LOGON in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    text = _openssl("x509", "-in", str(pem), "-noout", "-text")
    assert "Microsoft Smartcard Login" in text and "TLS Web Client Authentication" in text
    assert "http://127.0.0.1:8080/ca.crl" in text and "1.3.6.1.4.1.99999.1" in text
    assert "UPN:alice@contoso.com" in text or "UPN::alice@contoso.com" in text
    assert _openssl("verify", "-CAfile", str(ca / "ca.pem"), str(pem)).strip().endswith("OK")


def test_random_pin_puk_to_0600_file(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    out = tmp_path / "secrets.json"
    r = run(card, "enroll", "--upn", "carol@contoso.com", "--ca", str(ca), "--random-pin",
            "--random-puk", "--secrets-out", str(out))
    assert r.exit_code == 0, r.output
    assert os.stat(out).st_mode & 0o777 == 0o600
    values = json.loads(out.read_text())
    assert values["pin"] not in r.output and values["puk"] not in r.output
    assert values["pin"].isdigit() and len(values["pin"]) == 8
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": values["pin"]}).exit_code == 0


def test_refuses_used_slot_then_force_backs_up(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    assert run(card, "enroll", "--upn", "dave@contoso.com", "--ca", str(ca),
               env=NEW).exit_code == 0
    first = run_json(card, "info")["slots"][0]["certificate"]["sha256"]
    env = {"PIVTOOL_PIN": "24681357"}
    # The same command again: the job is done, nothing changes.
    r = run(card, "enroll", "--upn", "dave@contoso.com", "--ca", str(ca), env=NEW)
    assert r.exit_code == 0 and "already enrolled" in r.stdout, r.output
    # Another user's enrollment over it needs --force.
    r = run(card, "enroll", "--upn", "eve@contoso.com", "--ca", str(ca), env=env)
    assert r.exit_code == 2 and "check slots" in r.stderr and "--force" in r.stderr
    assert run_json(card, "info")["slots"][0]["certificate"]["sha256"] == first
    bk = tmp_path / "bk"
    r = run(card, "enroll", "--upn", "dave@contoso.com", "--ca", str(ca), "--force",
            "--backup-dir", str(bk), env=env)
    assert r.exit_code == 0, r.output
    assert (bk / "slot-9a.pem").exists()
    assert run_json(card, "info")["slots"][0]["certificate"]["sha256"] != first


def test_macos_enrolls_9a_and_9d(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "enroll", "--upn", "erin@contoso.com", "--ca", str(ca), "--macos", env=NEW)
    assert r.exit_code == 0, r.output
    slots = {s["slot"]: s for s in run_json(card, "info")["slots"]}
    assert set(slots) == {"9a", "9d"}
    assert all(s["certificate_matches_key"] for s in slots.values())


def test_non_ios_algorithm_refused_before_card(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "enroll", "--upn", "f@contoso.com", "--ca", str(ca), "-a", "ed25519",
            env=NEW)
    assert r.exit_code == 2 and "iOS" in r.stderr
    assert run_json(card, "info")["pin"]["is_default"] is True  # untouched


def test_rsa2048_on_older_firmware(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path, firmware=(5, 4, 3))
    r = run(card, "enroll", "--upn", "g@contoso.com", "--ca", str(ca), "-a", "rsa2048",
            env=NEW)
    assert r.exit_code == 0, r.output
    info = run_json(card, "info")
    assert info["management_key"]["algorithm"] == "aes192"
    assert info["slots"][0]["key"]["algorithm"] == "rsa2048"


def _openssl_ca(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "osslca"
    (d / "newcerts").mkdir(parents=True)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(d / "ca.key"),
                    "-out", str(d / "ca.pem"), "-subj", "/O=Fabrikam/CN=Fabrikam Issuing CA",
                    "-days", "30"], check=True, capture_output=True)
    conf = d / "ca.cnf"
    conf.write_text(f"""
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {d}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
default_md = sha256
default_days = 30
policy = policy_any
copy_extensions = copy
x509_extensions = usr_ext
unique_subject = no
[ policy_any ]
commonName = supplied
[ usr_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
crlDistributionPoints = URI:http://127.0.0.1/fabrikam.crl
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
""")
    return d, conf


def test_issuer_cmd_with_openssl_ca(tmp_path: Path) -> None:
    d, conf = _openssl_ca(tmp_path)
    card = make_card(tmp_path)
    cmd = f"openssl ca -batch -notext -config {conf} -in /dev/stdin -out /dev/stdout"
    data = run_json(card, "enroll", "--upn", "henry@fabrikam.com", "--issuer-cmd", cmd,
                    "--ca-bundle", str(d / "ca.pem"), env=NEW)
    assert data["status"] == "enrolled"
    check = next(s for s in data["steps"] if s["step"] == "check certificate")
    assert "chains to the CA" in check["detail"]
    assert data["certificate"]["issuer"] == "CN=Fabrikam Issuing CA,O=Fabrikam"


def test_issuer_cmd_failure_names_step(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "enroll", "--upn", "i@contoso.com", "--issuer-cmd",
            "sh -c 'echo denied by policy >&2; exit 3'", env=NEW)
    assert r.exit_code == 1
    assert "issue certificate" in r.stderr and "denied by policy" in r.stderr
    # The key and CSR are done; the PIN is the one the admin chose (known, not lost).
    assert run(card, "pin", "verify", env={"PIVTOOL_PIN": "24681357"}).exit_code == 0


def test_issuer_must_be_exactly_one(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "enroll", "--upn", "j@contoso.com", env=NEW)
    assert r.exit_code == 2 and "exactly one issuer" in r.stderr


def test_csr_out_two_step(tmp_path: Path, ca: Path) -> None:
    card = make_card(tmp_path)
    csr = tmp_path / "req.pem"
    data = run_json(card, "enroll", "--upn", "kim@contoso.com", "--csr-out", str(csr), env=NEW)
    assert data["status"] == "pending-certificate"
    req = x509.load_pem_x509_csr(csr.read_bytes())
    assert req.is_signature_valid
    san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert any(isinstance(n, x509.OtherName) and n.type_id == UPN_OID for n in san)
    cert = LabCA.open(ca).issue(req)
    from cryptography.hazmat.primitives.serialization import Encoding

    cert_path = tmp_path / "cert.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    r = run(card, "certs", "import", "9a", str(cert_path), env={"PIVTOOL_PIN": "24681357"})
    assert r.exit_code == 0, r.output
    slot = run_json(card, "info")["slots"][0]
    assert slot["certificate_matches_key"] is True


def test_policy_the_lab_ca_would_drop_refused_before_card(tmp_path: Path, ca: Path) -> None:
    """A --policy the CA's allow-list lacks would be dropped silently from the certificate:
    enroll refuses it in the pre-flight (exit 2) and the card is exactly as before."""
    card = make_card(tmp_path)
    before = card.read_bytes()
    r = run(card, "enroll", "--upn", "alice@contoso.com", "--policy", "1.3.6.1.4.1.99999.2",
            "--ca", str(ca), env=NEW)
    assert r.exit_code == 2, r.output
    assert "does not issue policy 1.3.6.1.4.1.99999.2" in r.stderr
    assert card.read_bytes() == before
