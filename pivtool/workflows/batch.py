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

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ..core.errors import PivToolError, StepFailedError, TransportError, UsageError
from ..core.events import CardEvent, EventKind
from ..core.fileio import atomic_write
from ..piv.constants import DEFAULT_PIN, DEFAULT_PUK, KeyType, PinPolicy, Slot, TouchPolicy
from .roster import RosterRow

if TYPE_CHECKING:
    from ..core.connection import Connection
    from ..piv.session import PivSession
    from .enroll import EnrollResult, Issuer, Step
    from .escrow import EscrowFile
    from .state import CardState

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
GRAPH_BATCH_LIMIT = 20
PIN_LETTER_LINE = "Initial PIN: "


def now_iso() -> str:
    """UTC time with milliseconds (the audit log orders events of parallel readers)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _random_digits(n: int) -> bytes:
    # Digits only: macOS refuses non-numeric PINs, and iOS shows a numeric keypad.
    return "".join(secrets.choice("0123456789") for _ in range(n)).encode()




# --------------------------------------------------------------------------------------------
# Where the cards come from


class CardSource(Protocol):
    """Readers and the cards in them, as the batch sees them (``pivtool.cardsource`` has the
    PC/SC readers and the virtual pile). Called from several threads: :meth:`wait` from the
    runner's watcher, :meth:`connect` and :meth:`card_done` from the reader workers,
    :meth:`stop` from anywhere."""

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        ...

    @property
    def exhausted(self) -> bool:
        """No card will ever arrive again (a pile that ran out); False for real readers."""
        ...

    def wait(self, timeout: float | None = None) -> list[CardEvent]:
        """Block until something happens; return the events ([] after :meth:`stop`)."""
        ...

    def connect(self, reader: str) -> Connection:
        """Open the card in *reader*."""
        ...

    def card_done(self, reader: str) -> None:
        """The batch is done with the card in *reader* ("remove the key")."""
        ...

    def stop(self) -> None:
        """Make :meth:`wait` return; safe from any thread."""
        ...

    def close(self) -> None:
        """Release the source (after the waiting thread returned)."""
        ...


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
        """The lock file that keeps a second batch off this state file."""
        return self.state.with_name(self.state.name + ".lock")

    @classmethod
    def derive(cls, state: str | Path, audit: str | Path | None = None,
               report: str | Path | None = None, graph: str | Path | None = None,
               pin_letters: str | Path | None = None) -> BatchPaths:
        """Fill in the defaults: ``X.state.json`` gives ``X.audit.jsonl``, ``X.report.json``
        and ``.csv``, ``X.graph-NNN.json`` and ``X.backups/``."""
        state = Path(state)
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


# --------------------------------------------------------------------------------------------
# The state file


class BatchState:
    """The JSON state file: one record per roster user, saved atomically after every change.

    Thread-safe: every change happens under :attr:`lock` and is followed by :meth:`save`.
    """

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
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
        state = cls(path, doc)
        for user in state.users.values():
            if user["status"] == ENROLLING:
                # The previous run died mid-enrollment: the key holds part of it.
                user["status"] = INCOMPLETE
                user["error"] = user.get("error") or "interrupted (the batch stopped)"
        return state

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """UPN -> user record (insertion order = roster order)."""
        users: dict[str, dict[str, Any]] = self.doc["users"]
        return users

    def save(self) -> None:
        """Write the whole state atomically (0600: it names who holds which key)."""
        with self.lock:
            self.doc["updated"] = now_iso()
            atomic_write(self.path, (json.dumps(self.doc, indent=2) + "\n").encode())

    def find(self, upn: str) -> dict[str, Any] | None:
        """The user record for *upn* (UPNs compare case-insensitively, as in Entra)."""
        key = upn.casefold()
        return next((u for u in self.users.values() if u["upn"].casefold() == key), None)

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
                    self.users[row.upn] = {
                        "upn": row.upn, "row": row.row, "options": row.options_json(),
                        "in_roster": True, "status": PENDING, "serial": None, "reader": None,
                        "attempts": 0, "steps": [], "last_step": None, "error": None,
                        "started": None, "finished": None, "certificate": None,
                        "certificate_user_ids": [], "pin_letter": None, "history": []}
                elif user["status"] == PENDING:
                    user["row"] = row.row
                    user["options"] = row.options_json()
            for user in self.users.values():
                user["in_roster"] = user["upn"].casefold() in present
            self.save()

    def bound_to(self, serial: int) -> dict[str, Any] | None:
        """The user whose enrollment is (or was) on the key with *serial*."""
        return next((u for u in self.users.values()
                     if u["serial"] == serial and u["status"] != REASSIGNED), None)

    def next_pending(self, serial: int) -> dict[str, Any] | None:
        """The user for a free key: one pinned to *serial* first, else the first pending user
        pinned to no key (roster order)."""
        pending = [u for u in self.users.values()
                   if u["status"] == PENDING and u["in_roster"]]
        pinned = next((u for u in pending if u["options"].get("serial") == serial), None)
        if pinned is not None:
            return pinned
        return next((u for u in pending if u["options"].get("serial") is None), None)

    def open_users(self) -> list[dict[str, Any]]:
        """Roster users not yet in a final state."""
        return [u for u in self.users.values() if u["in_roster"] and u["status"] not in FINAL]

    def counts(self) -> dict[str, int]:
        """Users per status, plus the invalid roster rows."""
        out = {s: 0 for s in (PENDING, ENROLLING, INCOMPLETE, DONE, FAILED, REASSIGNED)}
        for u in self.users.values():
            if u["in_roster"] or u["status"] in FINAL:
                out[u["status"]] += 1
        out["invalid"] = len(self.doc["invalid_rows"])
        return out


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
        """Append one line."""
        line = json.dumps({"time": now_iso(), "operator": self.operator, "reader": reader,
                           "serial": serial, "upn": upn, "step": step, "outcome": outcome,
                           "detail": detail, "fingerprint": fingerprint}) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------------------------
# PIN letters


def _letter_name(upn: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]", "_", upn) + ".txt"


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


# --------------------------------------------------------------------------------------------
# Options, events, results


@dataclass
class SecretPolicy:
    """Where PINs and PUKs come from. ``repr`` hides the values."""

    pin_letters: Path | None = None  # random PIN per user, written to a letter first
    new_pin: bytes | None = field(default=None, repr=False)  # one PIN for every user
    new_puk: bytes | None = field(default=None, repr=False)  # None: random, escrowed
    pin: bytes | None = field(default=None, repr=False)  # current PIN of keys not from here
    puk: bytes | None = field(default=None, repr=False)
    mgmt_key: bytes | None = field(default=None, repr=False)

    def check(self, escrow: EscrowFile | None) -> None:
        """Refuse combinations that would set a PIN or PUK nobody records."""
        if self.pin_letters is None and self.new_pin is None:
            raise UsageError("choose the users' PINs: --pin-letters DIR (a random PIN per "
                             "user, written to a 0600 letter) or one PIN for all "
                             "(PIVTOOL_NEW_PIN or --new-pin-file)")
        if self.pin_letters is not None and self.new_pin is not None:
            raise UsageError("--pin-letters sets a random PIN per user; do not also give "
                             "PIVTOOL_NEW_PIN / --new-pin-file")
        if self.new_puk is None and escrow is None:
            raise UsageError("choose the PUKs: --escrow FILE (a random PUK per key, kept "
                             "encrypted) or one PUK for all (PIVTOOL_NEW_PUK or "
                             "--new-puk-file)")
        from ..piv.session import pin_bytes

        for value, what, default in ((self.new_pin, "new PIN", DEFAULT_PIN),
                                     (self.new_puk, "new PUK", DEFAULT_PUK)):
            if value is not None:
                pin_bytes(value, what)
                if value == default:
                    raise UsageError(f"the {what} must not be the factory default")


@dataclass
class BatchOptions:
    """How to run the batch (secrets live in :class:`SecretPolicy`)."""

    issuer: Issuer
    secrets: SecretPolicy
    readers: list[str] = field(default_factory=list)  # substrings; empty = every reader
    escrow: EscrowFile | None = None
    reassign: bool = False
    max_cards: int | None = None
    idle_timeout: float | None = None
    operator: str = "unknown"
    allow_last_try: bool = False
    macos: bool = False
    allow_non_ios: bool = False


@dataclass
class BatchEvent:
    """One progress event (``--json`` prints each as a line). ``kind``: inserted, enrolling,
    step, done, failed, refused, wiped, remove-card, removed, stopped."""

    kind: str
    reader: str | None = None
    serial: int | None = None
    upn: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        """One JSON object."""
        return {"schema": EVENT_SCHEMA, "event": self.kind, "time": self.time,
                "reader": self.reader, "serial": self.serial, "upn": self.upn, **self.data}


@dataclass
class BatchSummary:
    """How a run ended."""

    reason: str  # complete, max-cards, timeout, pile-empty, interrupted
    counts: dict[str, int]
    enrolled_this_run: int
    per_reader: dict[str, dict[str, int]]

    @property
    def ok(self) -> bool:
        """Nothing failed and no roster row was bad."""
        return self.counts[FAILED] == 0 and self.counts["invalid"] == 0

    def to_json(self) -> dict[str, Any]:
        """JSON form (also the ``stopped`` event's data)."""
        return {"reason": self.reason, "counts": self.counts,
                "enrolled_this_run": self.enrolled_this_run, "per_reader": self.per_reader}


class _Refusal(Exception):
    """A key the batch will not enroll (already someone's, unknown PIN...)."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


@dataclass
class _Claim:
    user: dict[str, Any]
    resume: bool
    wipe: bool
    force: bool


class _LockedIssuer:
    """Serialises issuance: the lab CA keeps its serial index in files and takes one writer
    at a time."""

    def __init__(self, inner: Issuer) -> None:
        self.inner = inner
        self.description = inner.description
        self._lock = threading.Lock()

    def issue(self, csr_pem: bytes) -> bytes:
        """Issue under the lock."""
        with self._lock:
            return self.inner.issue(csr_pem)

    def ca_certificates(self) -> list[Any]:
        """The inner issuer's CA certificates."""
        with self._lock:
            return self.inner.ca_certificates()


def fingerprint(cert: Any) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------------------------
# The runner


class BatchRunner:
    """Runs one batch: a reader monitor thread, one worker thread per reader, and the
    caller's thread deciding when to stop (:meth:`run`)."""

    def __init__(self, state: BatchState, paths: BatchPaths, options: BatchOptions,
                 source: CardSource,
                 on_event: Callable[[BatchEvent], None] | None = None) -> None:
        from .enroll import LabCAIssuer

        self.source = source
        self.state = state
        self.paths = paths
        self.o = options
        self.issuer: Issuer = (_LockedIssuer(options.issuer)
                               if isinstance(options.issuer, LabCAIssuer) else options.issuer)
        self.audit = AuditLog(paths.audit, options.operator)
        self._on_event = on_event or (lambda e: None)
        self._emit_lock = threading.Lock()
        self._cond = threading.Condition()
        self._stop_requested = threading.Event()
        self._busy = 0
        self._enrolled = 0
        self._accepting = True
        self._last_activity = time.monotonic()
        self._fatal: BaseException | None = None
        self._workers: dict[str, _ReaderWorker] = {}
        self.per_reader: dict[str, dict[str, int]] = {}

    # --- events ----------------------------------------------------------------------

    def emit(self, event: BatchEvent) -> None:
        """Hand an event to the caller, one at a time."""
        with self._emit_lock:
            self._on_event(event)

    def _touch(self) -> None:
        with self._cond:
            self._last_activity = time.monotonic()
            self._cond.notify_all()

    def _tally(self, reader: str, what: str) -> None:
        with self._cond:
            row = self.per_reader.setdefault(reader, {"done": 0, "failed": 0, "refused": 0})
            row[what] += 1

    def request_stop(self) -> None:
        """Stop taking cards; cards in progress finish. Safe from a signal handler (sets a
        flag only; :meth:`run` notices within half a second)."""
        self._stop_requested.set()

    # --- the main loop ---------------------------------------------------------------

    def run(self) -> BatchSummary:
        """Watch the readers until every roster user is done (or failed), ``max_cards`` keys
        were enrolled, ``idle_timeout`` seconds passed without activity, or
        :meth:`request_stop`. Returns how it ended; the state is saved throughout."""
        for bad in self.state.doc["invalid_rows"]:
            self.audit.write("roster", "invalid", upn=bad["upn"] or None, detail=bad["error"])
        monitor = self.source
        watcher = threading.Thread(target=self._watch, args=(monitor,), daemon=True,
                                   name="pivtool-batch-monitor")
        watcher.start()
        reason = "interrupted"
        try:
            while True:
                with self._cond:
                    why = self._stop_reason()
                    if why:
                        reason = why
                        break
                    # Not polling the card: the monitor blocks in SCardGetStatusChange. This
                    # wait only bounds how late a stop request or the idle timer is noticed.
                    self._cond.wait(0.5)
        finally:
            with self._cond:
                self._accepting = False
            monitor.stop()
            watcher.join(5)
            workers = list(self._workers.values())
            for w in workers:
                w.queue.put(None)
            for w in workers:
                w.join()  # cards in progress finish (a second Ctrl-C aborts the join)
            monitor.close()
            self.state.save()
        if self._fatal is not None:
            raise self._fatal
        summary = BatchSummary(reason, self.state.counts(), self._enrolled,
                               dict(self.per_reader))
        self.audit.write("batch", "stopped", detail=reason)
        self.emit(BatchEvent("stopped", data=summary.to_json()))
        return summary

    def _stop_reason(self) -> str | None:
        if self._fatal is not None:
            return "error"
        if self._stop_requested.is_set():
            return "interrupted"
        if self._busy:
            return None
        if not self.state.open_users():
            return "complete"
        if self.o.max_cards is not None and self._enrolled >= self.o.max_cards:
            return "max-cards"
        if (self.o.idle_timeout is not None
                and time.monotonic() - self._last_activity >= self.o.idle_timeout):
            return "timeout"
        if self.source.exhausted:
            return "pile-empty"
        return None

    def _wanted(self, reader: str) -> bool:
        if not self.o.readers or any(r.casefold() == "all" for r in self.o.readers):
            return True
        return any(r.casefold() in reader.casefold() for r in self.o.readers)

    def _watch(self, monitor: CardSource) -> None:
        try:
            while not monitor.stopped:
                for event in monitor.wait():
                    if event.kind not in (EventKind.INSERTED, EventKind.REMOVED):
                        continue
                    if not self._wanted(event.reader):
                        continue
                    self._touch()
                    worker = self._workers.get(event.reader)
                    if worker is None:
                        worker = _ReaderWorker(self, event.reader)
                        self._workers[event.reader] = worker
                        worker.start()
                    worker.queue.put(event)
        except BaseException as e:  # pcscd gone: end the run with the error
            with self._cond:
                self._fatal = e
                self._cond.notify_all()

    # --- one card --------------------------------------------------------------------

    def handle_card(self, reader: str) -> None:
        """Enroll the card just inserted into *reader* (runs in the reader's worker)."""
        from ..piv.session import PivSession
        from .state import read_card_state

        with self._cond:
            self._busy += 1
        serial: int | None = None
        claim: _Claim | None = None
        try:
            try:
                conn = self.source.connect(reader)
            except (TransportError, UsageError) as e:
                self.emit(BatchEvent("failed", reader, data={"error": str(e), "step": None}))
                self.audit.write("connect", "failed", reader, detail=str(e))
                self._tally(reader, "failed")
                return
            try:
                session = PivSession(conn)
                card = read_card_state(session)
                serial = card.serial
                self.emit(BatchEvent("inserted", reader, serial))
                self.audit.write("insert", "ok", reader, serial)
                claim = self._claim(reader, card)
                if claim.wipe:
                    session = self._wipe(session, reader, card, claim)
                self._enroll(session, reader, card, claim)
            except _Refusal as r:
                self.emit(BatchEvent("refused", reader, serial,
                                     data={"outcome": r.outcome, "reason": str(r)}))
                self.audit.write("claim", r.outcome, reader, serial, detail=str(r))
                self._tally(reader, "refused")
            except PivToolError as e:
                if claim is not None:
                    self._failed(reader, serial, claim, e)
                else:
                    self.emit(BatchEvent("failed", reader, serial,
                                         data={"error": str(e), "step": None}))
                    self.audit.write("read card", "failed", reader, serial, detail=str(e))
                    self._tally(reader, "failed")
            finally:
                conn.close()
            self.emit(BatchEvent("remove-card", reader, serial))
        except Exception as e:  # never let one card kill its reader's worker
            self.emit(BatchEvent("failed", reader, serial,
                                 data={"error": f"internal error: {type(e).__name__}: {e}",
                                       "step": None}))
            self.audit.write("internal", "error", reader, serial, detail=type(e).__name__)
            if claim is not None:
                self._failed(reader, serial, claim, e)
        finally:
            with contextlib.suppress(Exception):  # a source failing here must not hang us
                self.source.card_done(reader)
            with self._cond:
                self._busy -= 1
                self._last_activity = time.monotonic()
                self._cond.notify_all()

    def _claim(self, reader: str, card: CardState) -> _Claim:
        """Decide who this key is for (under the state lock), and bind them to it in the
        state file before anything changes on the card."""
        from ..certs.inspect import get_upns

        serial = card.serial
        if serial is None:
            raise _Refusal("no-serial", "the card reports no serial number; batch enrollment "
                                        "needs YubiKeys (firmware 5 or later)")
        slot = card.slot(Slot.AUTHENTICATION)
        occupied = slot is not None and bool(slot.key_algorithm or slot.certificate)
        cert_upns = get_upns(slot.certificate) if slot is not None and slot.certificate else []
        with self.state.lock:
            with self._cond:
                accepting = self._accepting and not self._stop_requested.is_set() and not (
                    self.o.max_cards is not None and self._enrolled >= self.o.max_cards)
            if not accepting:
                raise _Refusal("stopping", "the batch is stopping; this key was not touched")
            bound = self.state.bound_to(serial)
            wipe = False
            user: dict[str, Any] | None = None
            if bound is not None:
                foreign = bool(cert_upns) and bound["upn"].casefold() not in {
                    u.casefold() for u in cert_upns}
                if bound["status"] == ENROLLING:
                    raise _Refusal("busy", f"serial {serial} is still being enrolled for "
                                           f"{bound['upn']} on {bound['reader']}")
                if foreign:
                    if not self.o.reassign:
                        raise _Refusal("foreign", f"the batch gave serial {serial} to "
                                       f"{bound['upn']}, but its 9a certificate is for "
                                       f"{cert_upns[0]}; --reassign wipes the key")
                    wipe = True
                elif bound["status"] == DONE:
                    # Even --reassign never takes a key from a user still in the roster: a
                    # re-run with the same state would otherwise wipe finished keys.
                    if not self.o.reassign or bound["in_roster"]:
                        raise _Refusal("already-enrolled", f"serial {serial} is already "
                                       f"enrolled for {bound['upn']}")
                    wipe = True
                elif bound["status"] == FAILED:
                    if not self.o.reassign:
                        raise _Refusal("failed-before", f"enrollment of {bound['upn']} on "
                                       f"serial {serial} failed {bound['attempts']} times "
                                       f"({bound['error']}); --reassign wipes the key")
                    wipe = True
                else:
                    user = bound  # incomplete: finish it for the same user
            elif cert_upns or occupied:
                if not self.o.reassign:
                    who = f"for {cert_upns[0]}" if cert_upns else "(9a holds a key)"
                    raise _Refusal("foreign", f"serial {serial} is already enrolled {who} "
                                   "outside this batch; --reassign wipes the key")
                wipe = True
            if user is None:
                user = self.state.next_pending(serial)
                if user is None:
                    raise _Refusal("no-user", f"no pending user for serial {serial}"
                                   + (" (the key was not wiped)" if wipe else ""))
                if not wipe and not card.pin.is_default and self.o.secrets.pin is None:
                    raise _Refusal("pin-unknown", f"the PIN of serial {serial} is not the "
                                   "factory default and this batch does not know it: set "
                                   "PIVTOOL_PIN, or --reassign to wipe the key")
            if wipe and bound is not None:
                if bound["status"] == DONE:
                    bound["status"] = REASSIGNED
                    bound["error"] = f"key {serial} reassigned to {user['upn']}"
                else:  # half-made: give the user a fresh start on another key
                    bound["status"] = PENDING if bound["status"] != FAILED else FAILED
                    bound["serial"] = None
            resume = user["serial"] == serial
            if resume:
                user["history"].append({"serial": serial, "reader": user["reader"],
                                        "last_step": user["last_step"],
                                        "error": user["error"], "ended": user["finished"]})
            user.update(status=ENROLLING, serial=serial, reader=reader, error=None,
                        attempts=user["attempts"] + 1, steps=[], last_step=None,
                        started=now_iso(), finished=None)
            self.state.save()
        claim = _Claim(user, resume=resume and not wipe, wipe=wipe,
                       force=occupied and not wipe)
        self.emit(BatchEvent("enrolling", reader, serial, user["upn"],
                             data={"resume": claim.resume, "attempt": user["attempts"],
                                   "wipe": wipe}))
        self.audit.write("claim", "resume" if claim.resume else "assigned", reader, serial,
                         user["upn"], detail=f"attempt {user['attempts']}"
                         + ("; key will be wiped (--reassign)" if wipe else ""))
        return claim

    def _wipe(self, session: PivSession, reader: str, card: CardState,
              claim: _Claim) -> PivSession:
        """``--reassign``: back up the old certificates, then PIV-reset the key."""
        from ..piv.session import PivSession
        from .reset import backup_certificates, plan_reset, reset_card

        serial = card.serial
        directory = self.paths.backups / f"{serial}-{_stamp()}"
        plan = plan_reset(card)
        saved = backup_certificates(card, directory)
        reset_card(session, plan, saved)
        detail = "; ".join(plan.destroys) + (f"; old certificates in {directory}"
                                             if saved else "")
        self.audit.write("wipe", "done", reader, serial, claim.user["upn"], detail=detail)
        self.emit(BatchEvent("wiped", reader, serial, claim.user["upn"],
                             data={"destroyed": plan.destroys,
                                   "backup": [str(p) for p in saved]}))
        # A fresh session: the reset changed the management key type and every status.
        return PivSession(session.connection)

    def _secrets_for(self, user: dict[str, Any], serial: int, pin_default: bool,
                     puk_default: bool) -> dict[str, bytes]:
        """The secrets the Enroller will ask for, with every new value recorded (letter,
        escrow) *before* the Enroller writes it to the card."""
        sp = self.o.secrets
        upn = user["upn"]
        values: dict[str, bytes] = {}
        if pin_default:
            new_pin = sp.new_pin if sp.new_pin is not None else _random_digits(8)
            if sp.pin_letters is not None:
                user["pin_letter"] = str(write_pin_letter(sp.pin_letters, upn, serial,
                                                          new_pin))
            values["new_pin"] = new_pin
        else:
            known = None
            if user["serial"] == serial:  # our own half-made key: we set that PIN
                known = (read_pin_letter(sp.pin_letters, upn) if sp.pin_letters is not None
                         else sp.new_pin)
            pin = known or sp.pin
            if pin is not None:
                values["pin"] = pin
                if sp.pin_letters is not None and known is None:
                    user["pin_letter"] = str(write_pin_letter(sp.pin_letters, upn, serial,
                                                              pin))
        if puk_default:
            new_puk = sp.new_puk if sp.new_puk is not None else _random_digits(8)
            if self.o.escrow is not None:
                self.o.escrow.put(serial, upn, puk=new_puk)
            values["new_puk"] = new_puk
        else:
            entry = self.o.escrow.get(serial) if self.o.escrow is not None else None
            puk = (entry.puk.encode() if entry is not None and entry.puk else None) or \
                (sp.new_puk if user["serial"] == serial else None) or sp.puk
            if puk is not None:
                values["puk"] = puk
        if sp.mgmt_key is not None:
            values["mgmt_key"] = sp.mgmt_key
        return values

    def _enroll(self, session: PivSession, reader: str, card: CardState,
                claim: _Claim) -> None:
        from .auth import StaticPrompter
        from .enroll import Enroller, EnrollOptions

        user = claim.user
        serial = card.serial
        assert serial is not None
        opts = user["options"]
        pin_default = claim.wipe or bool(card.pin.is_default)
        puk_default = claim.wipe or bool(card.puk.is_default)
        with self.state.lock:
            values = self._secrets_for(user, serial, pin_default, puk_default)
            self.state.save()
        backup = self.paths.backups / f"{serial}-{_stamp()}"
        eo = EnrollOptions(
            upn=user["upn"], emails=list(opts["emails"]),
            subject=_subject(opts.get("display_name")),
            algorithm=KeyType.parse(opts["algorithm"]),
            pin_policy=PinPolicy.parse(opts["pin_policy"]),  # type: ignore[arg-type]
            touch_policy=TouchPolicy.parse(opts["touch_policy"]),  # type: ignore[arg-type]
            macos=self.o.macos, policies=list(opts["policies"]), force=claim.force,
            backup_dir=str(backup), allow_non_ios=self.o.allow_non_ios,
            retry_force=self.o.allow_last_try)

        def on_step(step: Step) -> None:
            with self.state.lock:
                user["steps"].append({**step.to_json(), "time": now_iso()})
                user["last_step"] = step.name
                self.state.save()
            self.audit.write(step.name, step.status, reader, serial, user["upn"],
                             detail=step.detail)
            self.emit(BatchEvent("step", reader, serial, user["upn"],
                                 data={"step": step.name, "status": step.status,
                                       "detail": step.detail}))

        result = Enroller(session, StaticPrompter(values), eo, self.issuer, on_step,
                          escrow=self.o.escrow).run()
        self._done(reader, serial, user, result)

    def _done(self, reader: str, serial: int, user: dict[str, Any],
              result: EnrollResult) -> None:
        from ..certs.inspect import summarize

        cert = result.certificate
        fp = fingerprint(cert)
        summ = summarize(cert).to_json()
        ids = [{"kind": i["kind"], "value": i["value"], "affinity": i["affinity"]}
               for i in result.certificate_user_ids]
        with self.state.lock:
            user.update(status=DONE, finished=now_iso(), error=None,
                        certificate={"sha256": fp, "serial": summ.get("serial"),
                                     "subject": summ.get("subject"),
                                     "issuer": summ.get("issuer"),
                                     "not_after": summ.get("not_after")},
                        certificate_user_ids=ids)
            self.state.save()
        with self._cond:
            self._enrolled += 1
        self._tally(reader, "done")
        self.audit.write("enrolled", "done", reader, serial, user["upn"], fingerprint=fp)
        self.emit(BatchEvent("done", reader, serial, user["upn"],
                             data={"fingerprint": fp, "certificate_user_ids": ids,
                                   "pin_letter": user["pin_letter"]}))

    def _failed(self, reader: str, serial: int | None, claim: _Claim,
                error: BaseException) -> None:
        """Record a failed attempt. A failure before anything changed on the key releases
        the user for another key; after that the user stays bound to this key (status
        ``incomplete``) until it comes back, or ``failed`` after :data:`MAX_ATTEMPTS`."""
        user = claim.user
        step = error.step if isinstance(error, StepFailedError) else None
        message = str(error)
        with self.state.lock:
            changed = claim.resume or claim.wipe or any(
                s["step"] not in READ_ONLY_STEPS for s in user["steps"])
            user["error"] = message
            user["finished"] = now_iso()
            if step is not None:
                user["last_failed_step"] = step
            if user["attempts"] >= MAX_ATTEMPTS:
                user["status"] = FAILED
            elif changed:
                user["status"] = INCOMPLETE
            else:
                user["status"] = PENDING
                user["serial"] = None
            status = user["status"]
            self.state.save()
        self._tally(reader, "failed")
        self.audit.write(step or "enroll", "failed", reader, serial, user["upn"],
                         detail=f"{message} (user now {status})")
        self.emit(BatchEvent("failed", reader, serial, user["upn"],
                             data={"step": step, "error": message, "user_status": status}))


def _subject(display_name: str | None) -> str | None:
    return RosterRow(0, "", display_name=display_name).subject


class _ReaderWorker(threading.Thread):
    """One reader's worker: takes its reader's events in order. Daemon, so a second Ctrl-C
    can end the process even with a card hanging mid-command (the state is saved after
    every step, so nothing is lost)."""

    def __init__(self, runner: BatchRunner, reader: str) -> None:
        super().__init__(name=f"pivtool-batch {reader}", daemon=True)
        self.runner = runner
        self.reader = reader
        self.queue: queue.Queue[CardEvent | None] = queue.Queue()

    def run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            if event.kind is EventKind.INSERTED:
                self.runner.handle_card(self.reader)
            elif event.kind is EventKind.REMOVED:
                self.runner.emit(BatchEvent("removed", self.reader))


# --------------------------------------------------------------------------------------------
# Reports


def graph_values(ids: list[dict[str, Any]], limit: int = 10) -> list[str]:
    """The values for the Graph PATCH body: high-affinity first, then the UPN (as
    ``pivtool entra ids --graph``), at most *limit*, none over Entra's 1024 characters."""
    from ..certs.entra import CertUserId, graph_selection

    chosen, _ = graph_selection([CertUserId(**i) for i in ids], limit)
    return [i.value for i in chosen]


def graph_batches(state: BatchState) -> list[dict[str, Any]]:
    """Microsoft Graph JSON ``$batch`` bodies, one PATCH /users/{upn} per enrolled user, at
    most :data:`GRAPH_BATCH_LIMIT` requests each. The PATCH replaces the user's existing
    certificateUserIds."""
    from ..certs.entra import graph_patch_body

    requests = []
    for user in state.users.values():
        if user["status"] != DONE or not user["certificate_user_ids"]:
            continue
        body = graph_patch_body(graph_values(user["certificate_user_ids"]))
        requests.append({"method": "PATCH", "url": "/users/" + quote(user["upn"], safe="@."),
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
        users.append({"row": u["row"], "upn": u["upn"], "status": u["status"],
                      "in_roster": u["in_roster"], "serial": u["serial"],
                      "reader": u["reader"], "attempts": u["attempts"],
                      "last_step": u["last_step"], "error": u["error"],
                      "finished": u["finished"], "certificate": u["certificate"],
                      "certificate_user_ids": u["certificate_user_ids"],
                      "pin_letter": u["pin_letter"]})
    return {"schema": REPORT_SCHEMA, "generated": now_iso(), "roster": state.doc["roster"],
            "state": str(state.path), "counts": state.counts(), "users": users,
            "invalid_rows": state.doc["invalid_rows"]}


REPORT_COLUMNS = ["row", "upn", "status", "serial", "reader", "attempts", "last_step",
                  "certificate_sha256", "certificate_serial", "not_after",
                  "certificate_user_ids", "error"]


def report_csv(state: BatchState) -> str:
    """The CSV report: one line per user, then one per bad roster row; certificateUserIds
    joined with `` | ``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)
    for u in state.users.values():
        cert = u["certificate"] or {}
        w.writerow([u["row"], u["upn"], u["status"], u["serial"] or "", u["reader"] or "",
                    u["attempts"], u["last_step"] or "", cert.get("sha256", ""),
                    cert.get("serial", ""), cert.get("not_after", ""),
                    " | ".join(i["value"] for i in u["certificate_user_ids"]),
                    u["error"] or ""])
    for bad in state.doc["invalid_rows"]:
        w.writerow([bad["row"], bad["upn"], "invalid", "", "", 0, "", "", "", "", "",
                    bad["error"]])
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
