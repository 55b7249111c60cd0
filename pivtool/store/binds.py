"""Each user's Entra binding in the store (``batch enroll --graph-bind`` with ``--db``).

The ``graph_binds`` row of a user is the write-ahead record *and* the claim of the bind: a
desk turns it to ``binding`` (with its name and a lease) in one statement before it sends
the Graph PATCH, and only if the row is not ``bound`` and no other desk's lease on it is
live. The upsert's conflict clause takes the row lock on PostgreSQL (SQLite has one writer),
so of two desks claiming the same user at the same instant exactly one gets the row back;
the other skips the user. A desk that dies mid-bind leaves the row ``binding``: its own
re-run frees it at the start (:meth:`GraphBinds.bind_interrupted`), any other desk takes it
when the lease runs out, and the bind itself sends no PATCH when Entra already has the
values, so the user is written once.

A normal bind costs two round trips: the claim (counting the first attempt) and the
outcome; each retry one more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .engine import db_call
from .records import utcnow

if TYPE_CHECKING:
    import contextlib

    from sqlalchemy.engine import Connection

#: A user's binding: written ahead of the PATCH, confirmed, or failed (a re-run retries).
BINDING, BOUND, BIND_FAILED = "binding", "bound", "failed"


class GraphBinds:
    """The binding statements, mixed into :class:`pivtool.store.api.Store`."""

    desk: str

    if TYPE_CHECKING:

        def _auto(self) -> contextlib.AbstractContextManager[Connection]: ...

        def _insert(self, table: Any) -> Any: ...

    @db_call("claiming a Graph binding")
    def bind_claim(self, upn: str, ids: list[str], lease: float) -> dict[str, Any] | None:
        """Write ahead of the PATCH: *upn*'s binding becomes ``binding`` by this desk for
        *lease* seconds, its first attempt counted. None when it is ``bound`` already or
        another desk holds it under a live lease (that desk binds it). One statement."""
        import sqlalchemy as sa

        from .schema import graph_binds as g

        now = utcnow()
        until = now + dt.timedelta(seconds=lease)
        ins = self._insert(g).values(upn_key=upn.casefold(), status=BINDING, ids=ids,
                                     attempts=1, patched=False, added=None, error=None,
                                     updated=now, desk=self.desk, lease_until=until)
        free = sa.and_(g.c.status != BOUND,
                       sa.or_(g.c.status != BINDING, g.c.lease_until.is_(None),
                              g.c.lease_until < now))
        stmt = ins.on_conflict_do_update(
            index_elements=["upn_key"], where=free,
            set_={"status": BINDING, "ids": ins.excluded.ids, "attempts": g.c.attempts + 1,
                  "error": None, "updated": now, "desk": self.desk, "lease_until": until},
        ).returning(*g.c)
        with self._auto() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else dict(row._mapping)

    @db_call("recording a Graph binding")
    def bind_retry(self, upn: str) -> None:
        """Count one more attempt of this desk's bind of *upn* (before it is made)."""
        from .schema import graph_binds as g

        with self._auto() as conn:
            conn.execute(g.update().where(*self._mine(upn))
                         .values(attempts=g.c.attempts + 1, updated=utcnow()))

    @db_call("recording a Graph binding")
    def bind_finish(self, upn: str, bound: bool, patched: bool, added: list[str] | None,
                    error: str | None) -> bool:
        """The outcome of this desk's bind of *upn*: ``bound`` (``patched`` when a PATCH
        of any desk was answered) or ``failed`` with *error*; the lease ends. False when
        the row is no longer this desk's claim (its lease ran out and another desk took
        it: that desk records the outcome)."""
        from .schema import graph_binds as g

        values: dict[str, Any] = {"status": BOUND if bound else BIND_FAILED, "error": error,
                                  "updated": utcnow(), "lease_until": None}
        if bound:
            values.update(patched=g.c.patched | patched, added=added)
        with self._auto() as conn:
            return bool(conn.execute(g.update().where(*self._mine(upn)).values(**values))
                        .rowcount)

    @db_call("renewing the desk's leases")
    def bind_heartbeat(self, lease: float) -> int:
        """Renew the lease of every bind this desk is making; return how many."""
        from .schema import graph_binds as g

        now = utcnow()
        with self._auto() as conn:
            return int(conn.execute(
                g.update().where(g.c.status == BINDING, g.c.desk == self.desk)
                .values(lease_until=now + dt.timedelta(seconds=lease))).rowcount)

    @db_call("recovering the desk's claims")
    def bind_interrupted(self) -> int:
        """At a desk's start: binds this desk left ``binding`` were cut off by its crash
        (the PATCH may have reached Entra); their lease ends so that this run, or any
        desk, finishes them. Returns how many."""
        from .schema import graph_binds as g

        with self._auto() as conn:
            return int(conn.execute(
                g.update().where(g.c.status == BINDING, g.c.desk == self.desk,
                                 g.c.lease_until.is_not(None))
                .values(lease_until=None)).rowcount)

    def _mine(self, upn: str) -> Iterator[Any]:
        from .schema import graph_binds as g

        yield g.c.upn_key == upn.casefold()
        yield g.c.status == BINDING
        yield g.c.desk == self.desk
