"""The batch state in the inventory database: many desks, one roster, each user enrolled
exactly once (``pivtool batch enroll --db URL --desk NAME``).

:class:`DbBatchState` offers the worker the interface of the file :class:`BatchState`
(``bound_to``, ``next_pending``, ``save``, ``counts``...), so the card handling is the same
code for one desk and for many. What changes is where the truth lives:

* ``next_pending`` *claims* the user in the database — one ``UPDATE`` whose subquery takes
  the row with ``FOR UPDATE SKIP LOCKED`` — before anything changes on the card: two desks
  never get the same user, and never wait on each other's rows;
* the claim carries a **lease**, renewed by a heartbeat thread for every user this desk is
  enrolling. A desk that dies leaves its users ``enrolling``; its own re-run turns them
  ``incomplete`` (bound to their key) and finishes them when the key comes back; another
  desk takes such a user only once the lease ran out and the key is inserted there;
* ``save`` writes only what changed in the users this desk holds, and on PostgreSQL not
  the per-step progress (the audit rows carry the steps): a desk costs the database a
  handful of round trips per key (docs/performance.md counts them). On SQLite, the batch's
  default state, the step reached is written too (no fsync, no network);
* a database that fails or goes away makes the desk stop (:attr:`fatal`): the key in
  progress keeps its half-made enrollment, bound to its user in the database, and the
  re-run resumes it.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import PivToolError
from .outputs import AuditLog
from .state import ENROLLING, FINAL, INCOMPLETE, PENDING, BatchState, UserRecord

if TYPE_CHECKING:
    from ...store.api import Store
    from ...store.records import AuditEvent
    from ...store.records import UserRecord as DbUser
    from ..enroll_options import EnrollResult
    from ..roster import RosterRow
    from ..state import CardSnapshot
    from .graphbind import BindLedger

#: Default lease of a claim, seconds; the heartbeat renews it every third of that.
LEASE = 60.0
#: The ``meta`` row of a SQLite state: the roster file and its bad rows, for ``batch
#: status`` and ``batch report`` (a state file keeps them; on PostgreSQL each desk reports
#: the bad rows of its own roster file: a desk role may not replace named values).
ROSTER_META = "batch.roster"
#: User fields the database keeps (file-state name -> column).
_COLUMNS = {"status": "status", "serial": "serial", "reader": "claim_reader",
            "attempts": "attempts", "error": "error", "started": "started",
            "finished": "finished", "certificate": "certificate",
            "certificate_user_ids": "certificate_user_ids", "pin_letter": "pin_letter",
            "history": "history", "last_step": "last_step"}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def user_record(rec: DbUser) -> UserRecord:
    """A database user as the state file's :class:`UserRecord`."""
    return UserRecord.from_json({
        "upn": rec.upn, "row": rec.row or 0, "options": rec.options,
        "in_roster": rec.in_roster, "status": rec.status, "serial": rec.serial,
        "reader": rec.claim_reader, "attempts": rec.attempts, "steps": [],
        "last_step": rec.last_step, "error": rec.error, "started": _iso(rec.started),
        "finished": _iso(rec.finished), "certificate": rec.certificate,
        "certificate_user_ids": rec.certificate_user_ids, "pin_letter": rec.pin_letter,
        "history": rec.history, "graph": rec.graph})


