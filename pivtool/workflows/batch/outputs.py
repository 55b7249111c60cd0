"""What a batch leaves behind besides its state: the audit log, the users' PIN letters, the
JSON/CSV reports and the Microsoft Graph ``$batch`` files. None holds a secret but the
PIN letters (0600, in a 0700 directory)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ...core.csvsafe import spreadsheet_safe
from ...core.errors import UsageError
from ...core.fileio import atomic_write
from .state import DONE, REPORT_SCHEMA, BatchPaths, BatchState, now_iso

if TYPE_CHECKING:
    pass

GRAPH_BATCH_LIMIT = 20
PIN_LETTER_LINE = "Initial PIN: "


# --------------------------------------------------------------------------------------------
# The audit log


class AuditLog:
    """Append-only JSON lines, one per event, fsynced (an audit trail that loses its last
    lines in a crash is no trail). Fields: time, operator, reader, serial, upn, step,
    outcome, detail, fingerprint — never a secret."""

    def __init__(self, path: Path, operator: str) -> None:
        self.path = path
        self.operator = operator
        self._lock = threading.Lock()

    def write(self, step: str, outcome: str, reader: str | None = None,
              serial: int | None = None, upn: str | None = None, detail: str = "",
              fingerprint: str | None = None) -> None:
        """Append one line, fsynced."""
        self.append(step, outcome, reader, serial, upn, detail, fingerprint, sync=True)

    def append(self, step: str, outcome: str, reader: str | None, serial: int | None,
               upn: str | None, detail: str, fingerprint: str | None, sync: bool) -> None:
        """Append one line; *sync*: fsync it (and every line before it) before returning.
        Unsynced, a crash of pivtool loses nothing (the line is the kernel's); a power cut
        may lose the lines since the last fsync."""
        line = json.dumps({"time": now_iso(), "operator": self.operator, "reader": reader,
                           "serial": serial, "upn": upn, "step": step, "outcome": outcome,
                           "detail": detail, "fingerprint": fingerprint}) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------------------------
# PIN letters


def _letter_name(upn: str) -> str:
    from ..roster import pin_letter_name

    return pin_letter_name(upn)


def prepare_letter_dir(directory: Path) -> None:
    """Create the PIN-letter directory 0700, or refuse one others can read."""
    if directory.exists():
        if not directory.is_dir():
            raise UsageError(f"{directory} is not a directory")
        if directory.stat().st_mode & 0o077:
            raise UsageError(f"{directory} is readable by other users; PIN letters need a "
                             "directory only you can read (chmod 700)")
        return
    try:
        directory.mkdir(mode=0o700, parents=True)
    except OSError as e:
        raise UsageError(f"cannot create {directory}: {e.strerror}") from None


def write_pin_letter(directory: Path, upn: str, serial: int, pin: bytes) -> Path:
    """Write (or replace) the user's PIN letter, 0600, atomically."""
    path = directory / _letter_name(upn)
    text = (f"pivtool PIN letter\n\nUser: {upn}\nYubiKey serial: {serial}\n"
            f"{PIN_LETTER_LINE}{pin.decode()}\n\n"
            "Keep this letter private. The PIN unlocks the smart-card certificate for\n"
            "Microsoft Entra sign-in; change it on first use (Yubico Authenticator, or\n"
            "'pivtool pin change'). Three wrong PINs lock the key: call the helpdesk.\n")
    atomic_write(path, text.encode())
    return path


def read_pin_letter(directory: Path, upn: str) -> bytes | None:
    """The PIN in the user's letter, if there is one."""
    path = directory / _letter_name(upn)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(PIN_LETTER_LINE):
            return line[len(PIN_LETTER_LINE):].strip().encode()
    return None


def fingerprint(cert: Any) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------------------------
# Reports


def graph_values(ids: list[dict[str, Any]], limit: int = 10) -> list[str]:
    """The values for the Graph PATCH body: high-affinity first, then the UPN (as
    ``pivtool entra ids --graph``), at most *limit*, none over Entra's 1024 characters."""
    from ...certs.entra import CertUserId, graph_selection

    chosen, _ = graph_selection([CertUserId(**i) for i in ids], limit)
    return [i.value for i in chosen]


def graph_batches(state: BatchState) -> list[dict[str, Any]]:
    """Microsoft Graph JSON ``$batch`` bodies, one PATCH /users/{upn} per enrolled user, at
    most :data:`GRAPH_BATCH_LIMIT` requests each. The PATCH replaces the user's existing
    certificateUserIds."""
    from ...certs.entra import graph_patch_body

    requests = []
    for user in state.users.values():
        if user.status != DONE or not user.certificate_user_ids:
            continue
        body = graph_patch_body(graph_values(user.certificate_user_ids))
        requests.append({"method": "PATCH", "url": "/users/" + quote(user.upn, safe="@."),
                         "headers": {"Content-Type": "application/json"}, "body": body})
    out = []
    for start in range(0, len(requests), GRAPH_BATCH_LIMIT):
        chunk = requests[start:start + GRAPH_BATCH_LIMIT]
        # Request ids only need to be unique within one $batch body.
        out.append({"requests": [{"id": str(n), **r} for n, r in enumerate(chunk, 1)]})
    return out


def report_json(state: BatchState) -> dict[str, Any]:
    """The JSON report: one entry per user and per bad roster row (no secrets)."""
    users = []
    for u in state.users.values():
        users.append({"row": u.row, "upn": u.upn, "status": u.status,
                      "in_roster": u.in_roster, "serial": u.serial,
                      "reader": u.reader, "attempts": u.attempts,
                      "last_step": u.last_step, "error": u.error,
                      "finished": u.finished,
                      "certificate": u.certificate.to_json() if u.certificate else None,
                      "certificate_user_ids": u.certificate_user_ids,
                      "pin_letter": u.pin_letter, "graph": u.graph})
    return {"schema": REPORT_SCHEMA, "generated": now_iso(), "roster": state.doc["roster"],
            "state": state.name, "counts": state.counts(), "users": users,
            "invalid_rows": state.doc["invalid_rows"]}


REPORT_COLUMNS = ["row", "upn", "status", "serial", "reader", "attempts", "last_step",
                  "certificate_sha256", "certificate_serial", "not_after",
                  "certificate_user_ids", "error", "graph"]


def report_csv(state: BatchState) -> str:
    """The CSV report: one line per user, then one per bad roster row; certificateUserIds
    joined with `` | ``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)

    def row(cells: list[Any]) -> None:  # roster text must not become a formula
        w.writerow([spreadsheet_safe(c) if isinstance(c, str) else c for c in cells])

    for u in state.users.values():
        cert = u.certificate.to_json() if u.certificate else {}
        row([u.row, u.upn, u.status, u.serial or "", u.reader or "",
             u.attempts, u.last_step or "", cert.get("sha256", ""),
             cert.get("serial", ""), cert.get("not_after", ""),
             " | ".join(i["value"] for i in u.certificate_user_ids),
             u.error or "", (u.graph or {}).get("status", "")])
    for bad in state.doc["invalid_rows"]:
        row([bad["row"], bad["upn"], "invalid", "", "", 0, "", "", "", "", "",
             bad["error"], ""])
    return buf.getvalue()


def write_reports(state: BatchState, paths: BatchPaths) -> list[Path]:
    """Write the JSON and CSV reports and the Graph batch files; return their paths. Stale
    Graph files of an earlier, longer run are removed."""
    written = []
    with state.lock:
        rep_json = paths.report.with_name(paths.report.name + ".json")
        rep_csv = paths.report.with_name(paths.report.name + ".csv")
        atomic_write(rep_json, (json.dumps(report_json(state), indent=2) + "\n").encode(),
                     0o644)
        atomic_write(rep_csv, report_csv(state).encode(), 0o644)
        written += [rep_json, rep_csv]
        batches = graph_batches(state)
        for n, body in enumerate(batches, 1):
            path = paths.graph.with_name(f"{paths.graph.name}-{n:03d}.json")
            atomic_write(path, (json.dumps(body, indent=2) + "\n").encode(), 0o644)
            written.append(path)
        n = len(batches) + 1
        while True:
            stale = paths.graph.with_name(f"{paths.graph.name}-{n:03d}.json")
            if not stale.exists():
                break
            stale.unlink()
            n += 1
    return written
