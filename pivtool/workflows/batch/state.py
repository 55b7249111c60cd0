"""The batch's state file (one record per roster user, written ahead of every card change),
its paths and its lock."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import UsageError
from ...core.fileio import atomic_write
from ..roster import RosterRow

if TYPE_CHECKING:
    from ..enroll_options import EnrollResult
    from ..state import CardSnapshot
    from .graphbind import BindLedger


STATE_SCHEMA = "pivtool.batch-state/1"
REPORT_SCHEMA = "pivtool.batch-report/1"
EVENT_SCHEMA = "pivtool.batch-event/1"

#: User states. ``incomplete`` users are bound to a key that holds part of their enrollment
#: and are finished when that key comes back; the last four are final.
PENDING, ENROLLING, INCOMPLETE = "pending", "enrolling", "incomplete"
DONE, FAILED, REASSIGNED = "done", "failed", "reassigned"
FINAL = frozenset({DONE, FAILED, REASSIGNED})
#: Attempts on one user before it is left for the operator (status ``failed``).
MAX_ATTEMPTS = 3
#: Enroller steps that change nothing on the card: a failure there leaves the key as it was,
#: so the user is released instead of being bound to the key.
READ_ONLY_STEPS = frozenset({"read card", "check slots"})
#: Microsoft Graph JSON batching allows at most 20 requests per $batch body.


def now_iso() -> str:
    """UTC time with milliseconds (the audit log orders events of parallel readers)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# --------------------------------------------------------------------------------------------
# Where everything goes


@dataclass
class BatchPaths:
    """The files of one batch. Everything but the roster derives from the state file's name
    unless given, so a re-run with the same ``--state`` finds the same outputs."""

    state: Path
    audit: Path
    report: Path  # base name: <report>.json and <report>.csv
    graph: Path  # prefix: <graph>-001.json, <graph>-002.json...
    backups: Path
    pin_letters: Path | None = None

    @property
    def lock(self) -> Path:
        """The lock file that keeps a second batch off this state (the JSON file's lock,
        also for its database: an older pivtool still running on the file is kept off)."""
        return self.state.with_name(self.state.name + ".lock")

    @property
    def database(self) -> Path:
        """The state's SQLite database (the default state): beside the JSON state file,
        ``.json`` replaced by ``.db`` (``X.state.json`` -> ``X.state.db``), or ``.db``
        appended to a name without ``.json``."""
        return self.state.with_name(self.state.name.removesuffix(".json") + ".db")

    @classmethod
    def derive(cls, state: str | Path, audit: str | Path | None = None,
               report: str | Path | None = None, graph: str | Path | None = None,
               pin_letters: str | Path | None = None) -> BatchPaths:
        """Fill in the defaults: ``X.state.json`` gives ``X.audit.jsonl``, ``X.report.json``
        and ``.csv``, ``X.graph-NNN.json`` and ``X.backups/``. A state named by its database
        (``X.state.db``) stands for the JSON name beside it (``X.state.json``)."""
        state = Path(state)
        if state.suffix == ".db":
            state = state.with_suffix(".json")
        name = state.name
        for suffix in (".json", ".state"):
            name = name.removesuffix(suffix)
        base = state.with_name(name)
        rep = Path(report) if report else Path(f"{base}.report")
        if rep.suffix in (".json", ".csv"):
            rep = rep.with_suffix("")
        gr = Path(graph) if graph else Path(f"{base}.graph")
        if gr.suffix == ".json":
            gr = gr.with_suffix("")
        return cls(state=state, audit=Path(audit) if audit else Path(f"{base}.audit.jsonl"),
                   report=rep, graph=gr, backups=Path(f"{base}.backups"),
                   pin_letters=Path(pin_letters) if pin_letters else None)


