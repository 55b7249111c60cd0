"""``pivtool lost`` / ``pivtool retire``: end a key's life in the inventory — mark it, revoke
its certificates, and take its certificateUserIds off the owner in Entra.

The order is the safe one, and each step is recorded as it happens, so a crash, a failing
CA or a failing Graph leaves a state the same command finishes:

1. :func:`plan_end` reads the key and works out what is to do (no change anywhere); with
   Graph, :func:`check_entra` reads the owner in Entra (resolvable, not synchronised from
   on-premises AD) — the pre-flight.
2. :func:`end_key` marks the key first (the record of intent), then revokes each certificate
   still ``present``, recording each as ``revoked`` at once (a re-run never revokes it
   again), then removes exactly the key's certificateUserIds from the owner (a
   read-modify-write through :func:`pivtool.graph.bind.apply`: every other value stays, and
   values already gone are no error). Audited throughout.

Which values are the key's: those of its certificates that are ``present`` or ``revoked``
(chosen as for a Graph PATCH body: :func:`pivtool.certs.entra.graph_selection`), less the
values the owner's other active keys still need (e.g. the ``X509:<PN>`` value that every
certificate of the user shares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import PivToolError, UsageError
from .inventory import audit_event

if TYPE_CHECKING:
    from ..graph.bind import BindResult
    from ..graph.client import GraphClient
    from ..store.api import Store
    from ..store.records import CertRecord, KeyRecord

LIFECYCLE_SCHEMA = "pivtool.inventory-lifecycle/1"

#: CRL reason of each end state.
REASONS = {"lost": "key_compromise", "retired": "cessation_of_operation"}


class Revoker(Protocol):
    """Revokes one certificate (PEM) with a reason; raises on failure."""

    description: str

    def revoke(self, cert: CertRecord, reason: str) -> str:
        """Revoke; return a one-line note (e.g. "revoked by the lab CA")."""


@dataclass
class LabCARevoker:
    """Revoke with the lab CA in a directory (certificates it did not issue are skipped)."""

    directory: str
    passphrase: bytes | None = field(default=None, repr=False)
    description: str = "lab CA"

    def revoke(self, cert: CertRecord, reason: str) -> str:
        """Mark the serial revoked in the CA's index (re-runs find it revoked already)."""
        from ..certs.ca import LabCA
        from ..certs.errors import LabCAError

        ca = LabCA.open(self.directory, self.passphrase)
        if ca.certificate.subject.rfc4514_string() != cert.issuer:
            raise UsageError(f"the {cert.slot} certificate was not issued by the lab CA in "
                             f"{self.directory} (issuer {cert.issuer})")
        assert cert.serial is not None
        try:
            ca.revoke(int(cert.serial.replace(":", ""), 16), reason)
        except LabCAError as e:
            if "already revoked" not in str(e):
                raise
            return "already revoked by the lab CA"
        return "revoked by the lab CA (publish the next CRL: pivtool ca crl)"


@dataclass
class CommandRevoker:
    """Revoke with an external command: certificate PEM on stdin, the reason as
    ``$PIVTOOL_REVOKE_REASON``; exit 0 means revoked. Runs like ``--issuer-cmd``: no
    shell, without pivtool's secret variables, with a timeout."""

    command: str
    timeout: float = 120.0
    description: str = "revoke command"

    def revoke(self, cert: CertRecord, reason: str) -> str:
        """Run the command for one certificate."""
        from .issuers import run_hook

        out = run_hook(self.command, (cert.pem or "").encode(), self.timeout,
                       "revoke command", {"PIVTOOL_REVOKE_REASON": reason})
        last = out.decode("utf-8", "replace").strip().splitlines()
        return f"revoked by the command{': ' + last[-1][:200] if last else ''}"


@dataclass
class LifecyclePlan:
    """What ``lost``/``retire`` will do, read from the inventory before anything changes."""

    key: KeyRecord
    status: str
    #: Certificates still ``present``: to revoke.
    present: list[CertRecord]
    #: Certificates ``revoked`` already (by an earlier run of the same command).
    revoked: list[CertRecord]
    #: The owner's certificateUserIds this key brought, to remove from Entra.
    remove_ids: list[str]
    #: The values of the owner's other active keys (they stay).
    keep_ids: list[str]

    @property
    def owner(self) -> str | None:
        """The key's owner (UPN), if the inventory knows one."""
        return self.key.owner_upn


