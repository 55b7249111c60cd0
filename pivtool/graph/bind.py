"""Bind and unbind a certificate's ``certificateUserIds`` values on an Entra user.

Read the user (``authorizationInfo``, ``onPremisesSyncEnabled``), merge, check Entra's
rules before writing (at most 10 values of at most 1,024 characters; each value unique in
the tenant), PATCH the whole list (Graph replaces the attribute), read back and verify.
Binding what is already there, or unbinding what is not, sends no PATCH.

Microsoft's sources: the user resource's ``authorizationInfo.certificateUserIds``
(Graph v1.0), "Mapping to the certificateUserIds attribute in Microsoft Entra ID" (the
limits, uniqueness, the ``$filter`` lookup with ``ConsistencyLevel: eventual``, and that
only Microsoft Entra Connect writes the attribute of synchronised users, from
``altSecurityIdentities`` on-premises).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..certs.entra import MAX_VALUE_LENGTH, MAX_VALUES, CertUserId, validate_certificate_user_id
from .errors import (
    BindingLimitError,
    GraphError,
    SyncedUserError,
    ValueConflictError,
)

if TYPE_CHECKING:
    from .client import GraphClient

#: JSON schema identifier of :meth:`BindResult.to_json`.
BIND_SCHEMA = "pivtool.entra-bind/1"

#: Delegated permission bind/unbind ask for (the signed-in admin also needs a role that
#: may write certificateUserIds: Privileged Authentication Administrator).
BIND_PERMISSIONS = ("User.ReadWrite.All",)

USER_SELECT = "id,userPrincipalName,onPremisesSyncEnabled,authorizationInfo"


@dataclass(frozen=True)
class EntraUser:
    """What bind needs of a user."""

    id: str
    upn: str
    synced: bool
    values: tuple[str, ...]


def user_path(upn_or_id: str) -> str:
    """``/users/{id | userPrincipalName}``, the key percent-encoded."""
    return "/users/" + quote(upn_or_id, safe="@")


def read_user(client: GraphClient, upn: str) -> EntraUser:
    """GET the user's id, UPN, sync state and certificateUserIds."""
    try:
        data = client.get(user_path(upn), {"$select": USER_SELECT}, what=f"user {upn}")
    except GraphError as e:
        if e.status == 404:
            raise GraphError(f"no user {upn} in tenant {client.config.tenant}", 404,
                             e.code) from None
        raise
    info = data.get("authorizationInfo") or {}
    values = info.get("certificateUserIds") if isinstance(info, dict) else None
    return EntraUser(
        id=str(data.get("id") or ""),
        upn=str(data.get("userPrincipalName") or upn),
        synced=data.get("onPremisesSyncEnabled") is True,
        values=tuple(v for v in (values or []) if isinstance(v, str)),
    )


def _odata_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def holders_of(client: GraphClient, value: str) -> list[EntraUser]:
    """Users that hold *value* in their certificateUserIds (an advanced query: Graph needs
    ``$count=true`` and ``ConsistencyLevel: eventual`` for this filter)."""
    params = {
        "$filter": f"authorizationInfo/certificateUserIds/any(x:x eq {_odata_literal(value)})",
        "$count": "true",
        "$select": "id,userPrincipalName",
    }
    rows = client.get_all("/users", params, headers={"ConsistencyLevel": "eventual"},
                          what="users holding a certificateUserIds value")
    return [EntraUser(str(r.get("id") or ""), str(r.get("userPrincipalName") or "?"), False, ())
            for r in rows]