@contextlib.contextmanager
def state_lock(paths: BatchPaths) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the state's lock file, or refuse at once (exit 2): two
    batches on one state file would hand the same user to two keys."""
    import fcntl

    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode("ascii", "replace").strip()
            who = f" (PID {other})" if other.isdigit() else ""
            raise UsageError(f"another batch is running on {paths.state}{who}; wait for it "
                             "or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiter)


@dataclass
class UserOptions:
    """What the roster asked for one user (no secrets: a roster holds none)."""

    emails: list[str]
    display_name: str | None
    serial: int | None  # pinned to one key, or any key
    algorithm: str
    pin_policy: str
    touch_policy: str
    policies: list[str]

    @classmethod
    def from_row(cls, row: RosterRow) -> UserOptions:
        """The options of a valid roster row."""
        return cls.from_json(row.options_json())

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UserOptions:
        """Read the state file's ``options`` object."""
        return cls(emails=list(doc["emails"]), display_name=doc.get("display_name"),
                   serial=doc.get("serial"), algorithm=doc["algorithm"],
                   pin_policy=doc["pin_policy"], touch_policy=doc["touch_policy"],
                   policies=list(doc["policies"]))

    def to_json(self) -> dict[str, Any]:
        """The state file's ``options`` object."""
        return asdict(self)


@dataclass
class CertRecord:
    """The certificate a user got (what the report and the audit need, no more)."""

    sha256: str
    serial: str | None = None
    subject: str | None = None
    issuer: str | None = None
    not_after: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The state file's ``certificate`` object."""
        return asdict(self)


@dataclass
class UserRecord:
    """One roster user in the state file. ``steps``, ``history`` and
    ``certificate_user_ids`` are logs kept as JSON objects, written as they came."""

    upn: str
    row: int
    options: UserOptions
    in_roster: bool = True
    status: str = PENDING
    serial: int | None = None  # the key bound to this user
    reader: str | None = None
    attempts: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    last_step: str | None = None
    error: str | None = None
    started: str | None = None
    finished: str | None = None
    certificate: CertRecord | None = None
    certificate_user_ids: list[dict[str, Any]] = field(default_factory=list)
    pin_letter: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_failed_step: str | None = None
    #: ``--graph-bind``: the Entra binding (status, values, attempts...), see
    #: :mod:`~pivtool.workflows.batch.graphbind`; None until a bind is tried.
    graph: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> UserRecord:
        """Read one user of the state file."""
        cert = doc.get("certificate")
        return cls(upn=doc["upn"], row=doc["row"], options=UserOptions.from_json(doc["options"]),
                   in_roster=doc["in_roster"], status=doc["status"], serial=doc["serial"],
                   reader=doc["reader"], attempts=doc["attempts"], steps=list(doc["steps"]),
                   last_step=doc["last_step"], error=doc["error"], started=doc["started"],
                   finished=doc["finished"],
                   certificate=CertRecord(**cert) if cert else None,
                   certificate_user_ids=list(doc["certificate_user_ids"]),
                   pin_letter=doc["pin_letter"], history=list(doc["history"]),
                   last_failed_step=doc.get("last_failed_step"), graph=doc.get("graph"))

    def to_json(self) -> dict[str, Any]:
        """One user of the state file (``last_failed_step`` only once a step failed,
        ``graph`` once a bind was tried)."""
        doc: dict[str, Any] = {
            "upn": self.upn, "row": self.row, "options": self.options.to_json(),
            "in_roster": self.in_roster, "status": self.status, "serial": self.serial,
            "reader": self.reader, "attempts": self.attempts, "steps": self.steps,
            "last_step": self.last_step, "error": self.error, "started": self.started,
            "finished": self.finished,
            "certificate": self.certificate.to_json() if self.certificate else None,
            "certificate_user_ids": self.certificate_user_ids, "pin_letter": self.pin_letter,
            "history": self.history}
        if self.last_failed_step is not None:
            doc["last_failed_step"] = self.last_failed_step
        if self.graph is not None:
            doc["graph"] = self.graph
        return doc



# --------------------------------------------------------------------------------------------
# The state file


