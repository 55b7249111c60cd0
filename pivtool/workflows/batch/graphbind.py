"""``batch enroll --graph-bind``: bind each enrolled user's certificateUserIds in Entra
right after the enrollment, through :mod:`pivtool.graph`.

The user's binding record is written ahead of the PATCH (status ``binding``) — the
``graph`` object in the state file (:class:`FileBinds`), or the user's ``graph_binds`` row
in the database (:class:`~pivtool.workflows.batch.dbgraph.DbBinds`, where the write is
also the claim that keeps two desks from binding one user at once) — so a batch killed
mid-bind knows the answer was lost; the bind itself reads the user first and sends no PATCH
when the values are already there, so the re-run that finishes it writes each user at most
once. A bind that fails (Graph down, throttled past the retries, a value held by another
user, a synchronised user) is recorded and reported but never undoes the enrollment; every
run first binds the enrolled users still missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ...certs.entra import HIGH, CertUserId, graph_selection
from ...core.errors import PivToolError, UsageError
from ...graph.errors import GraphError
from .options import BatchEvent
from .outputs import AuditLog
from .state import DONE, BatchState, UserRecord, now_iso

if TYPE_CHECKING:
    from ...graph.bind import BindResult

#: Graph status of a user: ``binding`` (written before the PATCH), ``bound``, ``failed``.
BINDING, BOUND, BIND_FAILED = "binding", "bound", "failed"
#: Attempts per user and run (on top of the HTTP client's own Retry-After handling).
GRAPH_ATTEMPTS = 3


class GraphBinder(Protocol):
    """Writes a user's certificateUserIds (:class:`pivtool.graph.bind` behind a client)."""

    def bind(self, upn: str, ids: list[CertUserId]) -> BindResult:
        """Add *ids* to *upn* (idempotent: no write when they are there)."""
        ...


class ClientBinder:
    """A :class:`GraphBinder` over one :class:`~pivtool.graph.client.GraphClient`, one call
    at a time (reader workers run in parallel; the token cache and session are shared)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._lock = threading.Lock()

    def bind(self, upn: str, ids: list[CertUserId]) -> BindResult:
        """Bind under the lock."""
        from ...graph.bind import apply

        with self._lock:
            return apply(self.client, upn, add=ids, action="bind")


def _retryable(error: BaseException) -> bool:
    # Refusals (a conflict, a synced user, Entra's limits, a refused credential or
    # permission) will not change by trying again within this run.
    from ...graph.errors import SyncedUserError, ValueConflictError

    if isinstance(error, (ValueConflictError, SyncedUserError)):
        return False
    if isinstance(error, GraphError):
        return error.status is None or error.status >= 500 or error.status == 429
    return False


class BindLedger(Protocol):
    """Where the batch writes its bindings ahead and records their outcome."""

    def todo(self) -> list[UserRecord]:
        """Enrolled users whose binding is not confirmed."""
        ...

    def begin(self, user: UserRecord, values: list[str]) -> bool:
        """Write the bind of *values* ahead (status ``binding``, first attempt counted);
        False when the user must not be bound by this batch now (bound already, or another
        desk is binding them)."""
        ...

    def retry(self, user: UserRecord) -> None:
        """Count one more attempt."""
        ...

    def finish(self, user: UserRecord, result: BindResult | None,
               error: BaseException | None) -> dict[str, Any]:
        """Record the outcome; return the user's binding record as written."""
        ...


class FileBinds:
    """A :class:`BindLedger` in the state file: the user's ``graph`` object, saved at once."""

    def __init__(self, state: BatchState) -> None:
        self.state = state

    def todo(self) -> list[UserRecord]:
        """Done users whose ``graph`` status is not ``bound``."""
        with self.state.lock:
            return [u for u in self.state.users.values()
                    if u.status == DONE and (u.graph or {}).get("status") != BOUND]

    def begin(self, user: UserRecord, values: list[str]) -> bool:
        """Write ahead (one batch writes the state file: nobody else is binding)."""
        with self.state.lock:
            previous = user.graph or {}
            user.graph = {"status": BINDING, "values": values,
                          "attempts": int(previous.get("attempts") or 0) + 1,
                          "patched": bool(previous.get("patched")),
                          "error": None, "time": now_iso()}
            self.state.save()
        return True

    def retry(self, user: UserRecord) -> None:
        """Count the attempt in the file."""
        with self.state.lock:
            assert user.graph is not None
            user.graph["attempts"] += 1
            self.state.save()

    def finish(self, user: UserRecord, result: BindResult | None,
               error: BaseException | None) -> dict[str, Any]:
        """Record the outcome in the file."""
        with self.state.lock:
            record = user.graph
            assert record is not None
            if result is not None:
                record.update(status=BOUND, error=None, time=now_iso(),
                              patched=record["patched"] or result.patched,
                              added=result.added)
            else:
                record.update(status=BIND_FAILED, error=str(error), time=now_iso())
            self.state.save()
            return dict(record)