@dataclass
class BindResult:
    """What bind/unbind found and did. ``after`` is the list read back (or planned, for a
    dry run); ``patched`` says whether a PATCH was sent."""

    action: str  # "bind" | "unbind" | "rebind"
    upn: str
    user_id: str
    before: list[str]
    after: list[str]
    added: list[str]
    removed: list[str]
    kept: list[str]
    requested: list[CertUserId] = field(default_factory=list)
    dry_run: bool = False
    patched: bool = False
    verified: bool = False

    @property
    def changed(self) -> bool:
        """True when the user's values differ (or would differ) from before."""
        return bool(self.added or self.removed)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form (schema ``pivtool.entra-bind/1``)."""
        return {
            "schema": BIND_SCHEMA,
            "action": self.action,
            "user": {"upn": self.upn, "id": self.user_id},
            "dry_run": self.dry_run,
            "changed": self.changed,
            "patched": self.patched,
            "verified": self.verified,
            "requested": [i.to_json() for i in self.requested],
            "added": self.added,
            "removed": self.removed,
            "kept": self.kept,
            "before": self.before,
            "after": self.after,
        }


def on_premises_instructions(upn: str, add: Sequence[str], remove: Sequence[str]) -> list[str]:
    """What an AD administrator sets instead, for a user synchronised from on-premises:
    the same strings in ``altSecurityIdentities`` (Microsoft Entra Connect synchronises
    them to certificateUserIds with a sync rule)."""
    sam = upn.split("@")[0]
    lines = []
    for v in add:
        lines.append(f"Set-ADUser {sam} -Add @{{altSecurityIdentities='{v}'}}")
    for v in remove:
        lines.append(f"Set-ADUser {sam} -Remove @{{altSecurityIdentities='{v}'}}")
    return lines


def apply(client: GraphClient, upn: str, *, add: Sequence[CertUserId] = (),
          remove: Sequence[str] = (), dry_run: bool = False, action: str = "bind",
          settle: Callable[[float], None] = time.sleep) -> BindResult:
    """Add *add* and remove *remove* on *upn*'s certificateUserIds in one PATCH.

    Refuses (nothing written) for a user synchronised from on-premises, a merge over
    Entra's limits, or a value another user holds. Existing values not in *remove* are
    kept, in their order; new values are appended."""
    wanted = [validate_certificate_user_id(i.value) for i in add]
    user = read_user(client, upn)
    before = list(user.values)
    to_add = [v for v in dict.fromkeys(wanted) if v not in before]
    to_remove = [v for v in dict.fromkeys(remove) if v in before and v not in wanted]
    after = [v for v in before if v not in to_remove] + to_add
    kept = [v for v in before if v not in to_remove]
    result = BindResult(action, user.upn, user.id, before, after, to_add, to_remove, kept,
                        list(add), dry_run)
    if not result.changed:
        result.verified = True  # read just now: exactly what was asked for is there
        return result
    if user.synced:
        steps = on_premises_instructions(user.upn, to_add, to_remove)
        raise SyncedUserError(
            f"{user.upn} is synchronised from on-premises Active Directory "
            "(onPremisesSyncEnabled): only Microsoft Entra Connect may write its "
            "certificateUserIds. Set the values in the user's altSecurityIdentities "
            "on-premises instead, and let Microsoft Entra Connect synchronise them", steps)
    _check_limits(user, after, to_add)
    conflicts = _conflicts(client, user, to_add)
    if conflicts:
        raise _conflict_error(user.upn, conflicts)
    if dry_run:
        return result
    body = {"authorizationInfo": {"certificateUserIds": after}}
    try:
        client.patch(user_path(user.id or user.upn), body,
                     what=f"certificateUserIds of {user.upn}")
    except GraphError as e:
        if e.status == 400:
            # Someone may have taken a value since the check: name them if so.
            late = _conflicts(client, user, to_add)
            if late:
                raise _conflict_error(user.upn, late) from e
        raise
    result.patched = True
    result.after, result.verified = _read_back(client, user.upn, after, settle)
    if not result.verified:
        raise GraphError(f"certificateUserIds of {user.upn} read back differ from what was "
                         f"written (read {result.after}); run the command again")
    return result


def _check_limits(user: EntraUser, after: list[str], to_add: list[str]) -> None:
    long = [v for v in to_add if len(v) > MAX_VALUE_LENGTH]
    if long:
        raise BindingLimitError(f"a value is longer than Entra's {MAX_VALUE_LENGTH} "
                                f"characters: {long[0][:60]}...")
    if len(after) > MAX_VALUES:
        existing = ", ".join(user.values)
        raise BindingLimitError(
            f"{user.upn} would have {len(after)} certificateUserIds values; Entra allows "
            f"{MAX_VALUES}. The user already has {len(user.values)} ({existing}), "
            f"{len(to_add)} would be added: unbind values of old certificates first "
            "(pivtool entra unbind) or bind fewer (--values)")


def _conflicts(client: GraphClient, user: EntraUser, values: Iterable[str]
               ) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for v in values:
        others = [h.upn for h in holders_of(client, v) if h.id != user.id]
        if others:
            found[v] = others
    return found


def _conflict_error(upn: str, conflicts: dict[str, list[str]]) -> ValueConflictError:
    parts = [f"{v} is held by {', '.join(who)}" for v, who in conflicts.items()]
    return ValueConflictError(
        f"cannot bind to {upn}: each certificateUserIds value must be unique in the tenant, "
        f"and {'; '.join(parts)} (unbind it there first: pivtool entra unbind --upn "
        f"{next(iter(conflicts.values()))[0]} ...)", conflicts)


def _read_back(client: GraphClient, upn: str, expected: list[str],
               settle: Callable[[float], None]) -> tuple[list[str], bool]:
    # Directory writes are eventually consistent: a read right after the PATCH may still
    # show the old list for a moment.
    values: list[str] = []
    for delay in (0.0, 1.0, 2.0):
        if delay:
            settle(delay)
        values = list(read_user(client, upn).values)
        if sorted(values) == sorted(expected):
            return values, True
    return values, False
