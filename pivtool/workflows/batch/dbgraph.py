"""``--graph-bind`` with ``--db``: each user's binding in the database, where writing it
ahead of the PATCH is also the claim that keeps two desks from binding one user at once
(:mod:`pivtool.store.binds`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .graphbind import BIND_FAILED, BOUND
from .state import DONE, UserRecord

if TYPE_CHECKING:
    from ...graph.bind import BindResult
    from .dbstate import DbBatchState


class DbBinds:
    """A :class:`~pivtool.workflows.batch.graphbind.BindLedger` over the store."""

    def __init__(self, state: DbBatchState) -> None:
        self.state = state

    def todo(self) -> list[UserRecord]:
        """Done users of the whole roster (any desk's) whose binding is not confirmed."""
        return [u for u in self.state.users.values()
                if u.status == DONE and (u.graph or {}).get("status") != BOUND]

    def begin(self, user: UserRecord, values: list[str]) -> bool:
        """Claim the bind (see :meth:`pivtool.store.binds.GraphBinds.bind_claim`)."""
        state = self.state
        row = state._guard(state.store.bind_claim, user.upn, values, state.lease)
        if row is None:
            return False
        with state.lock:
            state.binding += 1
        user.graph = {"status": row["status"], "values": values, "attempts": row["attempts"],
                      "patched": bool(row["patched"]), "error": None, "desk": row["desk"]}
        return True

    def retry(self, user: UserRecord) -> None:
        """Count the attempt in the database."""
        self.state._guard(self.state.store.bind_retry, user.upn)
        assert user.graph is not None
        user.graph["attempts"] += 1

    def finish(self, user: UserRecord, result: BindResult | None,
               error: BaseException | None) -> dict[str, Any]:
        """Record the outcome and end the lease."""
        state = self.state
        try:
            state._guard(state.store.bind_finish, user.upn, result is not None,
                         bool(result and result.patched),
                         None if result is None else list(result.added),
                         None if error is None else str(error))
        finally:
            with state.lock:
                state.binding -= 1
        record = user.graph
        assert record is not None
        if result is not None:
            record.update(status=BOUND, error=None, added=result.added,
                          patched=record["patched"] or result.patched)
        else:
            record.update(status=BIND_FAILED, error=str(error))
        return dict(record)
