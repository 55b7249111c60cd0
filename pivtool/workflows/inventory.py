"""The key inventory's workflows: record what a card holds, register a card, export, and
import today's files (losing or retiring a key: :mod:`pivtool.workflows.lifecycle`).

The database work goes through :class:`pivtool.store.api.Store`; this module turns cards,
certificates and files into its records. Secrets never reach it: escrowed secrets are
encrypted by :class:`pivtool.workflows.escrow.StoreEscrow` before the store sees them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.csvsafe import spreadsheet_safe
from ..core.errors import UsageError

if TYPE_CHECKING:
    from ..piv.session import PivSession
    from ..store.api import Store
    from ..store.records import AuditEvent, CertRecord, KeyRecord
    from .escrow import EscrowFile, StoreEscrow
    from .state import CardSnapshot

LIST_SCHEMA = "pivtool.inventory-list/1"
EXPORT_SCHEMA = "pivtool.inventory-export/1"
SHOW_SCHEMA = "pivtool.inventory-show/1"
REGISTER_SCHEMA = "pivtool.inventory-register/1"
IMPORT_SCHEMA = "pivtool.inventory-import/1"

#: Commands that change a card and are recorded in the inventory when a store is configured
#: (``pivtool`` prefix dropped).
RECORDED_COMMANDS = frozenset({"enroll", "recover", "reset", "certs import", "certs delete",
                               "keys move", "keys delete"})
EXPORT_COLUMNS = ["serial", "status", "owner_upn", "model", "firmware", "form_factor",
                  "last_seen", "last_desk", "slot", "certificate_status", "fingerprint",
                  "certificate_serial", "issuer", "not_after", "certificate_user_ids"]


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def cert_record(slot: str, cert: Any) -> CertRecord:
    """The inventory record of *cert* on *slot* (``9a``...), with its certificateUserIds."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..certs.entra import certificate_user_ids
    from ..certs.inspect import summarize
    from ..store.records import CertRecord

    s = summarize(cert)
    ids = [{"kind": i.kind, "value": i.value, "affinity": i.affinity}
           for i in certificate_user_ids(cert)]
    return CertRecord(slot=slot, fingerprint=s.sha256, serial=s.serial, subject=s.subject,
                      issuer=s.issuer, not_before=_parse_time(s.not_before),
                      not_after=_parse_time(s.not_after), certificate_user_ids=ids,
                      pem=cert.public_bytes(Encoding.PEM).decode())


def card_records(card: CardSnapshot, form_factor: str | None = None
                 ) -> tuple[KeyRecord, list[CertRecord]]:
    """The key and certificate records of a card read with ``read_card_state``. The owner
    is the UPN of the 9a certificate (None when 9a holds none)."""
    from ..certs.inspect import get_upns
    from ..piv.constants import Slot
    from ..store.records import KeyRecord

    if card.serial is None:
        raise UsageError("the card reports no serial number; the inventory files keys by "
                         "serial (YubiKey firmware 5 or later)")
    certs = [cert_record(f"{s.slot.value:02x}", s.certificate)
             for s in card.slots if s.certificate is not None]
    auth = card.slot(Slot.AUTHENTICATION)
    upns = get_upns(auth.certificate) if auth is not None and auth.certificate else []
    model = "YubiKey" if card.is_yubikey else "PIV card"
    return KeyRecord(serial=card.serial, model=model, firmware=card.version,
                     form_factor=form_factor, owner_upn=upns[0] if upns else None), certs


def audit_event(step: str, outcome: str, serial: int | None, upn: str | None = None,
                detail: str = "", command: str | None = None, reader: str | None = None,
                fingerprint: str | None = None) -> AuditEvent:
    """One audit row (the store fills in the time's desk and operator)."""
    from ..store.records import AuditEvent

    return AuditEvent(step=step, outcome=outcome, serial=serial, upn=upn, detail=detail,
                      command=command, reader=reader, fingerprint=fingerprint)


