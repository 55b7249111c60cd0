"""The store's records and vocabulary: the typed rows :class:`pivtool.store.api.Store`
takes and returns, the user/key/certificate states, and the small helpers (UTC times, the
desk's and operator's default names) that callers and the store share.

Kept apart from the store so that a caller that only builds or reads records (the inventory
workflow, reports) need not read the database code, and so the store module stays one
screenful of SQL per method.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Row

#: User states, as in the batch state file (workflows.batch).
PENDING, ENROLLING, INCOMPLETE = "pending", "enrolling", "incomplete"
DONE, FAILED, REASSIGNED = "done", "failed", "reassigned"
USER_STATES = (PENDING, ENROLLING, INCOMPLETE, DONE, FAILED, REASSIGNED)
#: Key states: in use, reported lost, taken out of service, wiped (PIV reset).
KEY_STATES = ("active", "lost", "retired", "reset")
#: Certificate states.
CERT_STATES = ("present", "removed", "revoked")


def utcnow() -> dt.datetime:
    """Naive UTC (the column type on both engines)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, for JSON output."""
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def default_desk() -> str:
    """This machine's desk name unless ``--desk`` names it: the host name."""
    return socket.gethostname() or "desk"


def default_operator() -> str:
    """Who is at the desk, for the audit trail."""
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


@dataclass
class KeyRecord:
    """A YubiKey (or PIV card) in the inventory."""

    serial: int
    model: str | None = None
    firmware: str | None = None
    form_factor: str | None = None
    owner_upn: str | None = None
    status: str = "active"
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    last_desk: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (times as ISO 8601 UTC)."""
        d = asdict(self)
        d["first_seen"], d["last_seen"] = iso(self.first_seen), iso(self.last_seen)
        return d


@dataclass
class CertRecord:
    """A certificate seen on a key's slot (PEM kept: revocation hooks take it on stdin)."""

    slot: str
    fingerprint: str
    serial: str | None = None
    subject: str | None = None
    issuer: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    certificate_user_ids: list[dict[str, Any]] = field(default_factory=list)
    status: str = "present"
    pem: str | None = field(default=None, repr=False)
    key_serial: int | None = None
    id: int | None = None

    def to_json(self, pem: bool = False) -> dict[str, Any]:
        """JSON form; the PEM only when asked for."""
        d = asdict(self)
        d["not_before"], d["not_after"] = iso(self.not_before), iso(self.not_after)
        if not pem:
            d.pop("pem")
        return d


@dataclass
class AuditEvent:
    """One audit row. Never holds a secret: callers put step names and outcomes here."""

    step: str
    outcome: str
    serial: int | None = None
    upn: str | None = None
    reader: str | None = None
    detail: str = ""
    fingerprint: str | None = None
    command: str | None = None
    time: dt.datetime = field(default_factory=utcnow)
    desk: str | None = None  # filled in by the store
    operator: str | None = None  # filled in by the store
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["time"] = iso(self.time)
        return d


@dataclass
class EscrowRow:
    """One escrowed secret of a key: an encrypted escrow document, never the value."""

    serial: int
    kind: str  # "puk" or "mgmt_key"
    upn: str | None
    created: dt.datetime
    updated: dt.datetime
    document: str = field(repr=False)


@dataclass
class RosterInput:
    """A valid roster row as the store keeps it (``options`` as the state file has them)."""

    row: int
    upn: str
    options: dict[str, Any]


@dataclass
class UserRecord:
    """A roster user with their progress and claim."""

    id: int
    upn: str
    row: int | None
    options: dict[str, Any]
    in_roster: bool
    status: str
    pinned_serial: int | None
    serial: int | None
    attempts: int
    last_step: str | None
    error: str | None
    started: dt.datetime | None
    finished: dt.datetime | None
    certificate: dict[str, Any] | None
    certificate_user_ids: list[dict[str, Any]]
    pin_letter: str | None
    history: list[dict[str, Any]]
    claim_desk: str | None
    claim_reader: str | None
    claimed: dt.datetime | None
    heartbeat: dt.datetime | None
    lease_until: dt.datetime | None
    #: ``--graph-bind``: the user's Entra binding (``graph_binds`` row, as the batch state
    #: file's ``graph`` object), when the query joined it and a bind was tried.
    graph: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> UserRecord:
        """From a ``users`` row (joined with ``graph_binds`` as ``g_*`` columns, or not)."""
        m = row._mapping
        graph = None if m.get("g_status") is None else {
            "status": m["g_status"], "values": list(m["g_ids"] or []),
            "attempts": m["g_attempts"], "patched": bool(m["g_patched"]),
            "added": m["g_added"], "error": m["g_error"], "time": iso(m["g_updated"]),
            "desk": m["g_desk"]}
        return cls(id=m["id"], upn=m["upn"], row=m["row"], options=dict(m["options"] or {}),
                   in_roster=bool(m["in_roster"]), status=m["status"],
                   pinned_serial=m["pinned_serial"], serial=m["serial"],
                   attempts=m["attempts"], last_step=m["last_step"], error=m["error"],
                   started=m["started"], finished=m["finished"],
                   certificate=m["certificate"],
                   certificate_user_ids=list(m["certificate_user_ids"] or []),
                   pin_letter=m["pin_letter"], history=list(m["history"] or []),
                   claim_desk=m["claim_desk"], claim_reader=m["claim_reader"],
                   claimed=m["claimed"], heartbeat=m["heartbeat"],
                   lease_until=m["lease_until"], graph=graph)

    def to_json(self) -> dict[str, Any]:
        """JSON form (the report's user entry plus the claim)."""
        return {"row": self.row, "upn": self.upn, "status": self.status,
                "in_roster": self.in_roster, "serial": self.serial,
                "reader": self.claim_reader, "desk": self.claim_desk,
                "attempts": self.attempts, "last_step": self.last_step, "error": self.error,
                "finished": iso(self.finished), "certificate": self.certificate,
                "certificate_user_ids": self.certificate_user_ids,
                "pin_letter": self.pin_letter, "heartbeat": iso(self.heartbeat),
                "lease_until": iso(self.lease_until)}
