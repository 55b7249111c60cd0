"""pivtool entra policy and check --tenant against the local Graph stand-in."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from pivtool.certs import LabCA
from tests.cli.clihelp import run
from tests.entra.conftest import NEW_PIN, UPN, app_env
from tests.entra.graph_standin import GraphStandIn


def _configure(standin: GraphStandIn, lab: LabCA, *, crl: bool = True) -> None:
    standin.x509_policy.update({
        "state": "enabled",
        "certificateUserBindings": [
            {"x509CertificateField": "PrincipalName", "userProperty": "userPrincipalName",
             "priority": 1, "trustAffinityLevel": "low"},
            {"x509CertificateField": "IssuerAndSerialNumber",
             "userProperty": "certificateUserIds", "priority": 2, "trustAffinityLevel": "high"},
            {"x509CertificateField": "SubjectKeyIdentifier",
             "userProperty": "certificateUserIds", "priority": 3, "trustAffinityLevel": "high"},
            {"x509CertificateField": "SHA1PublicKey", "userProperty": "certificateUserIds",
             "priority": 4, "trustAffinityLevel": "high"},
        ],
        "authenticationModeConfiguration": {
            "x509CertificateAuthenticationDefaultMode": "x509CertificateSingleFactor",
            "rules": [{"x509CertificateRuleType": "issuerSubject",
                       "identifier": "CN=Contoso Lab CA,O=Contoso",
                       "x509CertificateAuthenticationMode": "x509CertificateMultiFactor"}],
        },
    })
    other_dir = lab.directory.parent / "other"
    other = LabCA.open(other_dir) if other_dir.exists() else LabCA.init(other_dir,
                                                                        "CN=Other CA")
    for ca in (other, lab):  # two CAs: two pages of certificateBasedAuthConfiguration
        der = ca.certificate.public_bytes(serialization.Encoding.DER)
        standin.certificate_authorities.append({
            "isRootAuthority": True,
            "certificateRevocationListUrl": "http://crl.contoso.test/lab.crl" if crl else None,
            "deltaCertificateRevocationListUrl": None,
            "certificate": base64.b64encode(der).decode(),
            "issuer": ca.certificate.subject.rfc4514_string(), "issuerSki": ""})


def test_default_tenant_is_flagged(standin: GraphStandIn) -> None:
    # Microsoft's default configuration: CBA disabled, no certificateUserIds rule.
    r = run(None, "--json", "entra", "policy", env=app_env(standin))
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    assert data["schema"] == "pivtool.entra-policy/1" and not data["ok"]
    items = {f["id"]: f for f in data["findings"]}
    assert items["tenant.cba-enabled"]["status"] == "fail"
    assert items["tenant.binding"]["status"] == "fail"
    assert "never used" in items["tenant.binding"]["message"]
    assert "certificateUserIds" in items["tenant.binding"]["fix"]
    for field in ("IssuerAndSerialNumber", "SubjectKeyIdentifier", "SHA1PublicKey"):
        assert items[f"tenant.binding.{field}"]["status"] == "warn"
    assert items["tenant.auth-binding"]["status"] == "warn"
    # No certificate and no bundle: the trusted CAs are not read.
    assert data["trusted_cas"] is None
    assert not standin.requests("GET", "/v1.0/organization")


def test_configured_tenant_passes_for_the_card(standin: GraphStandIn, lab: LabCA,
                                               enrolled: Path) -> None:
    _configure(standin, lab)
    r = run(enrolled, "entra", "policy", "--slot", "9a", "--ca-bundle",
            str(lab.directory / "ca.pem"), env=app_env(standin))
    assert r.exit_code == 0, r.output
    assert "FAIL" not in r.stdout and "WARN" not in r.stdout
    assert "counts as multi-factor (rule issuerSubject CN=Contoso Lab CA,O=Contoso" in r.stdout
    assert "CN=Contoso Lab CA,O=Contoso is trusted (root, certificate authorities), CRL " \
        "http://crl.contoso.test" in r.stdout
    pages = standin.requests("GET", f"/v1.0/organization/{standin.org_id}/")
    assert len(pages) == 2  # followed @odata.nextLink


def test_missing_crl_and_low_affinity_warn(standin: GraphStandIn, lab: LabCA,
                                           enrolled: Path) -> None:
    _configure(standin, lab, crl=False)
    standin.x509_policy["certificateUserBindings"][2]["trustAffinityLevel"] = "low"
    standin.x509_policy["authenticationModeConfiguration"]["rules"] = []
    r = run(enrolled, "--json", "entra", "policy", "--slot", "9a", env=app_env(standin))
    assert r.exit_code == 0, r.output  # warnings only
    items = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
    assert items["tenant.binding.SubjectKeyIdentifier"]["status"] == "warn"
    assert items["tenant.auth-binding"]["status"] == "warn"
    assert "single-factor" in items["tenant.auth-binding"]["message"]
    assert items["tenant.trusted-ca.CN=Contoso Lab CA,O=Contoso"]["status"] == "warn"


def test_untrusted_ca_fails(standin: GraphStandIn, lab: LabCA, enrolled: Path) -> None:
    _configure(standin, lab)
    standin.certificate_authorities.pop()  # the lab CA
    r = run(enrolled, "entra", "policy", "--slot", "9a", env=app_env(standin))
    assert r.exit_code == 1
    assert "CN=Contoso Lab CA,O=Contoso is not among the tenant's trusted certificate " \
           "authorities" in r.stdout


def test_check_tenant_adds_the_policy_items(standin: GraphStandIn, lab: LabCA,
                                            enrolled: Path) -> None:
    env = {**app_env(standin), "PIVTOOL_PIN": NEW_PIN}
    r = run(enrolled, "--json", "check", "--upn", UPN, "--tenant", env=env)
    assert r.exit_code == 1, r.output  # the default tenant policy fails
    items = {i["id"]: i for i in json.loads(r.stdout)["items"]}
    assert items["tenant.cba-enabled"]["status"] == "fail"
    assert items["tenant.binding"]["status"] == "fail"
    assert items["piv.usb"]["status"] == "pass"  # the card's own items are still there
    _configure(standin, lab)
    r = run(enrolled, "check", "--upn", UPN, "--ca-bundle", str(lab.directory / "ca.pem"),
            "--tenant", env=env)
    assert r.exit_code == 0, r.output
    assert "tenant.trusted-ca" in r.stdout and r.stdout.splitlines()[-1].startswith("READY")


def test_ca_in_the_pki_trust_store(standin: GraphStandIn, lab: LabCA, enrolled: Path) -> None:
    _configure(standin, lab)
    lab_entry = standin.certificate_authorities.pop()
    standin.pki_stores["6d1c6f07-0000-4000-8000-000000000001"] = ("Contoso PKI", [{
        "id": "ca1", "certificateAuthorityType": "root", "certificate": lab_entry["certificate"],
        "displayName": "Contoso Lab CA", "issuer": lab_entry["issuer"],
        "issuerSubjectKeyIdentifier": "", "thumbprint": "", "isIssuerHintEnabled": False,
        "certificateRevocationListUrl": "http://crl.contoso.test/lab.crl",
        "deltacertificateRevocationListUrl": None}])
    r = run(enrolled, "entra", "policy", "--slot", "9a", env=app_env(standin))
    assert r.exit_code == 0, r.output
    assert "is trusted (root, PKI Contoso PKI), CRL http://crl.contoso.test/lab.crl" in r.stdout
    # Without PublicKeyInfrastructure.Read.All the store is unreadable: a warning, not a FAIL.
    reader = standin.add_app(secret="s", roles=("Policy.Read.All", "Organization.Read.All"))
    r = run(enrolled, "entra", "policy", "--slot", "9a", env=standin.env(reader.client_id, "s"))
    assert r.exit_code == 0, r.output
    assert "not read: PKI-based trust store (needs PublicKeyInfrastructure.Read.All)" \
        in r.stdout