def record_card(store: Store, session: PivSession, command: str, outcome: str,
                detail: str = "") -> KeyRecord:
    """Read the card in *session* and record it (key, its certificates) with an audit row
    naming *command* and its *outcome*. One transaction."""
    from .device import read_device_info
    from .state import read_card_state

    card = read_card_state(session)
    form = read_device_info(session).form_factor if session.is_yubikey else None
    key, certs = card_records(card, form)
    fps = ", ".join(f"{c.slot}:{c.fingerprint[:16]}" for c in certs) or "no certificates"
    store.record_card(key, certs, [audit_event(command, outcome, key.serial, key.owner_upn,
                                               detail=(detail + "; " if detail else "") + fps,
                                               command=command, reader=card.reader)])
    return key


def record_failure(store: Store, command: str, detail: str) -> None:
    """Audit a card-changing command that failed before the card could be read back."""
    store.audit([audit_event(command, "failed", None, detail=detail, command=command)])


# --------------------------------------------------------------------------------------------
# Reading the inventory


def key_view(store: Store, serial: int) -> dict[str, Any]:
    """One key: the record, its certificates, whether a PUK is escrowed, its audit trail."""
    key = store.key(serial)
    if key is None:
        raise UsageError(f"serial {serial} is not in the inventory")
    kinds = sorted({r.kind for r in store.escrow_rows(serial)})
    return {"key": key.to_json(),
            "certificates": [c.to_json() for c in store.certificates(serial)],
            "escrow": kinds,
            "audit": [e.to_json() for e in store.audit_trail(serial=serial)]}


def user_view(store: Store, upn: str) -> dict[str, Any]:
    """One user: their keys (each as :func:`key_view` without the audit), the roster entry
    if any, and the audit rows naming them."""
    keys = store.key_records(owner=upn)
    user = store.find(upn)
    if not keys and user is None:
        raise UsageError(f"{upn} has no keys in the inventory and is in no roster")
    views = []
    for k in keys:
        v = key_view(store, k.serial)
        v.pop("audit")
        views.append(v)
    return {"upn": upn, "keys": views, "roster": user.to_json() if user else None,
            "audit": [e.to_json() for e in store.audit_trail(upn=upn)]}


def export_rows(store: Store) -> list[dict[str, Any]]:
    """One row per certificate (and one per key without certificates), for CSV/JSON."""
    certs: dict[int, list[CertRecord]] = {}
    for c in store.certificates():
        assert c.key_serial is not None
        certs.setdefault(c.key_serial, []).append(c)
    rows = []
    for k in store.key_records():
        base = {"serial": k.serial, "status": k.status, "owner_upn": k.owner_upn,
                "model": k.model, "firmware": k.firmware, "form_factor": k.form_factor,
                "last_seen": k.to_json()["last_seen"], "last_desk": k.last_desk}
        for c in certs.get(k.serial) or [None]:  # type: ignore[list-item]
            row = dict(base)
            row.update({"slot": c.slot if c else None,
                        "certificate_status": c.status if c else None,
                        "fingerprint": c.fingerprint if c else None,
                        "certificate_serial": c.serial if c else None,
                        "issuer": c.issuer if c else None,
                        "not_after": c.to_json()["not_after"] if c else None,
                        "certificate_user_ids": [i["value"] for i in c.certificate_user_ids]
                        if c else []})
            rows.append(row)
    return rows


