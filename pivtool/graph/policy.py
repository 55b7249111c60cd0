"""Read the tenant's certificate-based authentication policy and judge it for the
certificates pivtool binds.

Sources (Microsoft Graph v1.0): the X.509 certificate authentication method configuration
(``GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/
x509Certificate``: ``state``, ``includeTargets``/``excludeTargets``,
``certificateUserBindings`` — ``x509CertificateField``, ``userProperty``, ``priority``,
``trustAffinityLevel`` — and ``authenticationModeConfiguration`` — the default mode and
``rules`` of type ``issuerSubject``/``policyOID``); the tenant's trusted certificate
authorities (``GET /organization/{id}/certificateBasedAuthConfiguration``:
``certificateAuthorities`` with ``certificate``, ``isRootAuthority``,
``certificateRevocationListUrl``).

Each finding is pass/warn/fail with a one-line fix, like ``pivtool check``'s items.
:func:`evaluate` is pure (documents in, findings out); :func:`read_policy` does the GETs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..certs.entra import format_dn
from .errors import GraphError

if TYPE_CHECKING:
    from cryptography import x509

    from .client import GraphClient

#: JSON schema identifier of :meth:`PolicyReport.to_json`.
POLICY_SCHEMA = "pivtool.entra-policy/1"
#: Delegated permissions ``entra policy`` asks for (the admin needs Global Reader or
#: Authentication Policy Administrator for the policy).
POLICY_PERMISSIONS = ("Policy.Read.All", "Organization.Read.All",
                      "PublicKeyInfrastructure.Read.All")

X509_CONFIG = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/" \
              "x509Certificate"
PKI_CONFIGS = "/directory/publicKeyInfrastructure/certificateBasedAuthConfigurations"

#: pivtool's certificateUserIds kinds -> the policy's x509CertificateField names.
FIELD_OF_KIND = {
    "PrincipalName": "PrincipalName",
    "RFC822Name": "RFC822Name",
    "IssuerAndSubject": "IssuerAndSubject",
    "Subject": "Subject",
    "SKI": "SubjectKeyIdentifier",
    "SHA1PublicKey": "SHA1PublicKey",
    "IssuerAndSerialNumber": "IssuerAndSerialNumber",
}
#: The fields pivtool binds by default (``--values high``).
HIGH_FIELDS = ("IssuerAndSerialNumber", "SubjectKeyIdentifier", "SHA1PublicKey")

FIX_ENABLE = ("Entra admin center > Protection > Authentication methods > Policies > "
              "Certificate-based authentication: Enable, and target the users' group")
FIX_RULE = ("add a username binding rule: Certificate-based authentication > Configure > "
            "Username binding > Add rule: certificate field {field} -> user attribute "
            "certificateUserIds, affinity High")
FIX_MFA = ("add an authentication binding rule: Certificate-based authentication > "
           "Configure > Authentication binding > Add rule: Policy OID {oid} (or the "
           "issuer) -> Multi-factor authentication, affinity High")
FIX_CA = ("upload the CA certificate: Entra admin center > Protection > Security Center > "
          "Certificate authorities (or the PKI-based trust store) > Upload, with its CRL URL")

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One judged item of the tenant's policy."""

    id: str
    status: Status
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        """``id``, ``status``, ``message``, ``fix`` (empty on a pass)."""
        return {"id": self.id, "status": self.status, "message": self.message,
                "fix": self.fix if self.status != "pass" else ""}


@dataclass
class TenantPolicy:
    """The documents read from Graph (as Graph returned them)."""

    x509: dict[str, Any]
    #: Both trust stores' CAs (classic shape, plus ``store``); None when not read.
    certificate_authorities: list[dict[str, Any]] | None = None
    #: Trust stores the caller was not allowed to read.
    unread: list[str] = field(default_factory=list)


