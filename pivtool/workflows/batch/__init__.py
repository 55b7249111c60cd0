"""Helpdesk batch enrollment: many keys, many users, unattended, resumable, audited.

A :class:`BatchRunner` watches a :class:`CardSource` — the PC/SC readers (one blocking
``SCardGetStatusChange`` monitor), or a pile of virtual YubiKeys taken in turn by virtual
readers (``--sim-pile``) — and gives every inserted YubiKey to one worker thread per reader,
which enrolls the next pending roster user onto it with the ordinary
:class:`~pivtool.workflows.enroll.Enroller`. Readers work in parallel; a slow or failed card
holds up only its own reader.

Exactly-once rests on write-ahead records, each written atomically before the card changes:

* the **state file** binds a user to a key serial (status ``enrolling``) before the first
  APDU that changes the card, and records every finished step (the Enroller's ``on_step``);
* the user's new PIN goes to their 0600 **PIN letter** (``--pin-letters``) and a random PUK to
  the encrypted **escrow** before CHANGE REFERENCE runs, so a key pulled (or a batch killed)
  between two steps never holds a PIN or PUK that nobody knows.

On insertion a key is matched against both the state file (by serial) and the UPN of its 9a
certificate: a key done for one user is never silently given to another (``reassign`` wipes
it with a PIV reset first), and a key bound to a user whose enrollment stopped half-way is
finished for that same user (the Enroller re-runs with ``force``, replacing the half-made 9a
key). Secrets never reach the state file, the audit log, the reports or the events.
"""

from __future__ import annotations

from ...core.events import CardSource
from .options import BatchEvent, BatchOptions, BatchSummary, SecretPolicy
from .outputs import (
    GRAPH_BATCH_LIMIT,
    PIN_LETTER_LINE,
    REPORT_COLUMNS,
    AuditLog,
    fingerprint,
    graph_batches,
    graph_values,
    prepare_letter_dir,
    read_pin_letter,
    report_csv,
    report_json,
    write_pin_letter,
    write_reports,
)
from .runner import BatchRunner
from .state import (
    DONE,
    ENROLLING,
    EVENT_SCHEMA,
    FAILED,
    FINAL,
    INCOMPLETE,
    MAX_ATTEMPTS,
    PENDING,
    READ_ONLY_STEPS,
    REASSIGNED,
    REPORT_SCHEMA,
    STATE_SCHEMA,
    BatchPaths,
    BatchState,
    now_iso,
    state_lock,
)

__all__ = [
    "DONE", "ENROLLING", "EVENT_SCHEMA", "FAILED", "FINAL", "GRAPH_BATCH_LIMIT", "INCOMPLETE",
    "MAX_ATTEMPTS", "PENDING", "PIN_LETTER_LINE", "READ_ONLY_STEPS", "REASSIGNED",
    "REPORT_COLUMNS", "REPORT_SCHEMA", "STATE_SCHEMA", "AuditLog", "BatchEvent",
    "BatchOptions", "BatchPaths", "BatchRunner", "BatchState", "BatchSummary", "CardSource",
    "SecretPolicy", "fingerprint", "graph_batches", "graph_values", "now_iso",
    "prepare_letter_dir", "read_pin_letter", "report_csv", "report_json", "state_lock",
    "write_pin_letter", "write_reports",
]
