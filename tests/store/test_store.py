"""The store on both engines: schema versions, the append-only audit, the inventory, and
claims that hand every roster user to exactly one desk."""

from __future__ import annotations

import datetime as dt
import os
import threading

import pytest
import sqlalchemy as sa

from pivtool.store import schema
from pivtool.store.api import Store
from pivtool.store.engine import (
    RoundTrips,
    SchemaError,
    create_engine,
    current_revision,
    head_revision,
    upgrade,
)
from pivtool.store.records import (
    DONE,
    ENROLLING,
    INCOMPLETE,
    PENDING,
    AuditEvent,
    CertRecord,
    KeyRecord,
    RosterInput,
)


def roster(n: int, pinned: dict[int, int] | None = None) -> list[RosterInput]:
    pinned = pinned or {}
    return [RosterInput(i + 2, f"user{i:03d}@contoso.com", {"serial": pinned.get(i)})
            for i in range(n)]


def test_fresh_database_gets_the_newest_schema(db_url: str) -> None:
    with Store.open(db_url) as store, store.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        assert {"users", "keys", "certificates", "escrow", "audit", "meta"} <= set(
            sa.inspect(conn).get_table_names())
    if db_url.startswith("sqlite:///"):
        path = db_url[len("sqlite:///"):]
        assert os.stat(path).st_mode & 0o777 == 0o600  # who holds which key: private


