"""pivtool entra ids: certificateUserIds from a certificate file and from a card slot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pivtool.certs import CertRequest, LabCA, build_csr
from pivtool.piv.constants import DEFAULT_MGMT_KEY, KeyType, Slot
from tests.cli.clihelp import make_card, run, run_json, session

UPN = "alice@contoso.com"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA.init(tmp_path_factory.mktemp("ca") / "ca", "CN=Contoso Lab CA,O=Contoso",
                      crl_url="http://crl.contoso.test/lab.crl")


@pytest.fixture(scope="module")
def cert_file(lab: LabCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = lab.issue(build_csr(key, CertRequest.create(upns=[UPN])))
    path = tmp_path_factory.mktemp("certs") / "alice.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _hand_reversed_serial(cert: x509.Certificate) -> str:
    # The DER INTEGER content of the serial (sign byte included when the top bit is set),
    # bytes reversed — Microsoft's example stores 48efa06b...41b2 as b2413413...ef48.
    n = cert.serial_number
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return "".join(f"{b:02x}" for b in reversed(raw))


def test_ids_from_file(cert_file: Path) -> None:
    cert = _cert(cert_file)
    data = run_json(None, "entra", "ids", "--cert", str(cert_file))
    values = {i["kind"]: i for i in data["ids"]}
    assert values["PrincipalName"]["value"] == "X509:<PN>alice@contoso.com"
    assert values["PrincipalName"]["affinity"] == "low"
    isr = values["IssuerAndSerialNumber"]
    assert isr["value"] == ("X509:<I>O=Contoso,CN=Contoso Lab CA<SR>"
                            + _hand_reversed_serial(cert))
    assert isr["affinity"] == "high"
    assert values["SKI"]["affinity"] == "high"
    assert values["Subject"]["value"] == "X509:<S>CN=alice@contoso.com"
    assert data["serial_order"] == "reversed-bytes" and data["sha1_pukey"] == "public-key"
    assert data["source"] == {"file": str(cert_file)}
    assert "RFC822Name: no rfc822Name in the subject alternative name" in data["gaps"]


def test_text_states_serial_order_and_sha1_input(cert_file: Path) -> None:
    cert = _cert(cert_file)
    r = run(None, "entra", "ids", "--cert", str(cert_file))
    assert r.exit_code == 0, r.output
    assert "X509:<PN>alice@contoso.com" in r.stdout
    assert "Serial: bytes reversed, " + _hand_reversed_serial(cert) in r.stdout
    assert "SHA1-PUKEY: SHA-1 of the subjectPublicKey bits" in r.stdout
    r = run(None, "entra", "ids", "--cert", str(cert_file), "--sha1-pukey", "thumbprint")
    assert "SHA1-PUKEY: the certificate thumbprint" in r.stdout


def test_graph_body(cert_file: Path) -> None:
    r = run(None, "entra", "ids", "--cert", str(cert_file), "--graph", "--sha1-pukey", "both")
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    values = body["authorizationInfo"]["certificateUserIds"]
    assert set(body) == {"authorizationInfo"}
    assert 1 <= len(values) <= 10
    # High-affinity bindings first, then the UPN; name-only bindings left out.
    assert values[0].startswith("X509:<I>") and "<SR>" in values[0]
    assert values[-1] == "X509:<PN>alice@contoso.com"
    assert sum(v.startswith("X509:<SHA1-PUKEY>") for v in values) == 2
    assert not any(v.startswith("X509:<S>") for v in values)
    assert "Left out of the body" in r.stderr and "Subject" in r.stderr


def _enroll_9a(card: Path, lab: LabCA) -> x509.Certificate:
    s = session(card)
    try:
        s.authenticate(DEFAULT_MGMT_KEY)
        public = s.generate_key(Slot.AUTHENTICATION, KeyType.ECCP256)
        s.verify_pin(b"123456")
        csr = build_csr(s.private_key(Slot.AUTHENTICATION, public),  # type: ignore[arg-type]
                        CertRequest.create(upns=[UPN]))
        cert = lab.issue(csr)
        s.put_certificate(Slot.AUTHENTICATION, cert.public_bytes(serialization.Encoding.DER))
        return cert
    finally:
        s.connection.close()


def test_ids_from_slot_without_pin(tmp_path: Path, lab: LabCA) -> None:
    card = make_card(tmp_path)
    cert = _enroll_9a(card, lab)
    # No PIN in the environment: reading a certificate object is free.
    data = run_json(card, "entra", "ids", "--slot", "9a")
    assert data["source"] == {"slot": "9a"}
    values = [i["value"] for i in data["ids"]]
    assert "X509:<PN>alice@contoso.com" in values
    assert any(v.endswith("<SR>" + _hand_reversed_serial(cert)) for v in values)
    # The default slot is 9a, and the card's certificate equals the issued one.
    default = run_json(card, "entra", "ids")
    assert default["ids"] == data["ids"]
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert run_json(None, "entra", "ids", "--cert", str(pem))["ids"] == data["ids"]


def test_empty_slot_and_bad_input(tmp_path: Path, cert_file: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "entra", "ids", "--slot", "9c")
    assert r.exit_code == 1 and "holds no certificate" in r.stderr
    r = run(card, "entra", "ids", "--slot", "9z")
    assert r.exit_code == 2 and "unknown slot" in r.stderr
    r = run(card, "entra", "ids", "--slot", "9a", "--cert", str(cert_file))
    assert r.exit_code == 2
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    r = run(None, "entra", "ids", "--cert", str(junk))
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