class GraphBinding:
    """Mixed into the batch runner: binding after enrollment and the catch-up pass."""

    state: BatchState
    audit: AuditLog
    graph: GraphBinder | None
    graph_sleep: Callable[[float], None] = staticmethod(time.sleep)
    emit: Callable[[BatchEvent], None]

    def bind_missing(self) -> None:
        """Bind every enrolled user whose binding is not confirmed (an earlier run failed,
        was killed mid-bind, or ran without ``--graph-bind``)."""
        if self.graph is None:
            return
        for user in self.state.graph_ledger().todo():
            self.graph_bind(user.reader, user.serial, user)

    def graph_bind(self, reader: str | None, serial: int | None, user: UserRecord) -> None:
        """Bind *user*'s high-affinity values; record and report the outcome. A failure
        to record it (the database went away) is reported too, never raised: the
        enrollment stands, and the re-run binds what is not confirmed."""
        if self.graph is None:
            return
        upn = user.upn
        recorded = [CertUserId(i["kind"], i["value"], i["affinity"])
                    for i in user.certificate_user_ids]
        # The order of 'entra bind' and 'entra ids --graph': issuer+serial, SKI, public key.
        ids = [i for i in graph_selection(recorded)[0] if i.affinity == HIGH]
        values = [i.value for i in ids]
        ledger = self.state.graph_ledger()
        try:
            if not ledger.begin(user, values):
                return  # bound already, or another desk is binding this user now
            result, error = self._bind_attempts(ledger, reader, serial, user, ids)
            record = ledger.finish(user, result, error)
        except PivToolError as e:  # the record could not be written
            self.audit.write("graph-bind", "failed", reader, serial, upn,
                             detail=f"{e} (the enrollment stands; a re-run binds it)")
            self.emit(BatchEvent("graph-failed", reader, serial, upn,
                                 data={"values": values, "error": str(e),
                                       "attempts": (user.graph or {}).get("attempts", 0)}))
            return
        if result is not None:
            detail = (f"{len(result.added)} value(s) added" if result.patched
                      else "already bound")
            self.audit.write("graph-bind", "done", reader, serial, upn, detail=detail)
            self.emit(BatchEvent("graph-bound", reader, serial, upn,
                                 data={"values": values, "added": result.added,
                                       "patched": result.patched,
                                       "attempts": record["attempts"]}))
        else:
            self.audit.write("graph-bind", "failed", reader, serial, upn,
                             detail=f"{error} (the enrollment stands; a re-run binds it)")
            self.emit(BatchEvent("graph-failed", reader, serial, upn,
                                 data={"values": values, "error": str(error),
                                       "attempts": record["attempts"]}))

    def _bind_attempts(self, ledger: BindLedger, reader: str | None, serial: int | None,
                       user: UserRecord, ids: list[CertUserId]
                       ) -> tuple[BindResult | None, PivToolError | None]:
        """Up to :data:`GRAPH_ATTEMPTS` binds (the first counted by ``begin``), backing off
        between retryable failures; (result, None) or (None, the last error)."""
        assert self.graph is not None
        error: PivToolError | None = None
        for attempt in range(1, GRAPH_ATTEMPTS + 1):
            if attempt > 1:
                ledger.retry(user)
            try:
                if not ids:
                    raise UsageError("no high-affinity certificateUserIds value recorded")
                return self.graph.bind(user.upn, ids), None
            except PivToolError as e:
                error = e
                if attempt == GRAPH_ATTEMPTS or not _retryable(e):
                    break
                self.audit.write("graph-bind", "retry", reader, serial, user.upn,
                                 detail=f"attempt {attempt}: {e}")
                self.graph_sleep(float(attempt))  # 1 s, then 2 s
        return None, error


def graph_counts(state: BatchState) -> dict[str, int]:
    """Enrolled users by Graph status (``unbound``: never tried)."""
    out = {BOUND: 0, BIND_FAILED: 0, BINDING: 0, "unbound": 0}
    for u in state.users.values():
        if u.status == DONE:
            out[(u.graph or {}).get("status") or "unbound"] += 1
    return out
