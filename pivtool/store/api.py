"""The store's typed interface: what the workflows (enroll, recover, batch, lifecycle) call.

Every method is one short transaction or a single statement, and every round trip counts
(docs/fleet.md: a desk enrolling a key costs at most ten). Single statements run in
autocommit; writes that must land together run in one transaction. On PostgreSQL a user is
claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the claiming ``UPDATE``, so desks
never wait on each other's rows; on SQLite the same statement runs under SQLite's single
writer lock (``BEGIN IMMEDIATE`` for transactions), which is the equivalent there.

Nothing secret passes through here: escrow documents arrive already encrypted
(:class:`pivtool.workflows.escrow.StoreEscrow`), audit details are written by callers that
never put a secret in them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..core.errors import UsageError
from .binds import GraphBinds
from .engine import (
    RoundTrips,
    check_schema,
    create_engine,
    db_call,
    display_url,
    durable,
)
from .records import (
    DONE,
    ENROLLING,
    FAILED,
    INCOMPLETE,
    KEY_STATES,
    PENDING,
    REASSIGNED,
    USER_STATES,
    AuditEvent,
    CertRecord,
    EscrowRow,
    KeyRecord,
    RosterInput,
    UserRecord,
    default_desk,
    default_operator,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


# --------------------------------------------------------------------------------------------
# The store


class Store(GraphBinds):
    """One database, seen from one desk. Thread-safe (SQLAlchemy's pool gives each thread
    its own connection). Open with :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, engine: Engine, url: str, desk: str, operator: str,
                 counter: RoundTrips | None = None) -> None:
        self.engine = engine
        self.url = url
        self.desk = desk
        self.operator = operator
        self.counter = counter

    @classmethod
    def open(cls, url: str, desk: str | None = None, operator: str | None = None,
             create: bool = True, counter: RoundTrips | None = None,
             upgrade_older: bool = False) -> Store:
        """Connect and check the schema (a fresh database gets the newest one when
        *create*; an older schema is upgraded when *upgrade_older*, else refused, as a newer
        one is: see :func:`check_schema`)."""
        engine = create_engine(url, counter)
        try:
            check_schema(engine, create=create, upgrade_older=upgrade_older)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url, desk or default_desk(), operator or default_operator(),
                   counter)

    @property
    def display(self) -> str:
        """The URL without a password (for messages)."""
        return display_url(self.url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections -----------------------------------------------------------------

    @contextlib.contextmanager
    def _auto(self, sync: bool = True) -> Iterator[Connection]:
        """A connection in autocommit: each statement is its own transaction (one round
        trip on PostgreSQL, no BEGIN/COMMIT). *sync*: its commits reach the disk before
        they return (SQLite: see :func:`~pivtool.store.engine.durable`); False only for
        rows a power cut may lose (progress, inventory, buffered audit)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with durable(conn) if sync else contextlib.nullcontext():
                yield conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One transaction (committed on success, rolled back on error), durable."""
        with self.engine.connect() as conn, durable(conn), conn.begin():
            yield conn

    def _insert(self, table: Any) -> Any:
        """INSERT with ``on_conflict_do_update`` (both dialects spell it the same)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        return insert(table)

    def _audit_rows(self, events: list[AuditEvent]) -> list[dict[str, Any]]:
        return [{"time": e.time, "desk": e.desk or self.desk,
                 "operator": e.operator or self.operator, "command": e.command,
                 "reader": e.reader, "serial": e.serial, "upn": e.upn, "step": e.step,
                 "outcome": e.outcome, "detail": e.detail or "",
                 "fingerprint": e.fingerprint} for e in events]

    # --- audit -----------------------------------------------------------------------

    @db_call("writing the audit trail")
    def audit(self, events: list[AuditEvent]) -> None:
        """Append *events* (one round trip however many)."""
        from .schema import audit

        if not events:
            return
        # Not synced: the rows that matter sit before a durable status change, whose
        # commit makes them durable too (a SQLite WAL is one sequence).
        with self._auto(sync=False) as conn:
            conn.execute(audit.insert(), self._audit_rows(events))

    @db_call("reading the audit trail")
    def audit_trail(self, serial: int | None = None, upn: str | None = None,
                    limit: int | None = None) -> list[AuditEvent]:
        """Audit rows, oldest first, for a key and/or a user."""
        import sqlalchemy as sa

        from .schema import audit

        q = sa.select(audit).order_by(audit.c.id)
        if serial is not None:
            q = q.where(audit.c.serial == serial)
        if upn is not None:
            q = q.where(sa.func.lower(audit.c.upn) == upn.casefold())
        if limit is not None:
            q = q.limit(limit)
        with self._auto() as conn:
            return [AuditEvent(**dict(r._mapping)) for r in conn.execute(q)]

    # --- inventory: keys and certificates --------------------------------------------

    @db_call("recording a key")
    def record_card(self, key: KeyRecord, certs: list[CertRecord] | None,
                    events: list[AuditEvent] = ()) -> None:  # type: ignore[assignment]
        """Upsert *key* (seen now at this desk) and, unless *certs* is None, make the
        inventory's present certificates of the key exactly *certs* (others become
        ``removed``); append *events*. One transaction."""
        import sqlalchemy as sa

        from .schema import audit, certificates, keys

        now = utcnow()
        values = {"serial": key.serial, "model": key.model, "firmware": key.firmware,
                  "form_factor": key.form_factor, "owner_upn": key.owner_upn,
                  "status": key.status, "first_seen": now, "last_seen": now,
                  "last_desk": self.desk, "note": key.note}
        ins = self._insert(keys).values(**values)
        keep = {k: ins.excluded[k] for k in ("model", "firmware", "form_factor", "status",
                                              "last_seen", "last_desk")}
        if key.owner_upn is not None:
            keep["owner_upn"] = ins.excluded.owner_upn
        if key.note is not None:
            keep["note"] = ins.excluded.note
        with self._tx() as conn:
            conn.execute(ins.on_conflict_do_update(index_elements=["serial"], set_=keep))
            if certs is not None:
                present = {(c.slot, c.fingerprint) for c in certs}
                rows = conn.execute(sa.select(certificates.c.id, certificates.c.slot,
                                              certificates.c.fingerprint)
                                    .where(certificates.c.key_serial == key.serial,
                                           certificates.c.status == "present")).all()
                gone = [r.id for r in rows if (r.slot, r.fingerprint) not in present]
                if gone:
                    conn.execute(certificates.update().where(certificates.c.id.in_(gone))
                                 .values(status="removed", updated=now))
                for c in certs:
                    cins = self._insert(certificates).values(
                        key_serial=key.serial, slot=c.slot, fingerprint=c.fingerprint,
                        serial=c.serial, subject=c.subject, issuer=c.issuer,
                        not_before=c.not_before, not_after=c.not_after,
                        certificate_user_ids=c.certificate_user_ids, status="present",
                        pem=c.pem, recorded=now, updated=now)
                    conn.execute(cins.on_conflict_do_update(
                        index_elements=["key_serial", "slot", "fingerprint"],
                        set_={"status": "present", "updated": now,
                              "certificate_user_ids": cins.excluded.certificate_user_ids}))
            if events:
                conn.execute(audit.insert(), self._audit_rows(list(events)))

    @db_call("recording a key")
    def record_key_cert(self, key: KeyRecord, cert: CertRecord) -> None:
        """Upsert an enrolled key and one certificate on it: two statements in autocommit,
        key first (a batch records every key it enrolls; other certificates of the key
        are left as they are)."""
        from .schema import certificates, keys

        now = utcnow()
        ins = self._insert(keys).values(
            serial=key.serial, model=key.model, firmware=key.firmware,
            form_factor=key.form_factor, owner_upn=key.owner_upn, status="active",
            first_seen=now, last_seen=now, last_desk=self.desk)
        cins = self._insert(certificates).values(
            key_serial=key.serial, slot=cert.slot, fingerprint=cert.fingerprint,
            serial=cert.serial, subject=cert.subject, issuer=cert.issuer,
            not_before=cert.not_before, not_after=cert.not_after,
            certificate_user_ids=cert.certificate_user_ids, status="present", pem=cert.pem,
            recorded=now, updated=now)
        with self._auto(sync=False) as conn:  # the inventory; the user row is the record
            conn.execute(ins.on_conflict_do_update(index_elements=["serial"], set_={
                k: ins.excluded[k] for k in ("model", "firmware", "owner_upn", "status",
                                             "last_seen", "last_desk")}))
            conn.execute(cins.on_conflict_do_update(
                index_elements=["key_serial", "slot", "fingerprint"],
                set_={"status": "present", "updated": now}))

    @db_call("reading the inventory")
    def key(self, serial: int) -> KeyRecord | None:
        """The key with *serial*, if the inventory has it."""
        from .schema import keys

        with self._auto() as conn:
            row = conn.execute(keys.select().where(keys.c.serial == serial)).first()
        return None if row is None else KeyRecord(**dict(row._mapping))

    @db_call("reading the inventory")
    def key_records(self, owner: str | None = None,
                    status: str | None = None) -> list[KeyRecord]:
        """Keys by serial, optionally of one owner (case-insensitive) or in one status."""
        import sqlalchemy as sa

        from .schema import keys

        q = keys.select().order_by(keys.c.serial)
        if owner is not None:
            q = q.where(sa.func.lower(keys.c.owner_upn) == owner.casefold())
        if status is not None:
            q = q.where(keys.c.status == status)
        with self._auto() as conn:
            return [KeyRecord(**dict(r._mapping)) for r in conn.execute(q)]

    @db_call("reading the inventory")
    def certificates(self, serial: int | None = None,
                     status: str | None = None) -> list[CertRecord]:
        """Certificates, optionally of one key or in one status."""
        from .schema import certificates as t

        q = t.select().order_by(t.c.key_serial, t.c.slot, t.c.id)
        if serial is not None:
            q = q.where(t.c.key_serial == serial)
        if status is not None:
            q = q.where(t.c.status == status)
        with self._auto() as conn:
            out = []
            for r in conn.execute(q):
                m = dict(r._mapping)
                m.pop("recorded"), m.pop("updated")
                m["certificate_user_ids"] = list(m["certificate_user_ids"] or [])
                out.append(CertRecord(**m))
            return out

    @db_call("updating the inventory")
    def set_key_status(self, serial: int, status: str, certificate_status: str | None = None,
                       cert_ids: list[int] | None = None,
                       events: list[AuditEvent] = ()) -> None:  # type: ignore[assignment]
        """Mark a key (and optionally some of its certificates) in one transaction."""
        from .schema import audit, certificates, keys

        if status not in KEY_STATES:
            raise UsageError(f"unknown key status {status!r}")
        now = utcnow()
        with self._tx() as conn:
            done = conn.execute(keys.update().where(keys.c.serial == serial)
                                .values(status=status, last_seen=now, last_desk=self.desk))
            if done.rowcount != 1:
                raise UsageError(f"serial {serial} is not in the inventory")
            if certificate_status is not None and cert_ids:
                conn.execute(certificates.update().where(certificates.c.id.in_(cert_ids))
                             .values(status=certificate_status, updated=now))
            if events:
                conn.execute(audit.insert(), self._audit_rows(list(events)))

    # --- escrow ----------------------------------------------------------------------

    @db_call("reading the escrow keyring")
    def meta(self, name: str) -> Any:
        """A named value, or None."""
        from .schema import meta

        with self._auto() as conn:
            row = conn.execute(meta.select().where(meta.c.name == name)).first()
        return None if row is None else row.value

    @db_call("writing the escrow keyring")
    def meta_create(self, name: str, value: Any) -> Any:
        """Store *value* under *name* unless a value is there already; return the stored
        one (so two desks creating the escrow keyring at once agree on one)."""
        from .schema import meta

        with self._auto() as conn:
            conn.execute(self._insert(meta).values(name=name, value=value)
                         .on_conflict_do_nothing(index_elements=["name"]))
            return conn.execute(meta.select().where(meta.c.name == name)).one().value

    @db_call("writing a named value")
    def meta_put(self, name: str, value: Any) -> None:
        """Create or replace the value under *name* (one round trip). The database owner's
        right: a PostgreSQL desk role may only add named values (``meta_create``)."""
        from .schema import meta

        ins = self._insert(meta).values(name=name, value=value)
        with self._auto() as conn:
            conn.execute(ins.on_conflict_do_update(index_elements=["name"],
                                                   set_={"value": ins.excluded.value}))

    @db_call("reading the escrow")
    def escrow_rows(self, serial: int | None = None) -> list[EscrowRow]:
        """Escrowed secrets (encrypted documents), of one key or all."""
        from .schema import escrow

        q = escrow.select().order_by(escrow.c.serial, escrow.c.kind)
        if serial is not None:
            q = q.where(escrow.c.serial == serial)
        with self._auto() as conn:
            return [EscrowRow(**dict(r._mapping)) for r in conn.execute(q)]

    @db_call("writing the escrow")
    def escrow_put(self, serial: int, upn: str | None, documents: dict[str, str]) -> None:
        """Create or replace the escrowed secrets of *serial* named in *documents*
        (kind -> encrypted document); other kinds stay. One round trip."""
        from .schema import escrow

        now = utcnow()
        ins = self._insert(escrow)
        set_ = {"document": ins.excluded.document, "updated": ins.excluded.updated}
        if upn is not None:
            set_["upn"] = ins.excluded.upn
        stmt = ins.on_conflict_do_update(index_elements=["serial", "kind"], set_=set_)
        with self._auto() as conn:
            conn.execute(stmt, [{"serial": serial, "kind": kind, "upn": upn, "created": now,
                                 "updated": now, "document": doc}
                                for kind, doc in documents.items()])

    # --- roster and claims -------------------------------------------------------------

    @db_call("loading the roster")
    def merge_roster(self, roster: str, rows: list[RosterInput]) -> None:
        """Bring a roster into the database (as ``BatchState.merge_roster``): new users
        become pending, pending users take the roster's current options, users already
        started keep their record, users no longer in the roster are kept but never
        enrolled. One transaction; desks may run it concurrently."""
        import sqlalchemy as sa

        from .schema import users

        now = utcnow()
        with self._tx() as conn:
            existing = {r.upn_key: r for r in conn.execute(
                sa.select(users.c.id, users.c.upn_key, users.c.status, users.c.row,
                          users.c.options, users.c.in_roster, users.c.roster))}
            present = set()
            new: list[dict[str, Any]] = []
            for row in rows:
                key = row.upn.casefold()
                present.add(key)
                pinned = row.options.get("serial")
                old = existing.get(key)
                if old is None:
                    new.append({"upn": row.upn, "upn_key": key, "roster": roster,
                                "row": row.row, "options": row.options, "in_roster": True,
                                "status": PENDING, "pinned_serial": pinned, "attempts": 0,
                                "certificate_user_ids": [], "history": [], "updated": now})
                elif old.status == PENDING:
                    # Only what changed: many desks load the same roster.
                    if (old.row, old.options, old.in_roster, old.roster) != (
                            row.row, row.options, True, roster):
                        conn.execute(users.update().where(users.c.id == old.id).values(
                            row=row.row, options=row.options, pinned_serial=pinned,
                            in_roster=True, roster=roster, updated=now))
                elif not old.in_roster:
                    conn.execute(users.update().where(users.c.id == old.id)
                                 .values(in_roster=True))
            if new:
                # Another desk may insert the same users at the same moment: skip theirs.
                conn.execute(self._insert(users).on_conflict_do_nothing(
                    index_elements=["upn_key"]), new)
            gone = [r.id for k, r in existing.items() if k not in present and r.in_roster]
            if gone:
                conn.execute(users.update().where(users.c.id.in_(gone))
                             .values(in_roster=False))

    @db_call("reading the roster")
    def users(self) -> list[UserRecord]:
        """Every user, in roster order, with their Graph binding (``--graph-bind``)."""
        import sqlalchemy as sa

        from .schema import graph_binds, users

        bind = [c.label(f"g_{c.name}") for c in graph_binds.c if c.name != "upn_key"]
        q = (sa.select(users, *bind).select_from(users.outerjoin(graph_binds))
             .order_by(users.c.row, users.c.id))
        with self._auto() as conn:
            return [UserRecord.from_row(r) for r in conn.execute(q)]

    @db_call("reading the roster")
    def find(self, upn: str) -> UserRecord | None:
        """The user with *upn* (case-insensitive)."""
        from .schema import users

        with self._auto() as conn:
            row = conn.execute(users.select().where(users.c.upn_key == upn.casefold())).first()
        return None if row is None else UserRecord.from_row(row)

    @db_call("reading the roster")
    def bound_to(self, serial: int) -> UserRecord | None:
        """The user whose enrollment is (or was) on the key with *serial*."""
        from .schema import users

        with self._auto() as conn:
            row = conn.execute(users.select().where(users.c.serial == serial,
                                                    users.c.status != REASSIGNED)
                               .order_by(users.c.id.desc()).limit(1)).first()
        return None if row is None else UserRecord.from_row(row)

    def _claim_values(self, reader: str, serial: int, lease: float) -> dict[str, Any]:
        from .schema import users

        now = utcnow()
        return {"status": ENROLLING, "serial": serial, "claim_desk": self.desk,
                "claim_reader": reader, "claimed": now, "heartbeat": now,
                "lease_until": now + dt.timedelta(seconds=lease),
                "attempts": users.c.attempts + 1, "started": now, "finished": None,
                "error": None, "last_step": None, "updated": now}

    @db_call("claiming a user")
    def claim_next(self, reader: str, serial: int, lease: float = 300.0) -> UserRecord | None:
        """Claim the next pending user for the key *serial*: one pinned to it first, else
        the first unpinned in roster order. Rows another desk is claiming at this instant
        are skipped, not waited for (``FOR UPDATE SKIP LOCKED``). One statement."""
        import sqlalchemy as sa

        from .schema import users

        pick = (sa.select(users.c.id)
                .where(users.c.status == PENDING, users.c.in_roster.is_(True),
                       sa.or_(users.c.pinned_serial.is_(None),
                              users.c.pinned_serial == serial))
                .order_by(users.c.pinned_serial.is_(None), users.c.row, users.c.id)
                .limit(1).with_for_update(skip_locked=True).scalar_subquery())
        stmt = (users.update().where(users.c.id == pick, users.c.status == PENDING)
                .values(**self._claim_values(reader, serial, lease)).returning(*users.c))
        left = (sa.select(users.c.id)
                .where(users.c.status == PENDING, users.c.in_roster.is_(True),
                       sa.or_(users.c.pinned_serial.is_(None),
                              users.c.pinned_serial == serial)).limit(1))
        with self._auto() as conn:
            for _ in range(100):
                row = conn.execute(stmt).first()
                if row is not None:
                    return UserRecord.from_row(row)
                # Nothing claimable: none left, or the last ones are being claimed by other
                # desks this instant (skipped, not waited for). Only the latter retries.
                if conn.execute(left).first() is None:
                    return None
                time.sleep(0.05)
        return None

    @db_call("claiming a user")
    def claim_user(self, user_id: int, reader: str, serial: int, lease: float = 300.0,
                   statuses: tuple[str, ...] = (INCOMPLETE, ENROLLING)) -> UserRecord | None:
        """Claim a given user (a half-made enrollment resumed on its key). A user another
        desk holds under a live lease is not taken (None). One statement."""
        import sqlalchemy as sa

        from .schema import users

        now = utcnow()
        free = sa.or_(users.c.status != ENROLLING, users.c.claim_desk == self.desk,
                      users.c.lease_until.is_(None), users.c.lease_until < now)
        stmt = (users.update()
                .where(users.c.id == user_id, users.c.status.in_(statuses), free)
                .values(**self._claim_values(reader, serial, lease)).returning(*users.c))
        with self._auto() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else UserRecord.from_row(row)

    @db_call("renewing the desk's leases")
    def heartbeat(self, lease: float = 300.0) -> int:
        """Renew the lease of every user this desk is enrolling; return how many. One
        statement per desk, not per enrollment."""
        from .schema import users

        now = utcnow()
        with self._auto(sync=False) as conn:
            return int(conn.execute(
                users.update().where(users.c.status == ENROLLING,
                                     users.c.claim_desk == self.desk)
                .values(heartbeat=now, lease_until=now + dt.timedelta(seconds=lease)))
                .rowcount)

    @db_call("recovering the desk's claims")
    def interrupted(self) -> int:
        """At a desk's start: its users still ``enrolling`` were cut off by a crash of
        this desk; they become ``incomplete`` (bound to their key, resumed when it comes
        back). Returns how many."""
        from .schema import users

        with self._auto() as conn:
            return int(conn.execute(
                users.update().where(users.c.status == ENROLLING,
                                     users.c.claim_desk == self.desk)
                .values(status=INCOMPLETE, error="interrupted (the desk stopped)",
                        lease_until=None, updated=utcnow())).rowcount)

    @db_call("recording progress")
    def update_user(self, user_id: int, events: list[AuditEvent] = (),  # type: ignore[assignment]
                    expect_status: str | None = None, **values: Any) -> bool:
        """Set columns of a user (status, error, certificate...) and append *events*.
        With *expect_status* the update happens only from that status (False if not).
        The audit rows go first: the user row is the commit point a re-run looks at."""
        from .schema import users

        self.audit(list(events))
        q = users.update().where(users.c.id == user_id)
        if expect_status is not None:
            q = q.where(users.c.status == expect_status)
        values.setdefault("updated", utcnow())
        if values.get("status") in (DONE, FAILED, INCOMPLETE, PENDING, REASSIGNED):
            values.setdefault("lease_until", None)
        # A status change is what a re-run decides on: durable. Progress alone is not.
        with self._auto(sync="status" in values or expect_status is not None) as conn:
            return bool(conn.execute(q.values(**values)).rowcount)

    @db_call("releasing a user")
    def release(self, upn: str, events: list[AuditEvent] = ()) -> UserRecord:  # type: ignore[assignment]
        """Unbind *upn* from their key (incomplete or failed, or enrolling under a lease
        that ran out): pending again, for any desk."""
        import sqlalchemy as sa

        from .schema import users

        user = self.find(upn)
        if user is None:
            raise UsageError(f"{upn} is not in the roster")
        now = utcnow()
        movable = sa.or_(users.c.status.in_((INCOMPLETE, FAILED)),
                         sa.and_(users.c.status == ENROLLING, users.c.lease_until < now))
        self.audit(list(events))
        with self._auto() as conn:
            done = conn.execute(users.update().where(users.c.id == user.id, movable).values(
                status=PENDING, serial=None, attempts=0, error=None, claim_desk=None,
                claim_reader=None, lease_until=None, updated=now)).rowcount
        if not done:
            live = (" (a desk holds it under a live lease: stop that desk, or wait "
                    "until the lease runs out)" if user.status == ENROLLING else "")
            raise UsageError(f"{upn} is {user.status}; only incomplete or failed users can be "
                             f"released{live}")
        return user

    @db_call("counting the roster")
    def counts(self) -> dict[str, int]:
        """Users per status (of users in the roster, and finished users no longer in it)."""
        import sqlalchemy as sa

        from .schema import users

        out = dict.fromkeys(USER_STATES, 0)
        final = (DONE, FAILED, REASSIGNED)
        with self._auto() as conn:
            q = (sa.select(users.c.status, sa.func.count())
                 .where(sa.or_(users.c.in_roster.is_(True), users.c.status.in_(final)))
                 .group_by(users.c.status))
            for status, n in conn.execute(q):
                out[status] = int(n)
        return out
