"""Each user's Graph binding in the store, on both engines: the write-ahead claim that gives a
bind to exactly one desk, leases, a crashed desk's bind freed by its re-run, and the
schema upgrade 0002 -> 0003 in place with the data kept."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from pivtool.store import schema
from pivtool.store.api import Store
from pivtool.store.binds import BIND_FAILED, BINDING, BOUND
from pivtool.store.engine import SchemaError, create_engine, head_revision, upgrade
from pivtool.store.records import DONE, RosterInput
from tests.cli.clihelp import run_json

IDS = ["X509:<I>CN=CA<SR>01", "X509:<SKI>AB"]


def enrolled(store: Store, n: int) -> list[str]:
    """*n* users, all done (as after their enrollment)."""
    upns = [f"user{i:03d}@contoso.com" for i in range(n)]
    store.merge_roster("r.csv", [RosterInput(i + 2, u, {"serial": None})
                                 for i, u in enumerate(upns)])
    for u in store.users():
        store.update_user(u.id, status=DONE, serial=1000 + u.id)
    return upns


def bind_row(store: Store, upn: str) -> dict[str, object]:
    with store.engine.connect() as conn:
        row = conn.execute(schema.graph_binds.select()
                           .where(schema.graph_binds.c.upn_key == upn.casefold())).one()
    return dict(row._mapping)


def test_two_desks_claim_each_bind_exactly_once(db_url: str) -> None:
    with Store.open(db_url, desk="desk-a") as a, Store.open(db_url, desk="desk-b") as b:
        upns = enrolled(a, 30)
        claimed: dict[str, list[str]] = {u: [] for u in upns}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def desk(store: Store) -> None:
            try:
                for upn in upns:
                    if store.bind_claim(upn, IDS, 60) is not None:
                        with lock:
                            claimed[upn].append(store.desk)
                        assert store.bind_finish(upn, True, True, IDS, None)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=desk, args=(s,)) for s in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert all(len(desks) == 1 for desks in claimed.values()), claimed
        # Bound: never claimed again, by anyone.
        assert a.bind_claim(upns[0], IDS, 60) is None and b.bind_claim(upns[0], IDS, 60) is None
        graph = {u.upn: u.graph for u in a.users()}
        assert all(g is not None and g["status"] == BOUND and g["values"] == IDS
                   and g["attempts"] == 1 and g["patched"] for g in graph.values())


def test_a_live_lease_keeps_other_desks_off_and_a_crashed_desk_frees_its_own(
        db_url: str) -> None:
    with Store.open(db_url, desk="desk-a") as a, Store.open(db_url, desk="desk-b") as b:
        ann, ben = enrolled(a, 2)
        row = a.bind_claim(ann, IDS, 60)
        assert row is not None and (row["status"], row["desk"], row["attempts"]) == (
            BINDING, "desk-a", 1)
        assert b.bind_claim(ann, IDS, 60) is None  # desk-a's live lease
        a.bind_retry(ann)
        assert b.bind_heartbeat(60) == 0 and a.bind_heartbeat(60) == 1
        # desk-a dies mid-bind; its re-run frees the bind at the start and takes it again.
        assert a.bind_interrupted() == 1
        again = a.bind_claim(ann, IDS, 60)
        assert again is not None and again["attempts"] == 3
        # A bind whose lease ran out is anybody's; the old holder can no longer finish it.
        with a.engine.begin() as conn:
            conn.execute(schema.graph_binds.update().values(
                lease_until=dt.datetime(2000, 1, 1)))
        taken = b.bind_claim(ann, IDS, 60)
        assert taken is not None and taken["desk"] == "desk-b"
        assert not a.bind_finish(ann, True, True, IDS, None)
        assert b.bind_finish(ann, True, False, [], None)
        done = bind_row(b, ann)
        assert (done["status"], done["desk"], done["lease_until"]) == (BOUND, "desk-b", None)
        # A failed bind stays failed until a run binds it again.
        assert a.bind_claim(ben, IDS, 60) is not None
        assert a.bind_finish(ben, False, False, None, "HTTP 503")
        failed = bind_row(a, ben)
        assert (failed["status"], failed["error"], failed["lease_until"]) == (
            BIND_FAILED, "HTTP 503", None)
        assert b.bind_claim(ben, IDS, 60) is not None


def test_upgrade_0002_to_0003_in_place_keeps_the_data(db_url: str) -> None:
    engine = create_engine(db_url)
    upgrade(engine, "0002")
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    with engine.begin() as conn:
        conn.execute(schema.users.insert(), [
            {"upn": "Ann@contoso.com", "upn_key": "ann@contoso.com", "roster": "r.csv",
             "row": 2, "options": {"serial": None}, "in_roster": True, "status": DONE,
             "serial": 7001, "attempts": 1, "certificate_user_ids": [], "history": [],
             "updated": now}])
        conn.execute(schema.keys.insert().values(serial=7001, owner_upn="Ann@contoso.com",
                                                 status="active", first_seen=now,
                                                 last_seen=now))
        conn.execute(schema.audit.insert().values(time=now, step="enrolled", outcome="done",
                                                  serial=7001, upn="Ann@contoso.com"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"revision 0002, this pivtool needs 0003: run "
                                          r"'pivtool db upgrade'"):
        Store.open(db_url, create=False)
    out = run_json(None, "--db", db_url, "db", "upgrade")
    assert (out["before"], out["revision"]) == ("0002", head_revision()) == ("0002", "0003")
    with Store.open(db_url, create=False, desk="desk-a") as store:
        [ann] = store.users()
        assert (ann.upn, ann.status, ann.serial, ann.graph) == (
            "Ann@contoso.com", DONE, 7001, None)
        key = store.key(7001)
        assert key is not None and key.owner_upn == "Ann@contoso.com"
        assert [a.step for a in store.audit_trail(serial=7001)] == ["enrolled"]
        assert store.bind_claim("ann@contoso.com", IDS, 60) is not None
        with store.engine.connect() as conn:
            assert "graph_binds" in sa.inspect(conn).get_table_names()