@dataclass
class PolicyReport:
    """The tenant's CBA policy and the findings."""

    tenant: str
    policy: TenantPolicy
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not any(f.status == "fail" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (schema ``pivtool.entra-policy/1``)."""
        x = self.policy.x509
        mode = x.get("authenticationModeConfiguration") or {}
        cas = self.policy.certificate_authorities
        return {
            "schema": POLICY_SCHEMA,
            "tenant": self.tenant,
            "ok": self.ok,
            "state": x.get("state"),
            "include_targets": x.get("includeTargets") or [],
            "exclude_targets": x.get("excludeTargets") or [],
            "user_bindings": sorted(x.get("certificateUserBindings") or [],
                                    key=lambda b: b.get("priority", 0)),
            "authentication_mode": {
                "default": mode.get("x509CertificateAuthenticationDefaultMode"),
                "rules": mode.get("rules") or [],
            },
            "trusted_cas": None if cas is None else [_ca_summary(c) for c in cas],
            "findings": [f.to_json() for f in self.findings],
        }


# --------------------------------------------------------------------------- reading


def read_policy(client: GraphClient, *, with_cas: bool = True) -> TenantPolicy:
    """GET the X.509 method configuration and (with *with_cas*) the trusted CAs of both
    trust stores: the classic one (``/organization/{id}/certificateBasedAuthConfiguration``)
    and the PKI-based one (``/directory/publicKeyInfrastructure/
    certificateBasedAuthConfigurations/{id}/certificateAuthorities``). A store the caller
    may not read (403) is noted in :attr:`TenantPolicy.unread`, not an error."""
    x509_config = client.get(X509_CONFIG, what="the X.509 certificate authentication policy")
    policy = TenantPolicy(x509_config)
    if not with_cas:
        return policy
    cas: list[dict[str, Any]] = []
    try:
        orgs = client.get_all("/organization", {"$select": "id"}, what="the organization")
        for org in orgs:
            configs = client.get_all(f"/organization/{org.get('id')}"
                                     "/certificateBasedAuthConfiguration",
                                     what="the trusted certificate authorities")
            for c in configs:
                cas += [{**a, "store": "certificate authorities"}
                        for a in c.get("certificateAuthorities") or [] if isinstance(a, dict)]
    except GraphError as e:
        if e.status != 403:
            raise
        policy.unread.append("certificate authorities (needs Organization.Read.All)")
    try:
        pkis = client.get_all(PKI_CONFIGS, what="the PKI-based trust store")
        for pki in pkis:
            details = client.get_all(f"{PKI_CONFIGS}/{pki.get('id')}/certificateAuthorities",
                                     what="the PKI-based trust store's CAs")
            store = f"PKI {pki.get('displayName') or pki.get('id')}"
            cas += [_from_pki(d, store) for d in details if isinstance(d, dict)]
    except GraphError as e:
        if e.status != 403:
            raise
        policy.unread.append("PKI-based trust store (needs PublicKeyInfrastructure.Read.All)")
    policy.certificate_authorities = cas
    return policy


def _from_pki(detail: dict[str, Any], store: str) -> dict[str, Any]:
    """A PKI store's certificateAuthorityDetail in the classic certificateAuthority shape."""
    return {"certificate": detail.get("certificate"),
            "isRootAuthority": detail.get("certificateAuthorityType") == "root",
            "certificateRevocationListUrl": detail.get("certificateRevocationListUrl"),
            "deltaCertificateRevocationListUrl":
                detail.get("deltacertificateRevocationListUrl"),
            "issuer": detail.get("issuer"), "store": store}


# --------------------------------------------------------------------------- judging


def evaluate(tenant: str, policy: TenantPolicy, *,
             fields: Sequence[str] = HIGH_FIELDS,
             certificate: x509.Certificate | None = None,
             ca_bundle: Sequence[x509.Certificate] = ()) -> PolicyReport:
    """Judge *policy* for binding *fields* (x509CertificateField names) and, when given,
    *certificate* (authentication binding, its issuing CA) and *ca_bundle* (each CA
    trusted)."""
    x = policy.x509
    findings = [_enabled(x), _targets(x)]
    findings += _user_bindings(x, fields)
    findings.append(_auth_binding(x, certificate))
    if policy.certificate_authorities is not None and (certificate is not None or ca_bundle):
        findings += _trusted_cas(policy.certificate_authorities, certificate, ca_bundle,
                                 policy.unread)
    return PolicyReport(tenant, policy, findings)


def fields_for(kinds: Sequence[str]) -> list[str]:
    """x509CertificateField names for pivtool's value kinds, without repeats."""
    return list(dict.fromkeys(FIELD_OF_KIND[k] for k in kinds if k in FIELD_OF_KIND))


def _enabled(x: dict[str, Any]) -> Finding:
    state = x.get("state")
    if state == "enabled":
        return Finding("tenant.cba-enabled", "pass",
                       "certificate-based authentication is enabled")
    return Finding("tenant.cba-enabled", "fail",
                   f"certificate-based authentication is {state or 'not configured'}",
                   FIX_ENABLE)


def _targets(x: dict[str, Any]) -> Finding:
    include = [t for t in x.get("includeTargets") or [] if isinstance(t, dict)]
    exclude = [t for t in x.get("excludeTargets") or [] if isinstance(t, dict)]
    names = ["all users" if t.get("id") == "all_users" else
             f"{t.get('targetType', 'group')} {t.get('id')}" for t in include]
    if not names:
        return Finding("tenant.cba-targets", "fail", "CBA is enabled for nobody (no "
                       "include targets)", FIX_ENABLE)
    text = "CBA is for " + ", ".join(names)
    if exclude:
        text += "; excluded: " + ", ".join(f"{t.get('targetType', 'group')} {t.get('id')}"
                                           for t in exclude)
    return Finding("tenant.cba-targets", "pass", text)


def _user_bindings(x: dict[str, Any], fields: Sequence[str]) -> list[Finding]:
    rules = sorted((b for b in x.get("certificateUserBindings") or [] if isinstance(b, dict)),
                   key=lambda b: b.get("priority", 0))
    out: list[Finding] = []
    to_cuid = 0
    for f in fields:
        rule = next((b for b in rules if b.get("x509CertificateField") == f
                     and b.get("userProperty") == "certificateUserIds"), None)
        fid = f"tenant.binding.{f}"
        if rule is None:
            out.append(Finding(fid, "warn", f"no username binding rule maps {f} to "
                               "certificateUserIds: Entra never consults the value pivtool "
                               "binds for it", FIX_RULE.format(field=f)))
            continue
        to_cuid += 1
        affinity = rule.get("trustAffinityLevel")
        text = (f"{f} -> certificateUserIds, priority {rule.get('priority')}, affinity "
                f"{affinity or 'not stated'}")
        if f in HIGH_FIELDS and affinity == "low":
            out.append(Finding(fid, "warn", text + " (a certificate-bound value counted as "
                               "low affinity)", FIX_RULE.format(field=f)))
        else:
            out.append(Finding(fid, "pass", text))
    if fields and not to_cuid:
        existing = ", ".join(f"{b.get('x509CertificateField')}->{b.get('userProperty')}"
                             for b in rules) or "none"
        out.insert(0, Finding(
            "tenant.binding", "fail",
            f"no username binding rule maps {' / '.join(fields)} to certificateUserIds "
            f"(rules: {existing}): the values 'pivtool entra bind' writes are never used",
            FIX_RULE.format(field=fields[0])))
    elif fields:
        out.insert(0, Finding("tenant.binding", "pass",
                              f"{to_cuid} of {len(fields)} bound field(s) have a "
                              "certificateUserIds rule"))
    return out


def _policy_oids(cert: x509.Certificate) -> list[str]:
    from cryptography import x509 as _x509

    try:
        ext = cert.extensions.get_extension_for_class(_x509.CertificatePolicies)
    except _x509.ExtensionNotFound:
        return []
    return [p.policy_identifier.dotted_string for p in ext.value]


def _auth_binding(x: dict[str, Any], cert: x509.Certificate | None) -> Finding:
    mode = x.get("authenticationModeConfiguration") or {}
    default = mode.get("x509CertificateAuthenticationDefaultMode") or \
        "x509CertificateSingleFactor"
    rules = [r for r in mode.get("rules") or [] if isinstance(r, dict)]
    describe = ", ".join(f"{r.get('x509CertificateRuleType')} {r.get('identifier')} -> "
                         f"{_factor(r.get('x509CertificateAuthenticationMode'))}"
                         for r in rules) or "no rules"
    if cert is None:
        multi = default == "x509CertificateMultiFactor" or any(
            r.get("x509CertificateAuthenticationMode") == "x509CertificateMultiFactor"
            for r in rules)
        text = f"default {_factor(default)}; {describe}"
        if multi:
            return Finding("tenant.auth-binding", "pass", text)
        return Finding("tenant.auth-binding", "warn", text + ": CBA never counts as "
                       "multifactor (no phishing-resistant authentication strength)",
                       FIX_MFA.format(oid="<OID>"))
    oids = _policy_oids(cert)
    issuer = format_dn(cert.issuer)
    matched = None
    for r in rules:
        kind, ident = r.get("x509CertificateRuleType"), str(r.get("identifier") or "")
        if (kind == "policyOID" and ident in oids) or (
                kind == "issuerSubject" and _same_dn(ident, cert)):
            matched = r
            break
    result = (matched or {}).get("x509CertificateAuthenticationMode") or default
    why = (f"rule {matched.get('x509CertificateRuleType')} {matched.get('identifier')}"
           if matched else "the default mode")
    text = f"this certificate counts as {_factor(result)} ({why}; issuer {issuer}"
    text += f", policy OIDs {', '.join(oids)})" if oids else ", no policy OIDs)"
    if result == "x509CertificateMultiFactor":
        return Finding("tenant.auth-binding", "pass", text)
    return Finding("tenant.auth-binding", "warn", text,
                   FIX_MFA.format(oid=oids[0] if oids else "OID (enroll with --policy OID)"))


def _same_dn(identifier: str, cert: x509.Certificate) -> bool:
    # The rule's identifier is the issuer's subject; compare without spacing and case,
    # in either RDN order (admin center and certutil print them differently).
    def norm(parts: list[str]) -> list[str]:
        return [p.strip().lower() for p in parts if p.strip()]

    given = norm(identifier.split(","))
    ours = norm(format_dn(cert.issuer).split(","))
    return given in (ours, ours[::-1]) or identifier.strip() == cert.issuer.rfc4514_string()


def _factor(mode: Any) -> str:
    return {"x509CertificateMultiFactor": "multi-factor",
            "x509CertificateSingleFactor": "single-factor"}.get(str(mode), str(mode))


def _load_ca(entry: dict[str, Any]) -> x509.Certificate | None:
    from cryptography import x509 as _x509

    raw = entry.get("certificate")
    if not isinstance(raw, str):
        return None
    try:
        return _x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error):
        return None


