"""Entra readiness checks: for each finding, a certificate that fails it and one that passes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from certs_helpers import ISSUER, NOW, build_cert, name, openssl, requires_openssl, write
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pivtool.certs.check import Finding, check_entra_certificate
from pivtool.certs.inspect import load_certificate
from pivtool.certs.profile import upn_other_name

UPN = "alice@contoso.com"
SAN = (x509.SubjectAlternativeName([upn_other_name(UPN)]), False)
EKU = (
    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SMARTCARD_LOGON, ExtendedKeyUsageOID.CLIENT_AUTH]),
    False,
)
KU = (
    x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    ),
    True,
)
CDP_URL = "http://pki.contoso.test/issuing.crl"


def cdp(*urls: str) -> tuple[x509.CRLDistributionPoints, bool]:
    points = [
        x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, None, None) for u in urls
    ]
    return x509.CRLDistributionPoints(points), False


GOOD = {
    "san": SAN,
    "eku": EKU,
    "ku": KU,
    "cdp": cdp(CDP_URL),
    "bc": (x509.BasicConstraints(False, None), True),
}


def find(findings: list[Finding], id_: str) -> Finding:
    matches = [f for f in findings if f.id == id_]
    assert len(matches) == 1, f"{id_}: {findings}"
    return matches[0]


def make(signer: Any, key: Any, **overrides: Any) -> x509.Certificate:
    parts = {**GOOD, **{k: v for k, v in overrides.items() if k in GOOD}}
    extensions = [v for v in parts.values() if v is not None]
    rest = {k: v for k, v in overrides.items() if k not in GOOD}
    return build_cert(signer, key.public_key(), extensions=extensions, **rest)


@pytest.fixture
def good(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return make(issuer_key, p256)


def status(cert: x509.Certificate, id_: str, **kwargs: Any) -> str:
    return find(check_entra_certificate(cert, now=NOW, **kwargs), id_).status


def test_good_certificate_passes_everything(good: x509.Certificate) -> None:
    findings = check_entra_certificate(good, expected_upn=UPN, now=NOW)
    # What needs an input not given is a SKIP, never a silent pass.
    assert {f.id for f in findings if f.status == "skip"} == {"chain", "revocation"}
    assert {f.status for f in findings if f.id not in ("chain", "revocation")} == {"pass"}
    skipped = check_entra_certificate(good, now=NOW)
    assert {f.id for f in skipped if f.status == "skip"} == {"chain", "revocation",
                                                               "upn.match"}
    assert {f.id for f in findings} == {
        "eku.present",
        "eku.client-auth",
        "eku.smartcard-logon",
        "upn.present",
        "upn.match",
        "key-usage",
        "validity",
        "crl.distribution-point",
        "key-algorithm.ios",
        "key-strength",
        "basic-constraints",
        "signature-algorithm",
        "chain",
        "revocation",
    }
    assert all(f.fix == "" for f in findings if f.status == "pass")
    assert findings[0].to_json() == {
        "id": "eku.present",
        "status": "pass",
        "message": findings[0].message,
        "fix": "",
    }


def test_eku_findings(issuer_key: Any, p256: Any, good: x509.Certificate) -> None:
    no_eku = make(issuer_key, p256, eku=None)
    bad = find(check_entra_certificate(no_eku, now=NOW), "eku.present")
    assert bad.status == "fail" and bad.fix
    assert status(good, "eku.present") == "pass"

    server_only = make(
        issuer_key, p256, eku=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    )
    assert status(server_only, "eku.client-auth") == "fail"
    assert status(server_only, "eku.smartcard-logon") == "warn"
    client_only = make(
        issuer_key, p256, eku=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    )
    assert status(client_only, "eku.client-auth") == "pass"
    assert status(client_only, "eku.smartcard-logon") == "warn"
    assert status(good, "eku.smartcard-logon") == "pass"


def test_upn_present(issuer_key: Any, p256: Any, good: x509.Certificate) -> None:
    email_only = make(
        issuer_key, p256, san=(x509.SubjectAlternativeName([x509.RFC822Name(UPN)]), False)
    )
    assert status(email_only, "upn.present") == "fail"
    malformed = make(
        issuer_key,
        p256,
        san=(
            x509.SubjectAlternativeName(
                [x509.OtherName(upn_other_name(UPN).type_id, b"\x04\x03a@b")]
            ),
            False,
        ),
    )
    assert status(malformed, "upn.present") == "fail"
    assert status(good, "upn.present") == "pass"


def test_upn_match_is_case_insensitive(good: x509.Certificate) -> None:
    assert status(good, "upn.match", expected_upn="bob@contoso.com") == "fail"
    assert status(good, "upn.match", expected_upn="Alice@CONTOSO.com") == "pass"
    assert status(good, "upn.match") == "skip"


def test_key_usage(issuer_key: Any, p256: Any, good: x509.Certificate) -> None:
    no_sign = x509.KeyUsage(False, False, False, False, True, False, False, False, False)
    assert status(make(issuer_key, p256, ku=(no_sign, True)), "key-usage") == "fail"
    assert status(make(issuer_key, p256, ku=None), "key-usage") == "warn"
    assert status(good, "key-usage") == "pass"


def test_validity(issuer_key: Any, p256: Any, good: x509.Certificate) -> None:
    expired = make(
        issuer_key,
        p256,
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=1),
    )
    assert status(expired, "validity") == "fail"
    future = make(issuer_key, p256, not_before=NOW + dt.timedelta(hours=2))
    assert status(future, "validity") == "fail"
    soon = make(issuer_key, p256, not_after=NOW + dt.timedelta(days=10))
    assert status(soon, "validity") == "warn"
    assert status(good, "validity") == "pass"


def test_crl_distribution_point(issuer_key: Any, p256: Any, good: x509.Certificate) -> None:
    assert status(make(issuer_key, p256, cdp=None), "crl.distribution-point") == "warn"
    ldap = make(
        issuer_key,
        p256,
        cdp=cdp("ldap:///CN=Issuing,CN=CDP,DC=contoso,DC=com?certificateRevocationList"),
    )
    assert status(ldap, "crl.distribution-point") == "fail"
    several = make(issuer_key, p256, cdp=cdp(CDP_URL, "ldap:///CN=x"))
    assert status(several, "crl.distribution-point") == "warn"
    assert status(good, "crl.distribution-point") == "pass"


def test_chain(issuer_key: ec.EllipticCurvePrivateKey, p256: Any, good: x509.Certificate) -> None:
    ca_ext = [
        (x509.BasicConstraints(True, 0), True),
    ]
    root = build_cert(
        issuer_key, issuer_key.public_key(), subject=ISSUER, issuer=ISSUER, extensions=ca_ext
    )
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    impostor = build_cert(
        impostor_key, impostor_key.public_key(), subject=ISSUER, issuer=ISSUER, extensions=ca_ext
    )
    not_a_ca = build_cert(issuer_key, issuer_key.public_key(), subject=ISSUER, issuer=ISSUER)
    other = name((NameOID.COMMON_NAME, "Somebody Else"))
    unrelated = build_cert(
        issuer_key, issuer_key.public_key(), subject=other, issuer=other, extensions=ca_ext
    )

    assert status(good, "chain", ca_bundle=[unrelated]) == "fail"
    assert status(good, "chain", ca_bundle=[impostor]) == "fail"
    assert status(good, "chain", ca_bundle=[not_a_ca]) == "fail"
    assert status(good, "chain", ca_bundle=[unrelated, root]) == "pass"
    pem_bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (unrelated, root))
    assert status(good, "chain", ca_bundle=pem_bundle) == "pass"


def test_chain_through_an_intermediate(issuer_key: ec.EllipticCurvePrivateKey, p256: Any) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = name((NameOID.COMMON_NAME, "Contoso Root"))
    ca_ext = [(x509.BasicConstraints(True, None), True)]
    root = build_cert(
        root_key, root_key.public_key(), subject=root_name, issuer=root_name, extensions=ca_ext
    )
    intermediate = build_cert(
        root_key, issuer_key.public_key(), subject=ISSUER, issuer=root_name, extensions=ca_ext
    )
    leaf = make(issuer_key, p256)
    assert status(leaf, "chain", ca_bundle=[intermediate]) == "fail"  # root missing
    chain = find(check_entra_certificate(leaf, ca_bundle=[root, intermediate], now=NOW), "chain")
    assert chain.status == "pass" and "Contoso Root" in chain.message


def test_key_algorithm_ios(
    issuer_key: Any, ed_key: ed25519.Ed25519PrivateKey, p384: Any, rsa2048: Any
) -> None:
    assert status(make(issuer_key, ed_key), "key-algorithm.ios") == "warn"
    p521 = ec.generate_private_key(ec.SECP521R1())
    assert status(make(issuer_key, p521), "key-algorithm.ios") == "warn"
    for key in (p384, rsa2048):
        assert status(make(issuer_key, key), "key-algorithm.ios") == "pass"


def test_key_strength(issuer_key: Any, rsa1024: rsa.RSAPrivateKey, rsa2048: Any) -> None:
    weak = make(issuer_key, rsa1024)
    assert status(weak, "key-strength") == "warn"
    assert status(weak, "key-algorithm.ios") == "pass"  # iOS does take RSA 1024
    assert status(make(issuer_key, rsa2048), "key-strength") == "pass"


def test_basic_constraints(issuer_key: Any, p256: Any, good: x509.Certificate) -> None:
    ca_cert = make(issuer_key, p256, bc=(x509.BasicConstraints(True, None), True))
    assert status(ca_cert, "basic-constraints") == "fail"
    assert status(good, "basic-constraints") == "pass"


@requires_openssl
def test_signature_algorithm(tmp_path: Path, good: x509.Certificate) -> None:
    # cryptography refuses to sign with SHA-1, so let openssl make the legacy certificate.
    key = write(
        tmp_path / "k.pem",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    out = tmp_path / "sha1.pem"
    made = openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-sha1",
        "-subj",
        "/CN=legacy",
        "-days",
        "2",
        "-out",
        str(out),
    )
    assert made.returncode == 0, made.stderr
    legacy = load_certificate(out.read_bytes())
    assert find(check_entra_certificate(legacy), "signature-algorithm").status == "warn"
    assert status(good, "signature-algorithm") == "pass"


def _ca(key: Any, subject: x509.Name, signer: Any, issuer: x509.Name, *,
        path_len: int | None = None, key_usage: bool | None = True,
        not_after: dt.datetime | None = None) -> x509.Certificate:
    ext: list[tuple[x509.ExtensionType, bool]] = [(x509.BasicConstraints(True, path_len), True)]
    if key_usage is not None:
        ext.append((x509.KeyUsage(digital_signature=False, content_commitment=False,
                                  key_encipherment=False, data_encipherment=False,
                                  key_agreement=False, key_cert_sign=key_usage, crl_sign=True,
                                  encipher_only=False, decipher_only=False), True))
    kw = {"not_after": not_after, "not_before": not_after - dt.timedelta(days=30)} \
        if not_after else {}
    return build_cert(signer, key.public_key(), subject=subject, issuer=issuer, extensions=ext,
                      **kw)


def test_chain_checks_every_ca(issuer_key: ec.EllipticCurvePrivateKey, p256: Any) -> None:
    """Validity, keyCertSign and pathLen of each CA on the path (cryptography's verifier)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = name((NameOID.COMMON_NAME, "Contoso Root"))
    leaf = make(issuer_key, p256)

    def chain(root: x509.Certificate, inter: x509.Certificate) -> Finding:
        return find(check_entra_certificate(leaf, ca_bundle=[root, inter], now=NOW), "chain")

    good_root = _ca(root_key, root_name, root_key, root_name)
    good_inter = _ca(issuer_key, ISSUER, root_key, root_name)
    ok = chain(good_root, good_inter)
    assert ok.status == "pass" and "pathLen" in ok.message
    # The root allows no CA below it.
    assert chain(_ca(root_key, root_name, root_key, root_name, path_len=0),
                 good_inter).status == "fail"
    # The intermediate may not sign certificates.
    assert chain(good_root, _ca(issuer_key, ISSUER, root_key, root_name,
                                key_usage=False)).status == "fail"
    # The intermediate expired before NOW.
    expired = _ca(issuer_key, ISSUER, root_key, root_name,
                  not_after=NOW - dt.timedelta(days=2))
    assert chain(good_root, expired).status == "fail"


def test_revocation_from_a_crl(tmp_path: Path) -> None:
    from pivtool.certs.ca import LabCA

    ca = LabCA.init(tmp_path / "ca", "CN=CRL CA")
    key = ec.generate_private_key(ec.SECP256R1())
    from pivtool.certs.csr import build_csr
    from pivtool.certs.profile import CertRequest

    csr = build_csr(key, CertRequest.create(upns=[UPN]))  # type: ignore[arg-type]
    cert = ca.issue(csr.public_bytes(serialization.Encoding.PEM))
    other = LabCA.init(tmp_path / "other", "CN=Other CA")

    def revocation(crl: Any, bundle: Any = None) -> Finding:
        return find(check_entra_certificate(cert, ca_bundle=bundle, crl=crl), "revocation")

    clean = ca.crl()
    assert revocation(clean).status == "pass"
    assert "signature checked" in revocation(clean, [ca.certificate]).message
    assert revocation(other.crl()).status == "fail"  # another CA's CRL proves nothing
    ca.revoke(cert.serial_number)
    revoked = revocation(ca.crl())
    assert revoked.status == "fail" and "revoked" in revoked.message