@dataclass
class LifecycleResult:
    """What ``lost``/``retire`` did."""

    serial: int
    status: str
    owner: str | None
    revoked: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    #: Revoked by an earlier run: not revoked again.
    already_revoked: list[dict[str, Any]] = field(default_factory=list)
    remove_ids: list[str] = field(default_factory=list)
    keep_ids: list[str] = field(default_factory=list)
    #: ``--graph-unbind``: the unbind's result, or its error (None: not asked).
    unbind: BindResult | None = None
    unbind_error: str | None = None
    graph_asked: bool = False

    @property
    def ok(self) -> bool:
        """Every certificate was revoked (or there was none) and, when asked, the values
        are off the owner in Entra."""
        return not self.failed and self.unbind_error is None

    def summary(self) -> str:
        """One line, exactly what happened, e.g. "key marked lost, certificates revoked,
        Entra unbind failed: run the same command again"."""
        parts = [f"key marked {self.status}"]
        if self.failed:
            parts.append(f"{len(self.failed)} certificate(s) NOT revoked")
        elif self.skipped:
            parts.append("certificates not revoked (--no-revoke)")
        elif self.revoked or self.already_revoked:
            parts.append("certificates revoked")
        else:
            parts.append("no certificates to revoke")
        if self.graph_asked:
            if self.unbind_error is not None:
                parts.append("Entra unbind failed")
            elif self.unbind is not None and self.unbind.removed:
                parts.append(f"{len(self.unbind.removed)} certificateUserIds value(s) "
                             "removed in Entra")
            else:
                parts.append("nothing left to remove in Entra")
        return ", ".join(parts) + ("" if self.ok else ": run the same command again")

    def graph(self) -> dict[str, Any] | None:
        """The Graph ``PATCH /users/{upn}`` body that leaves the owner only the values of
        their other active keys (None without an owner)."""
        if self.owner is None:
            return None
        return {"method": "PATCH", "url": f"/users/{self.owner}",
                "body": {"authorizationInfo": {"certificateUserIds": self.keep_ids}}}

    def to_json(self) -> dict[str, Any]:
        """JSON form (schema ``pivtool.inventory-lifecycle/1``; docs/json.md)."""
        entra = None
        if self.graph_asked:
            entra = {"ok": self.unbind_error is None, "error": self.unbind_error,
                     "unbind": self.unbind.to_json() if self.unbind is not None else None}
        return {"schema": LIFECYCLE_SCHEMA, "serial": self.serial, "status": self.status,
                "owner": self.owner, "ok": self.ok, "summary": self.summary(),
                "revoked": self.revoked, "already_revoked": self.already_revoked,
                "failed": self.failed, "skipped": self.skipped,
                "certificate_user_ids_to_remove": self.remove_ids, "graph": self.graph(),
                "entra": entra}


def _graph_ids(certs: list[CertRecord]) -> list[str]:
    from ..certs.entra import CertUserId, graph_selection

    out: list[str] = []
    for c in certs:
        chosen, _ = graph_selection([CertUserId(**i) for i in c.certificate_user_ids])
        out += [i.value for i in chosen if i.value not in out]
    return out


def plan_end(store: Store, serial: int, status: str) -> LifecyclePlan:
    """Read what ending the key *serial* as *status* (``lost`` or ``retired``) means; a
    usage error (nothing changed) for a serial not in the inventory or a key already in
    another end state."""
    key = store.key(serial)
    if key is None:
        raise UsageError(f"serial {serial} is not in the inventory (pivtool inventory "
                         "register reads a card into it)")
    if key.status not in ("active", status):
        raise UsageError(f"serial {serial} is already {key.status}")
    certs = store.certificates(serial)
    present = [c for c in certs if c.status == "present"]
    revoked = [c for c in certs if c.status == "revoked"]
    keep: list[str] = []
    if key.owner_upn is not None:
        others = [c for k in store.key_records(owner=key.owner_upn, status="active")
                  if k.serial != serial for c in store.certificates(k.serial, "present")]
        keep = _graph_ids(others)
    remove = [v for v in _graph_ids(present + revoked) if v not in keep]
    return LifecyclePlan(key, status, present, revoked, remove, keep)


def check_entra(client: GraphClient, plan: LifecyclePlan) -> None:
    """The Graph pre-flight of ``--graph-unbind``: the key has an owner, the owner is a user
    in the tenant, and pivtool may write their certificateUserIds (a user synchronised from
    on-premises AD is written only by Microsoft Entra Connect). Raises a usage error
    (nothing changed); a refused credential stays an authentication error."""
    from ..graph.bind import on_premises_instructions, read_user
    from ..graph.errors import GraphError

    if plan.owner is None:
        raise UsageError(f"serial {plan.key.serial} has no owner in the inventory: there is "
                         "no Entra user to unbind (run without --graph-unbind)")
    try:
        # The first Graph call also signs in: a refused credential is an authentication
        # error (exit 3), an unreachable service or an unknown user a refusal (exit 2).
        user = read_user(client, plan.owner)
    except GraphError as e:
        raise UsageError(f"--graph-unbind: {e} (nothing was changed)") from None
    held = [v for v in plan.remove_ids if v in user.values]
    if user.synced and held:
        steps = on_premises_instructions(user.upn, (), held)
        raise UsageError(f"--graph-unbind: {user.upn} is synchronised from on-premises "
                         "Active Directory; only Microsoft Entra Connect writes its "
                         "certificateUserIds. Remove the values from altSecurityIdentities "
                         f"there ({'; '.join(steps)}) and run without --graph-unbind "
                         "(nothing was changed)")