def _ca_summary(entry: dict[str, Any]) -> dict[str, Any]:
    cert = _load_ca(entry)
    return {
        "subject": cert.subject.rfc4514_string() if cert is not None else entry.get("issuer"),
        "is_root": entry.get("isRootAuthority"),
        "crl_url": entry.get("certificateRevocationListUrl") or None,
        "delta_crl_url": entry.get("deltaCertificateRevocationListUrl") or None,
        "store": entry.get("store"),
    }


def _trusted_cas(entries: list[dict[str, Any]], cert: x509.Certificate | None,
                 bundle: Sequence[x509.Certificate], unread: Sequence[str] = ()
                 ) -> list[Finding]:
    from cryptography.hazmat.primitives import serialization

    loaded = [(e, _load_ca(e)) for e in entries]
    by_der = {c.public_bytes(serialization.Encoding.DER): e for e, c in loaded if c}
    out: list[Finding] = []
    wanted: list[tuple[str, x509.Certificate | None, str]] = []
    for b in bundle:
        wanted.append((b.subject.rfc4514_string(), b, "ca"))
    if cert is not None and not any(b.subject == cert.issuer for b in bundle):
        wanted.append((cert.issuer.rfc4514_string(), None, "issuer"))
    for name, want, _kind in wanted:
        entry: dict[str, Any] | None = None
        if want is not None:
            entry = by_der.get(want.public_bytes(serialization.Encoding.DER))
        else:
            assert cert is not None
            entry = next((e for e, c in loaded if c is not None and c.subject == cert.issuer),
                         None)
        fid = f"tenant.trusted-ca.{name}"
        if entry is None and unread:
            # Not found, but a store could not be read: it may be there.
            out.append(Finding(fid, "warn", f"{name} is not among the {len(entries)} trusted "
                               f"CAs pivtool could read; not read: {', '.join(unread)}",
                               "grant the permission named, or check the store in the "
                               "admin center"))
        elif entry is None:
            out.append(Finding(fid, "fail", f"{name} is not among the tenant's trusted "
                               f"certificate authorities ({len(entries)} uploaded)", FIX_CA))
        elif not entry.get("certificateRevocationListUrl"):
            out.append(Finding(fid, "warn", f"{name} is trusted but has no CRL URL: Entra "
                               "cannot check revocation", "set the CA's CRL URL in the "
                               "tenant's certificate authorities"))
        else:
            root = "root" if entry.get("isRootAuthority") else "intermediate"
            out.append(Finding(fid, "pass", f"{name} is trusted ({root}, "
                               f"{entry.get('store') or 'certificate authorities'}), CRL "
                               f"{entry.get('certificateRevocationListUrl')}"))
    return out