class BatchState:
    """The JSON state file: one record per roster user, saved atomically after every change.

    Thread-safe: every change happens under :attr:`lock` and is followed by :meth:`save`.
    ``batch.dbstate.DbBatchState`` is the same interface on the inventory database.
    """

    #: A failure of the state's storage that must stop the batch (the database's; a state
    #: file's write errors are raised where they happen).
    fatal: BaseException | None = None

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        #: The file's other fields (schema, created, updated, roster, invalid_rows).
        self.doc = {k: v for k, v in doc.items() if k != "users"}
        #: UPN -> user record (insertion order = roster order).
        self.users: dict[str, UserRecord] = {
            upn: UserRecord.from_json(u) for upn, u in doc.get("users", {}).items()}
        self.lock = threading.RLock()

    @classmethod
    def load(cls, path: Path) -> BatchState:
        """Read the state file, or start an empty one."""
        if not path.exists():
            return cls(path, {"schema": STATE_SCHEMA, "created": now_iso(), "updated": None,
                              "roster": None, "invalid_rows": [], "users": {}})
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read the batch state {path}: {e}") from None
        if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
            raise UsageError(f"{path} is not a pivtool batch state file")
        try:
            state = cls(path, doc)
        except (KeyError, TypeError, AttributeError) as e:
            raise UsageError(f"{path}: a user record is damaged ({e})") from None
        for user in state.users.values():
            if user.status == ENROLLING:
                # The previous run died mid-enrollment: the key holds part of it.
                user.status = INCOMPLETE
                user.error = user.error or "interrupted (the batch stopped)"
        return state

    @property
    def name(self) -> str:
        """What messages and reports call this state: its file."""
        return str(self.path)

    def save(self) -> None:
        """Write the whole state atomically (0600: it names who holds which key)."""
        with self.lock:
            self.doc["updated"] = now_iso()
            doc = {**self.doc, "users": {upn: u.to_json() for upn, u in self.users.items()}}
            atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode())

    def find(self, upn: str) -> UserRecord | None:
        """The user record for *upn* (UPNs compare case-insensitively, as in Entra)."""
        key = upn.casefold()
        return next((u for u in self.users.values() if u.upn.casefold() == key), None)

    def merge_roster(self, roster: str, rows: list[RosterRow]) -> None:
        """Bring the roster into the state. Users already started keep their record (their
        key is bound); pending users take the roster's current options; rows no longer in
        the roster are kept but never enrolled."""
        with self.lock:
            self.doc["roster"] = roster
            self.doc["invalid_rows"] = [{"row": r.row, "upn": r.upn, "error": r.error}
                                        for r in rows if r.error]
            present = set()
            for row in rows:
                if row.error:
                    continue
                present.add(row.upn.casefold())
                user = self.find(row.upn)
                if user is None:
                    self.users[row.upn] = UserRecord(row.upn, row.row,
                                                     UserOptions.from_row(row))
                elif user.status == PENDING:
                    user.row = row.row
                    user.options = UserOptions.from_row(row)
            for user in self.users.values():
                user.in_roster = user.upn.casefold() in present
            self.save()

    def bound_to(self, serial: int) -> UserRecord | None:
        """The user whose enrollment is (or was) on the key with *serial*."""
        return next((u for u in self.users.values()
                     if u.serial == serial and u.status != REASSIGNED), None)

    def record_enrolled(self, card: CardSnapshot, user: UserRecord,
                        result: EnrollResult) -> None:
        """The key is enrolled: nothing more for a state file (the inventory database
        records the key and its certificate)."""

    def next_pending(self, serial: int, reader: str = "") -> UserRecord | None:
        """The user for a free key: one pinned to *serial* first, else the first pending user
        pinned to no key (roster order). (*reader* matters only to the database state.)"""
        pending = [u for u in self.users.values()
                   if u.status == PENDING and u.in_roster]
        pinned = next((u for u in pending if u.options.serial == serial), None)
        if pinned is not None:
            return pinned
        return next((u for u in pending if u.options.serial is None), None)

    def open_users(self) -> list[UserRecord]:
        """Roster users not yet in a final state."""
        return [u for u in self.users.values() if u.in_roster and u.status not in FINAL]

    def counts(self) -> dict[str, int]:
        """Users per status, plus the invalid roster rows."""
        out = {s: 0 for s in (PENDING, ENROLLING, INCOMPLETE, DONE, FAILED, REASSIGNED)}
        for u in self.users.values():
            if u.in_roster or u.status in FINAL:
                out[u.status] += 1
        out["invalid"] = len(self.doc["invalid_rows"])
        return out

    def graph_ledger(self) -> BindLedger:
        """Where ``--graph-bind`` writes its bindings ahead: this file."""
        from .graphbind import FileBinds

        return FileBinds(self)