def end_key(store: Store, plan: LifecyclePlan, revoker: Revoker | None,
            client: GraphClient | None = None, reason: str | None = None) -> LifecycleResult:
    """Do *plan*: mark the key, revoke its present certificates with *revoker* (None: only
    mark them), and with *client* remove :attr:`LifecyclePlan.remove_ids` from the owner in
    Entra. Certificates whose revocation failed stay ``present`` (a re-run retries them);
    a failed unbind is reported in the result (a re-run finishes it). Everything is
    audited; running it again finishes what a failure left."""
    key, status = plan.key, plan.status
    serial, owner = key.serial, key.owner_upn
    reason = reason or REASONS[status]
    result = LifecycleResult(serial, status, owner, remove_ids=plan.remove_ids,
                             keep_ids=plan.keep_ids, graph_asked=client is not None)
    result.already_revoked = [{"slot": c.slot, "fingerprint": c.fingerprint,
                               "serial": c.serial} for c in plan.revoked]
    if key.status != status:
        # The record of intent comes first: a crash after this leaves a marked key that
        # the same command, run again, finishes.
        how = revoker.description if revoker is not None else "no revocation (--no-revoke)"
        store.set_key_status(serial, status, events=[audit_event(
            status, "started", serial, owner, command=status,
            detail=f"{len(plan.present)} certificate(s) to revoke ({how})"
                   + (f"; {len(plan.remove_ids)} certificateUserIds to remove in Entra"
                      if client is not None else ""))])
    for c in plan.present:
        item = {"slot": c.slot, "fingerprint": c.fingerprint, "serial": c.serial}
        if revoker is None:
            result.skipped.append({**item, "note": "no --ca or --revoke-cmd: not revoked"})
            continue
        try:
            note = revoker.revoke(c, reason)
        except PivToolError as e:
            result.failed.append({**item, "error": str(e)})
            store.audit([audit_event("revoke", "failed", serial, owner, str(e),
                                     command=status, fingerprint=c.fingerprint)])
            continue
        assert c.id is not None
        # Recorded at once, each on its own: a re-run never revokes it a second time.
        store.set_key_status(serial, status, "revoked", [c.id], [audit_event(
            "revoke", "done", serial, owner, f"{c.slot} {note}", command=status,
            fingerprint=c.fingerprint)])
        result.revoked.append({**item, "note": note})
    if client is not None:
        _unbind(store, client, plan, result)
    entra = ""
    if client is not None:
        entra = "; Entra: " + (f"unbind failed: {result.unbind_error}"
                               if result.unbind_error is not None else
                               f"{len(result.unbind.removed) if result.unbind else 0} "
                               "value(s) removed")
    store.audit([audit_event(status, "done" if result.ok else "partial", serial, owner,
                             f"{len(result.revoked)} revoked, {len(result.failed)} failed, "
                             f"{len(result.already_revoked)} revoked before; remove "
                             f"{len(result.remove_ids)} certificateUserIds" + entra,
                             command=status)])
    return result


def _unbind(store: Store, client: GraphClient, plan: LifecyclePlan,
            result: LifecycleResult) -> None:
    """Remove the key's values from the owner (read, merge, PATCH, read back), audited.
    A failure is recorded in *result*, not raised: what happened before it stands."""
    from ..graph.bind import apply

    serial, owner = plan.key.serial, plan.owner
    assert owner is not None  # check_entra refused a key without an owner
    try:
        result.unbind = apply(client, owner, remove=plan.remove_ids, action="unbind")
    except PivToolError as e:
        result.unbind_error = str(e)
        store.audit([audit_event("entra-unbind", "failed", serial, owner, str(e),
                                 command=plan.status)])
        return
    removed = result.unbind.removed
    store.audit([audit_event(
        "entra-unbind", "done", serial, owner, command=plan.status,
        detail=(f"removed {len(removed)} certificateUserIds value(s), read back and verified: "
                + ", ".join(removed)) if removed else
        f"none of the key's {len(plan.remove_ids)} value(s) left on the user")])