def test_a_desk_started_with_another_finds_the_schema_it_created(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Desks started together on an empty database: one reads "no version", then the
    other creates the schema before the first lists the tables. The first must not take
    the now-full database for a foreign one (exit 2 at a fleet's start, seen in CI).
    PostgreSQL only: READ COMMITTED gives each query its own snapshot, while SQLite's two
    reads share one read transaction (the other desk's write waits for it to end)."""
    db_url = pg_url
    import pivtool.store.engine as engine_mod

    real = engine_mod.current_revision
    raced: list[str | None] = []

    def other_desk_wins_between_the_reads(conn: sa.Connection) -> str | None:
        rev = real(conn)
        if not raced:
            raced.append(rev)
            other = create_engine(db_url)
            try:
                upgrade(other)  # the other desk creates the schema here
            finally:
                other.dispose()
        return rev

    monkeypatch.setattr(engine_mod, "current_revision", other_desk_wins_between_the_reads)
    with Store.open(db_url) as store, store.engine.connect() as conn:
        assert real(conn) == head_revision()
    assert raced == [None]  # the interleaving really happened


def test_stale_schema_is_refused_until_upgraded(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(SchemaError, match=r"revision 0001, this pivtool needs 0003: run "
                                          r"'pivtool db upgrade'"):
        Store.open(db_url)
    engine = create_engine(db_url)
    assert upgrade(engine) == ("0001", head_revision())
    engine.dispose()
    with Store.open(db_url) as store:
        store.merge_roster("r.csv", roster(1))
        assert store.counts()[PENDING] == 1


def test_newer_schema_and_foreign_database_are_refused(db_url: str) -> None:
    with Store.open(db_url) as store, store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="newer than this pivtool knows"):
        Store.open(db_url)
    other = db_url.replace("inventory.db", "other.db") if "sqlite" in db_url else None
    if other is not None:
        engine = create_engine(other)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE payroll (id INTEGER)"))
        engine.dispose()
        with pytest.raises(SchemaError, match="no pivtool schema version"):
            Store.open(other)


def test_a_desk_without_create_refuses_an_empty_database(db_url: str) -> None:
    with pytest.raises(SchemaError, match="no pivtool schema yet"):
        Store.open(db_url, create=False)


def test_audit_is_append_only_in_the_database(db_url: str) -> None:
    with Store.open(db_url, desk="desk-1", operator="ann") as store:
        store.audit([AuditEvent("lost", "done", serial=7, upn="a@contoso.com")])
        for sql in ("UPDATE audit SET outcome = 'x'", "DELETE FROM audit"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), \
                    store.engine.begin() as conn:
                conn.execute(sa.text(sql))
        [row] = store.audit_trail(serial=7)
        assert (row.desk, row.operator, row.step, row.outcome) == ("desk-1", "ann", "lost",
                                                                   "done")


def test_record_card_keeps_the_certificates_on_the_key(db_url: str) -> None:
    a, b = CertRecord("9a", "aa" * 32, serial="01"), CertRecord("9c", "bb" * 32)
    with Store.open(db_url) as store:
        store.record_card(KeyRecord(1, model="YubiKey 5", owner_upn="a@contoso.com"), [a, b])
        c = CertRecord("9a", "cc" * 32)
        store.record_card(KeyRecord(1, firmware="5.7.1"), [c, b])
        key = store.key(1)
        assert key is not None
        # The owner is kept when a later record does not know it.
        assert (key.model, key.firmware, key.owner_upn) == (None, "5.7.1", "a@contoso.com")
        got = {(x.slot, x.fingerprint): x.status for x in store.certificates(1)}
        assert got == {("9a", "aa" * 32): "removed", ("9c", "bb" * 32): "present",
                       ("9a", "cc" * 32): "present"}
        assert [k.serial for k in store.key_records(owner="A@CONTOSO.COM")] == [1]


def test_merge_roster_is_idempotent_and_keeps_started_users(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.merge_roster("r.csv", roster(3))
        user = store.claim_next("r1", 100)
        assert user is not None and user.upn == "user000@contoso.com"
        store.merge_roster("r.csv", roster(3)[1:])
        users = {u.upn: u for u in store.users()}
        assert users["user000@contoso.com"].status == ENROLLING
        assert users["user000@contoso.com"].in_roster is False
        assert store.counts() == {PENDING: 2, ENROLLING: 0, INCOMPLETE: 0, DONE: 0,
                                  "failed": 0, "reassigned": 0}


def test_claim_prefers_the_user_pinned_to_the_key(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.merge_roster("r.csv", roster(4, pinned={2: 555}))
        first = store.claim_next("r1", 555)
        assert first is not None and first.upn == "user002@contoso.com"
        others = [store.claim_next("r1", 900 + i) for i in range(4)]
        # The pinned user is never given to another key.
        assert [u.upn if u else None for u in others] == [
            "user000@contoso.com", "user001@contoso.com", "user003@contoso.com", None]


def test_claims_are_exactly_once_across_desks(db_url: str) -> None:
    """Four desks (own engines, own connections) claim from one roster of 40 at once."""
    with Store.open(db_url) as setup:
        setup.merge_roster("r.csv", roster(40))
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def desk(name: str) -> None:
        try:
            with Store.open(db_url, desk=name) as store:
                serial = 1000 * (int(name[-1]) + 1)
                while (user := store.claim_next("reader", serial)) is not None:
                    got.setdefault(name, []).append(user.upn)
                    store.update_user(user.id, status=DONE, expect_status=ENROLLING)
                    serial += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=desk, args=(f"desk-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    claimed = [u for names in got.values() for u in names]
    assert sorted(claimed) == sorted(r.upn for r in roster(40))
    with Store.open(db_url) as store:
        assert store.counts()[DONE] == 40
        assert {u.claim_desk for u in store.users()} <= set(got)


def test_leases_resume_and_release(db_url: str) -> None:
    with Store.open(db_url, desk="A") as a, Store.open(db_url, desk="B") as b:
        a.merge_roster("r.csv", roster(2))
        user = a.claim_next("r1", 11, lease=300)
        assert user is not None
        # Another desk cannot take a user under a live lease...
        assert b.claim_user(user.id, "r9", 11) is None
        with pytest.raises(Exception, match="live lease"):
            b.release(user.upn)
        # ...its own desk re-run can (after a crash) ...
        assert a.interrupted() == 1
        assert a.find(user.upn).status == INCOMPLETE  # type: ignore[union-attr]
        again = a.claim_user(user.id, "r2", 11)
        assert again is not None and again.attempts == 2 and again.claim_reader == "r2"
        # ... and once the lease ran out, any desk may.
        with a.engine.begin() as conn:
            conn.execute(schema.users.update().values(
                lease_until=dt.datetime(2000, 1, 1)))
        assert a.heartbeat(lease=60) == 1  # the heartbeat renews a live desk's lease
        with a.engine.begin() as conn:
            conn.execute(schema.users.update().values(
                lease_until=dt.datetime(2000, 1, 1)))
        taken = b.claim_user(user.id, "r9", 11)
        assert taken is not None and taken.claim_desk == "B"
        b.update_user(taken.id, status=INCOMPLETE,
                      events=[AuditEvent("enroll", "failed", serial=11, upn=user.upn)])
        released = b.release(user.upn, [AuditEvent("release", "done", upn=user.upn)])
        assert released.serial == 11
        assert b.find(user.upn).status == PENDING  # type: ignore[union-attr]
        assert [e.step for e in b.audit_trail(upn=user.upn.upper())] == ["enroll", "release"]


def test_a_claim_is_one_round_trip(db_url: str) -> None:
    counter = RoundTrips()
    with Store.open(db_url, counter=counter) as store:
        store.merge_roster("r.csv", roster(3))
        counter.statements = counter.transactions = 0
        assert store.claim_next("r1", 1) is not None
        assert counter.total == 1
        store.heartbeat()
        store.audit([AuditEvent("step", "done"), AuditEvent("step2", "done")])
        assert counter.total == 3