class DbBatchState(BatchState):
    """See the module docstring. Thread-safe like :class:`BatchState` (:attr:`lock`)."""

    def __init__(self, store: Store, lease: float = LEASE, path: Path | None = None,
                 audit_file: Path | None = None) -> None:
        # Not BatchState.__init__: there is no file; the same attributes, from the database.
        self.store = store
        self.lease = lease
        self.lock = threading.RLock()
        self.path = path or Path(store.display)
        self._name = str(path) if path is not None else store.display
        self.doc: dict[str, Any] = {"roster": None, "invalid_rows": []}
        self.fatal: BaseException | None = None
        self._held: dict[int, UserRecord] = {}  # user id -> the record the worker holds
        self._written: dict[int, dict[str, Any]] = {}  # its JSON as the database has it
        self._open: tuple[float, list[UserRecord]] | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.audit = StoreAudit(self, audit_file)
        self.binding = 0  # binds of this desk in flight (their leases need the heartbeat)
        self._sqlite = store.dialect == "sqlite"
        if self._sqlite:
            self.doc.update(self._guard(store.meta, ROSTER_META) or {})

    @property
    def name(self) -> str:
        """What messages and reports call this state: the database file of the default
        state (*path*), else the URL without a password."""
        return self._name

    @classmethod
    def open(cls, store: Store, lease: float = LEASE, path: Path | None = None,
             audit_file: Path | None = None) -> DbBatchState:
        """Take over this desk's claims left by a crash (they become ``incomplete``), and
        start the heartbeat. *audit_file*: also append the audit to this JSON-lines file
        (the default state keeps the file a state file had)."""
        state = cls(store, lease, path, audit_file)
        state._guard(store.interrupted)
        state._guard(store.bind_interrupted)
        state._beat = threading.Thread(target=state._heartbeat, daemon=True,
                                       name="pivtool-batch-heartbeat")
        state._beat.start()
        return state

    def close(self) -> None:
        """Stop the heartbeat and write the last audit rows (the store stays open)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
        if self.fatal is None:
            self._guard(self.audit.flush)

    def _guard(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a store call; a database failure is remembered (the runner stops on it), and
        after one nothing more is tried: the desk is stopping."""
        if self.fatal is not None:
            raise self.fatal
        try:
            return f(*args, **kwargs)
        except PivToolError as e:
            from ...store.engine import StoreError

            if isinstance(e, StoreError) and self.fatal is None:
                self.fatal = e
            raise

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self._guard(self.store.heartbeat, self.lease)
                if self.binding:
                    self._guard(self.store.bind_heartbeat, self.lease)
                self._guard(self.audit.flush)
            except PivToolError:
                return

    # --- the roster ------------------------------------------------------------------

    def merge_roster(self, roster: str, rows: list[RosterRow]) -> None:
        """Bring the roster into the database (desks may do it at the same time)."""
        from ...store.records import RosterInput

        self.doc["roster"] = roster
        self.doc["invalid_rows"] = [{"row": r.row, "upn": r.upn, "error": r.error}
                                    for r in rows if r.error]
        self._guard(self.store.merge_roster, roster,
                    [RosterInput(r.row, r.upn, r.options_json()) for r in rows if not r.error])
        if self._sqlite:
            self._guard(self.store.meta_put, ROSTER_META, dict(self.doc))

    @property
    def users(self) -> dict[str, UserRecord]:  # type: ignore[override]
        """UPN -> user record, read now from the database (the whole roster, every desk)."""
        return {u.upn: user_record(u) for u in self._guard(self.store.users)}

    def find(self, upn: str) -> UserRecord | None:
        """The user with *upn*, read now."""
        rec = self._guard(self.store.find, upn)
        return None if rec is None else user_record(rec)

    def open_users(self) -> list[UserRecord]:
        """Roster users not in a final state (re-read at most every two seconds: the
        runner asks twice a second)."""
        now = time.monotonic()
        if self._open is None or now - self._open[0] > 2.0:
            self._open = (now, [u for u in self.users.values()
                                if u.in_roster and u.status not in FINAL])
        return self._open[1]

    def counts(self) -> dict[str, int]:
        """Users per status in the whole roster, plus this desk's invalid rows."""
        out: dict[str, int] = self._guard(self.store.counts)
        out["invalid"] = len(self.doc["invalid_rows"])
        return out

    # --- claims ----------------------------------------------------------------------

    def _hold(self, rec: DbUser, **shown: Any) -> UserRecord:
        user = user_record(rec)
        # A copy: the worker changes the record's lists in place (history).
        self._written[rec.id] = copy.deepcopy(user.to_json())
        for name, value in shown.items():
            setattr(user, name, value)
        self._held[rec.id] = user
        return user

    def bound_to(self, serial: int) -> UserRecord | None:
        """The user whose enrollment is (or was) on *serial*. A claim of this desk, or one
        whose lease ran out, is shown ``incomplete`` (the worker then finishes it); a live
        claim of another desk stays ``enrolling`` (the worker refuses the key as busy)."""
        rec = self._guard(self.store.bound_to, serial)
        if rec is None:
            return None
        from ...store.records import utcnow

        stale = rec.status == ENROLLING and (
            rec.claim_desk == self.store.desk or rec.lease_until is None
            or rec.lease_until < utcnow())
        return self._hold(rec, **({"status": INCOMPLETE} if stale else {}))

    def next_pending(self, serial: int, reader: str = "") -> UserRecord | None:
        """Claim the next pending user for *serial* in the database (pinned to it first),
        shown to the worker as it was before the claim, which the worker then makes."""
        rec = self._guard(self.store.claim_next, reader, serial, self.lease)
        if rec is None:
            return None
        self._open = None
        return self._hold(rec, status=PENDING, serial=None, attempts=rec.attempts - 1,
                          reader=None, started=None)

    def save(self) -> None:
        """Write what changed in the users this desk holds (not the per-step progress)."""
        from ...store.records import utcnow

        with self.lock:
            if self.fatal is not None:
                return  # stopping: the database keeps the claims as they were (resumable)
            for uid, record in list(self._held.items()):
                user, old = record.to_json(), self._written[uid]
                changed = {k for k in _COLUMNS if k != "last_step" and user.get(k) != old.get(k)}
                if self._sqlite and user.get("last_step") != old.get("last_step"):
                    # SQLite: the step reached, as a state file shows it (no fsync, no
                    # network: cheap there, unlike a round trip to PostgreSQL).
                    changed.add("last_step")
                if old["status"] == user["status"] == ENROLLING:
                    changed.discard("started")  # the claim wrote it
                if changed:
                    values = {_COLUMNS[k]: user.get(k) for k in changed | {"last_step"}}
                    for k in ("started", "finished"):
                        if k in values:
                            values[k] = _parse(values[k])
                    if "status" in changed and user["status"] == ENROLLING:
                        now = utcnow()
                        values.update(claim_desk=self.store.desk, heartbeat=now,
                                      lease_until=now + dt.timedelta(seconds=self.lease))
                    self._guard(self.store.update_user, uid, **values)
                    self._written[uid] = copy.deepcopy(user)
                    self._open = None
                if user["status"] in FINAL or user["status"] == PENDING:
                    del self._held[uid]
                    del self._written[uid]

    def record_enrolled(self, card: CardSnapshot, user: UserRecord,
                        result: EnrollResult) -> None:
        """Put the enrolled key and its 9a certificate into the inventory (two statements)."""
        from ...store.records import KeyRecord
        from ..inventory import cert_record

        assert card.serial is not None
        key = KeyRecord(serial=card.serial, model="YubiKey" if card.is_yubikey else "PIV card",
                        firmware=card.version, owner_upn=user.upn)
        self._guard(self.store.record_key_cert, key, cert_record("9a", result.certificate))

    def graph_ledger(self) -> BindLedger:
        """Where ``--graph-bind`` writes its bindings ahead: the ``graph_binds`` table."""
        from .dbgraph import DbBinds

        return DbBinds(self)

    def release(self, upn: str, operator: str) -> UserRecord:
        """Hand *upn* over: unbound from their key, pending for any desk (audited)."""
        from ...store.records import AuditEvent

        rec = self._guard(self.store.release, upn, [AuditEvent(
            "release", "done", upn=upn, operator=operator, command="batch release")])
        return user_record(rec)


