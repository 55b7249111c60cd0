"""The lab CA: init, issue, revoke, CRL — checked with the openssl CLI too."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from certs_helpers import openssl, pem, requires_openssl, write
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pivtool.certs.ca import LabCA
from pivtool.certs.csr import build_csr
from pivtool.certs.errors import CertInputError, CertRequestRefusedError, LabCAError
from pivtool.certs.profile import CertRequest, upn_other_name

CRL_URL = "http://pki.contoso.test/lab.crl"
AIA_URL = "http://pki.contoso.test/lab.crt"
PASSPHRASE = "correct horse battery staple"
POLICY = "1.3.6.1.4.1.99999.7"


@pytest.fixture
def ca(tmp_path: Path) -> LabCA:
    return LabCA.init(
        tmp_path / "ca",
        "CN=Contoso Lab Root,O=Contoso,C=US",
        crl_url=CRL_URL,
        passphrase=PASSPHRASE,
        aia_url=AIA_URL,
        allowed_policies=[POLICY],
    )


def alice_csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> x509.CertificateSigningRequest:
    return build_csr(
        key,
        CertRequest.create(
            upns=["alice@contoso.com"], emails=["alice@contoso.com"], policies=[POLICY]
        ),
    )


def test_init_writes_a_private_encrypted_key(ca: LabCA) -> None:
    key_file = ca.directory / "ca.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    root = ca.certificate
    basic = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.issued() == []
    with pytest.raises(LabCAError, match="already contains a CA"):
        LabCA.init(ca.directory, "CN=Again")


def test_unencrypted_rsa_ca(tmp_path: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    lab = LabCA.init(tmp_path / "rsa", "CN=RSA Lab", key_type="rsa2048")
    assert b"BEGIN PRIVATE KEY" in (lab.directory / "ca.key").read_bytes()
    assert isinstance(lab.certificate.public_key(), rsa.RSAPublicKey)
    cert = lab.issue(alice_csr(p256))
    cert.verify_directly_issued_by(lab.certificate)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)


@pytest.mark.parametrize(
    "url", ["ldap:///CN=crl", "https://pki.contoso.test/x.crl", "ftp://x", "http://"]
)
def test_init_requires_http_crl_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(CertInputError, match="http://"):
        LabCA.init(tmp_path / "ca", "CN=x", crl_url=url)


def test_init_rejects_unknown_key_type(tmp_path: Path) -> None:
    with pytest.raises(CertInputError, match="key type"):
        LabCA.init(tmp_path / "ca", "CN=x", key_type="rsa512")


def test_open_with_wrong_or_missing_passphrase(ca: LabCA, tmp_path: Path) -> None:
    assert LabCA.open(ca.directory, PASSPHRASE).certificate == ca.certificate
    with pytest.raises(CertInputError) as info:
        LabCA.open(ca.directory, "wrong passphrase 123")
    assert "wrong passphrase 123" not in str(info.value) and PASSPHRASE not in str(info.value)
    with pytest.raises(CertInputError, match="password is required"):
        LabCA.open(ca.directory)
    with pytest.raises(LabCAError):
        LabCA.open(tmp_path / "nowhere")


def test_issue_smartcard_logon_profile(ca: LabCA, p256: ec.EllipticCurvePrivateKey) -> None:
    cert = ca.issue(alice_csr(p256), days=90)
    cert.verify_directly_issued_by(ca.certificate)
    ext = cert.extensions
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SMARTCARD_LOGON,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [upn_other_name("alice@contoso.com"), x509.RFC822Name("alice@contoso.com")]
    (point,) = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(CRL_URL)]
    (access,) = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert access.access_location == x509.UniformResourceIdentifier(AIA_URL)
    policies = ext.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [ObjectIdentifier(POLICY)]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(p256.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    # 16-byte positive serial without a sign byte.
    assert cert.serial_number.bit_length() == 127

    (record,) = ca.issued()
    assert record.serial_number == cert.serial_number
    assert record.upns == ["alice@contoso.com"] and record.status == "valid"
    assert ca.load_issued(record.serial) == cert
    assert not list(ca.directory.glob(".*.tmp"))
    index = json.loads((ca.directory / "index.json").read_text())
    assert index["issued"][0]["serial"] == record.serial


def test_rsa_keys_get_key_encipherment(ca: LabCA, rsa2048: rsa.RSAPrivateKey) -> None:
    cert = ca.issue(alice_csr(rsa2048))
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


def test_issue_accepts_pem_and_der(ca: LabCA, p256: ec.EllipticCurvePrivateKey) -> None:
    csr = alice_csr(p256)
    ca.issue(pem(csr))
    ca.issue(csr.public_bytes(serialization.Encoding.DER))
    assert len(ca.issued()) == 2
    with pytest.raises(CertInputError, match="signing request"):
        ca.issue(b"not a csr")


def test_bad_signature_refused(ca: LabCA, p256: ec.EllipticCurvePrivateKey) -> None:
    der = bytearray(alice_csr(p256).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # corrupt the last byte of the signature value
    tampered = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(CertRequestRefusedError, match="signature"):
        ca.issue(tampered)
    assert ca.issued() == []


def test_missing_or_bad_identity_refused(ca: LabCA, p256: ec.EllipticCurvePrivateKey) -> None:
    # A request without UPN or e-mail produces a CSR without any SAN.
    no_san = build_csr(p256, CertRequest(subject=x509.Name.from_rfc4514_string("CN=alice")))
    with pytest.raises(CertRequestRefusedError, match="subject alternative name"):
        ca.issue(no_san)

    def csr_with_san(*names: x509.GeneralName) -> x509.CertificateSigningRequest:
        return (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name.from_rfc4514_string("CN=alice"))
            .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
            .sign(p256, hashes.SHA256())
        )

    with pytest.raises(CertRequestRefusedError, match="neither a UPN"):
        ca.issue(csr_with_san(x509.DNSName("host.contoso.com")))
    upn_oid = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
    with pytest.raises(CertRequestRefusedError, match="UPN"):
        ca.issue(csr_with_san(x509.OtherName(upn_oid, b"\x0c\x05alice")))  # no @domain
    with pytest.raises(CertRequestRefusedError, match="UPN"):
        ca.issue(csr_with_san(x509.OtherName(upn_oid, b"\x13\x03a@b")))  # PrintableString
    # Other SAN types are dropped, the UPN kept.
    cert = ca.issue(
        csr_with_san(x509.DNSName("host.contoso.com"), upn_other_name("bob@contoso.com"))
    )
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        upn_other_name("bob@contoso.com")
    ]


def test_revoke_and_crl(ca: LabCA, p256: ec.EllipticCurvePrivateKey) -> None:
    keep = ca.issue(alice_csr(p256))
    gone = ca.issue(alice_csr(p256))
    record = ca.revoke(format(gone.serial_number, "x"), "keyCompromise")
    assert record.status == "revoked" and record.reason == "keyCompromise"
    with pytest.raises(LabCAError, match="already revoked"):
        ca.revoke(gone.serial_number)
    with pytest.raises(LabCAError, match="no certificate"):
        ca.revoke(0x1234)
    with pytest.raises(CertInputError, match="reason"):
        ca.revoke(keep.serial_number, "because")

    first = ca.crl(days=3)
    assert first.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert first.get_revoked_certificate_by_serial_number(keep.serial_number) is None
    entry = first.get_revoked_certificate_by_serial_number(gone.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert first.next_update_utc is not None and first.last_update_utc is not None
    assert (first.next_update_utc - first.last_update_utc).days == 3
    second = ca.crl()
    number = x509.CRLNumber
    assert first.extensions.get_extension_for_class(number).value.crl_number == 1
    assert second.extensions.get_extension_for_class(number).value.crl_number == 2
    assert (
        LabCA.open(ca.directory, PASSPHRASE)
        .crl()
        .extensions.get_extension_for_class(number)
        .value.crl_number
        == 3
    )
    assert (ca.directory / "crl.der").read_bytes()[:1] == b"\x30"


@requires_openssl
def test_openssl_accepts_ca_output(
    ca: LabCA, p256: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    cert = ca.issue(alice_csr(p256))
    ca_pem = str(ca.directory / "ca.pem")
    cert_pem = write(tmp_path / "alice.pem", pem(cert))

    verify = openssl("verify", "-CAfile", ca_pem, cert_pem)
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr

    text = openssl("x509", "-in", cert_pem, "-noout", "-text")
    assert text.returncode == 0
    assert "Microsoft Smartcard Login" in text.stdout or "1.3.6.1.4.1.311.20.2.2" in text.stdout
    assert "TLS Web Client Authentication" in text.stdout
    assert "UPN::alice@contoso.com" in text.stdout or "1.3.6.1.4.1.311.20.2.3" in text.stdout
    assert f"URI:{CRL_URL}" in text.stdout
    assert "CA:FALSE" in text.stdout

    ca.revoke(cert.serial_number, "superseded")
    ca.crl()
    crl_text = openssl("crl", "-in", str(ca.directory / "crl.pem"), "-noout", "-text")
    assert crl_text.returncode == 0, crl_text.stderr
    assert format(cert.serial_number, "X") in crl_text.stdout.replace(":", "").upper()
    revoked = openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        ca_pem,
        "-CRLfile",
        str(ca.directory / "crl.pem"),
        cert_pem,
    )
    assert revoked.returncode != 0
    assert "revoked" in (revoked.stdout + revoked.stderr)


def test_only_allow_listed_policies_are_issued(tmp_path: Path,
                                               p256: ec.EllipticCurvePrivateKey) -> None:
    """Issue 16: the CA copied any policy OID from the CSR, and Entra's authentication
    binding may rate a policy OID as MFA. Default: none; the allow-list decides."""
    mfa = "1.3.6.1.4.1.311.21.8.1.2.3"
    request = build_csr(p256, CertRequest.create(upns=["alice@contoso.com"],
                                                 policies=[POLICY, mfa]))
    plain = LabCA.init(tmp_path / "plain", "CN=Plain")
    cert = plain.issue(request)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert plain.dropped_policies(request) == [POLICY, mfa]
    listed = LabCA.init(tmp_path / "listed", "CN=Listed", allowed_policies=[POLICY])
    issued = listed.issue(request).extensions.get_extension_for_class(
        x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in issued] == [POLICY]
    assert listed.dropped_policies(request) == [mfa]
    with pytest.raises(CertInputError, match="object identifier"):
        LabCA.init(tmp_path / "bad", "CN=Bad", allowed_policies=["x.y"])


def test_ca_key_protection(tmp_path: Path, rsa1024: rsa.RSAPrivateKey,
                           p256: ec.EllipticCurvePrivateKey) -> None:
    """Issue 16: a one-character passphrase was accepted, the key used PBKDF2 with 2,048
    rounds, and 1024-bit RSA CSRs were issued."""
    with pytest.raises(CertInputError, match="at least 12 characters"):
        LabCA.init(tmp_path / "short", "CN=Short", passphrase="x")
    ca = LabCA.init(tmp_path / "ca", "CN=Strong", passphrase=PASSPHRASE)
    parsed = openssl("asn1parse", "-in", str(tmp_path / "ca" / "ca.key")).stdout
    assert "PBKDF2" in parsed and "hmacWithSHA256" in parsed and "aes-256-cbc" in parsed
    assert ":0927C0" in parsed  # 600,000 rounds
    assert openssl("pkey", "-in", str(tmp_path / "ca" / "ca.key"), "-passin",
                   f"pass:{PASSPHRASE}", "-noout").returncode == 0
    weak = build_csr(rsa1024, CertRequest.create(upns=["alice@contoso.com"]))
    with pytest.raises(CertRequestRefusedError, match="1024 bits is too small"):
        ca.issue(weak)
    old = LabCA.init(tmp_path / "old", "CN=Old cards", min_rsa_bits=1024)
    assert old.issue(weak).public_key().key_size == 1024  # type: ignore[union-attr]
    assert ca.issue(alice_csr(p256))


def test_tampered_index_record_blocks_nothing(ca: LabCA,
                                              p256: ec.EllipticCurvePrivateKey) -> None:
    a, b = ca.issue(alice_csr(p256)), ca.issue(alice_csr(p256))
    ca.revoke(a.serial_number, "keyCompromise")
    path = ca.directory / "index.json"
    doc = json.loads(path.read_text())
    doc["issued"][0]["revoked_at"] = "yesterday"  # damaged, but still revoked
    doc["issued"].append({"serial": "not hex", "subject": "x"})  # unusable
    path.write_text(json.dumps(doc))
    ca.revoke(b.serial_number)
    crl = ca.crl()
    assert crl.get_revoked_certificate_by_serial_number(a.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(b.serial_number) is not None
    assert ca.index_problems == ["index.json record 3 is malformed (kept in the file, "
                                 "ignored)"]
    assert {"serial": "not hex", "subject": "x"} in json.loads(path.read_text())["issued"]
