"""What the ``entra`` commands decide around Microsoft Graph: which certificateUserIds values
``--values`` picks, which username-binding fields the tenant's policy must map for them, and
the tenant's CBA policy read and judged for a certificate (``entra policy``,
``check --tenant``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.errors import UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs.entra import CertUserId
    from ..graph.client import GraphClient
    from ..graph.policy import PolicyReport

#: The certificateUserIds kinds --values accepts in a list (Microsoft's field names).
VALUE_KINDS = ("PrincipalName", "RFC822Name", "IssuerAndSubject", "Subject", "SKI",
               "SHA1PublicKey", "IssuerAndSerialNumber")


def parse_values_spec(spec: str) -> list[str]:
    """The kinds a ``--values`` LIST names ([] for ``high`` and ``all``); a usage error for
    an unknown kind (checked before any card or network is touched)."""
    if spec in ("high", "all"):
        return []
    lower = {k.lower(): k for k in VALUE_KINDS}
    kinds = []
    for part in (p.strip() for p in spec.split(",")):
        if part.lower() not in lower:
            raise UsageError(f"--values: {part!r} is not high, all or one of "
                             f"{', '.join(VALUE_KINDS)}")
        kinds.append(lower[part.lower()])
    return kinds


def select_values(ids: list[CertUserId], spec: str) -> list[CertUserId]:
    """The values ``--values`` picks: ``high`` (the certificate-bound ones: issuer and
    serial, SKI, public key), ``all`` (every value of at most 1,024 characters) or a
    comma-separated list of kinds (e.g. ``IssuerAndSerialNumber,PrincipalName``)."""
    from ..certs.entra import GRAPH_ORDER, HIGH, MAX_VALUE_LENGTH

    kinds = parse_values_spec(spec)
    usable = [i for i in ids if len(i.value) <= MAX_VALUE_LENGTH]
    order: dict[str, int] = {}
    for kind in (*GRAPH_ORDER, *VALUE_KINDS):  # Graph's order first, then the rest
        order.setdefault(kind, len(order))
    usable.sort(key=lambda i: order[i.kind])
    if spec == "high":
        chosen = [i for i in usable if i.affinity == HIGH]
    elif spec == "all":
        chosen = usable
    else:
        chosen = [i for i in usable if i.kind in kinds]
        missing = [k for k in kinds if not any(i.kind == k for i in chosen)]
        if missing:
            raise UsageError(f"--values: the certificate has no {', '.join(missing)} value "
                             "(see 'pivtool entra ids')")
    if not chosen:
        raise UsageError(f"--values {spec}: the certificate gives no such value "
                         "(see 'pivtool entra ids')")
    return chosen


def policy_fields(spec: str, certificate: x509.Certificate | None = None) -> list[str]:
    """The x509CertificateField names the tenant needs a username binding rule for, to
    accept the values ``--values`` *spec* binds: from *certificate*'s own values when there
    is one, else from the kinds the spec names (``high``: the certificate-bound fields)."""
    from ..graph.policy import HIGH_FIELDS, fields_for

    if certificate is not None:
        from ..certs.entra import certificate_user_ids

        return fields_for([i.kind for i in select_values(certificate_user_ids(certificate),
                                                         spec)])
    if spec == "high":
        return list(HIGH_FIELDS)
    kinds = set(VALUE_KINDS if spec == "all" else parse_values_spec(spec))
    return fields_for([k for k in VALUE_KINDS if k in kinds])  # in VALUE_KINDS' order


def judge_tenant_policy(client: GraphClient, *, fields: Sequence[str],
                        certificate: x509.Certificate | None = None,
                        bundle: Sequence[x509.Certificate] = ()) -> PolicyReport:
    """Read the tenant's CBA policy through *client* (its trusted CAs only when there is a
    certificate or a bundle to judge against them) and judge it for *fields*."""
    from ..graph.policy import evaluate, read_policy

    policy = read_policy(client, with_cas=certificate is not None or bool(bundle))
    return evaluate(client.config.tenant, policy, fields=fields, certificate=certificate,
                    ca_bundle=bundle)