#: Audit steps written through at once: into the database, and fsynced in the default
#: state's file (with every line before them). Failures too.
OUTCOME_STEPS = frozenset({"enrolled", "batch", "wipe"})


class StoreAudit(AuditLog):
    """The batch's audit log into the database: rows are buffered and written in one round
    trip at each outcome (:data:`OUTCOME_STEPS`, a failure), each heartbeat and the end.
    With *file* (the default state) every row is also appended to that JSON-lines file at
    once, fsynced at each outcome: a crash loses nothing, a power cut at most the lines of
    the enrollment in progress — a dozen fsyncs per key fewer than the state file's log."""

    def __init__(self, state: DbBatchState, file: Path | None = None) -> None:
        super().__init__(file or state.path, state.store.operator)
        self.state = state
        self.file = file
        self._rows: list[AuditEvent] = []

    def write(self, step: str, outcome: str, reader: str | None = None,
              serial: int | None = None, upn: str | None = None, detail: str = "",
              fingerprint: str | None = None) -> None:
        """Buffer one row (written with the next outcome, heartbeat or the end); with a
        file, append it there at once as well."""
        from ...store.records import AuditEvent

        outcome_row = step in OUTCOME_STEPS or outcome == "failed"
        if self.file is not None:
            self.append(step, outcome, reader, serial, upn, detail, fingerprint,
                        sync=outcome_row)
        with self._lock:
            self._rows.append(AuditEvent(step=step, outcome=outcome, serial=serial, upn=upn,
                                         reader=reader, detail=detail,
                                         fingerprint=fingerprint, command="batch enroll",
                                         operator=self.operator))
        if outcome_row:
            # Never raises: a database failure stops the desk through DbBatchState.fatal.
            with contextlib.suppress(PivToolError):
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows (one round trip)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            try:
                self.state._guard(self.state.store.audit, rows)
            except PivToolError:
                with self._lock:
                    self._rows[:0] = rows  # keep them for a flush that works
                raise