def export_csv(rows: list[dict[str, Any]]) -> str:
    """CSV of :func:`export_rows`; cells starting with ``= + - @`` are quoted as text so a
    spreadsheet never runs them (UPNs and subjects come from certificates)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    for row in rows:
        cells = []
        for col in EXPORT_COLUMNS:
            v = row[col]
            text = " | ".join(v) if isinstance(v, list) else "" if v is None else str(v)
            cells.append(spreadsheet_safe(text))
        w.writerow(cells)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Importing today's files


@dataclass
class ImportResult:
    """What an import brought in."""

    source: str
    users: int = 0
    keys: int = 0
    certificates: int = 0
    audit: int = 0
    escrow: int = 0
    #: A batch state's roster file and bad rows (not in the JSON form).
    roster: str | None = None
    invalid_rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"schema": IMPORT_SCHEMA, "source": self.source, "users": self.users,
                "keys": self.keys, "certificates": self.certificates, "audit": self.audit,
                "escrow": self.escrow}


def import_batch_state(store: Store, path: str | Path, command: str = "inventory import",
                       note: str = "") -> ImportResult:
    """Bring a batch state file (and its audit log beside it, if any) into the store: the
    roster users with their status and key, each enrolled key and its 9a certificate. The
    audit row of the import names *command* and ends with *note*."""
    from ..store.records import CertRecord, KeyRecord, RosterInput
    from .batch import BatchPaths, BatchState

    state = BatchState.load(Path(path))
    result = ImportResult(str(path), roster=state.doc.get("roster"),
                          invalid_rows=list(state.doc.get("invalid_rows") or []))
    # The state file's own JSON form of each user record (what this import maps).
    users = [u.to_json() for u in state.users.values()]
    store.merge_roster(state.doc.get("roster") or str(path),
                       [RosterInput(u["row"], u["upn"], u["options"]) for u in users])
    for u in users:
        record = store.find(u["upn"])
        assert record is not None
        store.update_user(record.id, status=u["status"], serial=u["serial"],
                          attempts=u["attempts"], last_step=u["last_step"], error=u["error"],
                          started=_parse_time(u.get("started")),
                          finished=_parse_time(u.get("finished")),
                          certificate=u.get("certificate"),
                          certificate_user_ids=u.get("certificate_user_ids") or [],
                          pin_letter=u.get("pin_letter"), history=u.get("history") or [],
                          in_roster=bool(u.get("in_roster", True)),
                          claim_reader=u.get("reader"))
        result.users += 1
        graph = u.get("graph") or {}
        if graph.get("status") == "bound" and store.bind_claim(u["upn"], graph.get("values")
                                                               or [], 60.0):
            # Confirmed in Entra by the file's batch: a --graph-bind re-run need not ask.
            store.bind_finish(u["upn"], True, bool(graph.get("patched")), graph.get("added"),
                              None)
        if u["status"] == "done" and u["serial"] is not None:
            cert = u.get("certificate") or {}
            certs = []
            if cert.get("sha256"):
                certs.append(CertRecord(
                    slot="9a", fingerprint=cert["sha256"], serial=cert.get("serial"),
                    subject=cert.get("subject"), issuer=cert.get("issuer"),
                    not_after=_parse_time(cert.get("not_after")),
                    certificate_user_ids=u.get("certificate_user_ids") or []))
            store.record_card(KeyRecord(serial=u["serial"], owner_upn=u["upn"]), certs or None)
            result.keys += 1
            result.certificates += len(certs)
    audit = BatchPaths.derive(path).audit
    if audit.exists():
        events = []
        for line in audit.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            ev = audit_event(e.get("step") or "?", e.get("outcome") or "?", e.get("serial"),
                             e.get("upn"), e.get("detail") or "", command="batch enroll",
                             reader=e.get("reader"), fingerprint=e.get("fingerprint"))
            ev.time = _parse_time(e.get("time")) or ev.time
            ev.operator = e.get("operator")
            events.append(ev)
        store.audit(events)
        result.audit = len(events)
    store.audit([audit_event("import", "done", None, detail=f"batch state {path}: "
                             f"{result.users} users, {result.audit} audit rows{note}",
                             command=command)])
    return result


def import_escrow(target: StoreEscrow, source: EscrowFile) -> ImportResult:
    """Copy every entry of an escrow file into the database escrow (re-encrypted under the
    database's keyring; decrypted only in this process's memory)."""
    result = ImportResult(str(source.path))
    for entry in source.read():
        mgmt = bytes.fromhex(entry.mgmt_key) if entry.mgmt_key else None
        target.put(entry.serial, entry.upn, puk=entry.puk.encode() if entry.puk else None,
                   mgmt_key=mgmt, mgmt_key_algorithm=entry.mgmt_key_algorithm)
        result.escrow += 1
    target.store.audit([audit_event("import", "done", None,
                                    detail=f"escrow file {source.path}: {result.escrow} keys",
                                    command="inventory import")])
    return result
