"""``batch enroll --graph-bind``: bind each enrolled user's certificateUserIds in Entra
right after the enrollment, through :mod:`pivtool.graph`.

The user's ``graph`` record in the state file is written ahead of the PATCH (status
``binding``), so a batch killed mid-bind knows the answer was lost; the bind itself reads
the user first and sends no PATCH when the values are already there, so the re-run that
finishes it writes each user at most once. A bind that fails (Graph down, throttled past
the retries, a value held by another user, a synchronised user) is recorded and reported
but never undoes the enrollment; every run first binds the enrolled users still missing.
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
        with self.state.lock:
            todo = [u for u in self.state.users.values()
                    if u.status == DONE and (u.graph or {}).get("status") != BOUND]
        for user in todo:
            self.graph_bind(user.reader, user.serial, user)

    def graph_bind(self, reader: str | None, serial: int | None, user: UserRecord) -> None:
        """Bind *user*'s high-affinity values; record and report the outcome."""
        if self.graph is None:
            return
        upn = user.upn
        recorded = [CertUserId(i["kind"], i["value"], i["affinity"])
                    for i in user.certificate_user_ids]
        # The order of 'entra bind' and 'entra ids --graph': issuer+serial, SKI, public key.
        ids = [i for i in graph_selection(recorded)[0] if i.affinity == HIGH]
        values = [i.value for i in ids]
        with self.state.lock:
            previous = user.graph or {}
            user.graph = {"status": BINDING, "values": values,
                             "attempts": int(previous.get("attempts") or 0),
                             "patched": bool(previous.get("patched")),
                             "error": None, "time": now_iso()}
            self.state.save()
        error: BaseException | None = None
        result = None
        for attempt in range(1, GRAPH_ATTEMPTS + 1):
            with self.state.lock:
                user.graph["attempts"] += 1
                self.state.save()
            try:
                if not ids:
                    raise UsageError("no high-affinity certificateUserIds value recorded")
                result = self.graph.bind(upn, ids)
                error = None
                break
            except PivToolError as e:
                error = e
                if attempt == GRAPH_ATTEMPTS or not _retryable(e):
                    break
                self.audit.write("graph-bind", "retry", reader, serial, upn,
                                 detail=f"attempt {attempt}: {e}")
                self.graph_sleep(float(attempt))  # 1 s, then 2 s
        with self.state.lock:
            record = user.graph
            if result is not None:
                record.update(status=BOUND, error=None, time=now_iso(),
                              patched=record["patched"] or result.patched,
                              added=result.added)
            else:
                record.update(status=BIND_FAILED, error=str(error), time=now_iso())
            self.state.save()
            record = dict(record)
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


def graph_counts(state: BatchState) -> dict[str, int]:
    """Enrolled users by Graph status (``unbound``: never tried)."""
    out = {BOUND: 0, BIND_FAILED: 0, BINDING: 0, "unbound": 0}
    for u in state.users.values():
        if u.status == DONE:
            out[(u.graph or {}).get("status") or "unbound"] += 1
    return out
