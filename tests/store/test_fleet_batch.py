"""Many desks, one PostgreSQL roster: ``pivtool batch enroll --db URL --desk NAME`` as real
processes, each with its own pile of virtual YubiKeys (``--sim-pile``).

* four desks, forty users: every user enrolled exactly once, every key in the inventory,
  the audit complete;
* a desk SIGKILLed mid-enrollment, run again: its user completes on the same key, nobody
  twice;
* a desk on a database at an older schema refuses before touching a key;
* the database going away mid-enrollment stops the desk (exit 1), the key stays bound to
  its user, and the re-run completes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa

from pivtool.sim.state import load_state
from pivtool.store.api import Store
from pivtool.store.engine import create_engine, upgrade
from tests.batch.batchhelp import BatchProc, cert_upns, gated_issuer_cmd, make_ca, write_roster
from tests.batch.test_batch_sim import make_pile, read_state
from tests.pg_stack import PgServer

PASS = "fleet-escrow-pass"
PIN = "24681357"


def desk_env(url: str, desk: str) -> dict[str, str]:
    return {"PIVTOOL_DB": url, "PIVTOOL_DESK": desk, "PIVTOOL_ESCROW_PASSPHRASE": PASS,
            "PIVTOOL_NEW_PIN": PIN}


def setup(tmp_path: Path, users: int) -> tuple[Path, list[str]]:
    work = tmp_path / "work"
    work.mkdir()
    make_ca(work)
    upns = [f"user{i:03d}@contoso.com" for i in range(users)]
    write_roster(work / "roster.csv", ["upn", *upns])
    return work, upns


def desk_args(n: int, *extra: str) -> list[str]:
    return ["roster.csv", "--sim-pile", f"pile{n}", "--escrow", "db", "--yes",
            "--state", f"desk{n}.state.json", *extra]


def test_four_desks_forty_users_exactly_once(tmp_path: Path, pg_url: str) -> None:
    work, upns = setup(tmp_path, 40)
    piles = [make_pile(work / f"pile{n}", 10, 83000000 + 100 * n) for n in range(4)]
    start = time.monotonic()
    desks = [BatchProc(desk_args(n, "--ca", "ca"), desk_env(pg_url, f"desk-{n}"), work)
             for n in range(4)]
    codes = [d.finish(timeout=240) for d in desks]
    elapsed = time.monotonic() - start
    done = [e for d in desks for e in d.events if e["event"] == "done"]
    # A desk whose pile ran out while others still worked exits 1 ("users left"): never 2+.
    assert set(codes) <= {0, 1}, [d.transcript() for d in desks]
    failed = [e for d in desks for e in d.events if e["event"] == "failed"]
    assert not failed, failed
    assert sorted(e["upn"] for e in done) == upns, [  # exactly once across the desks
        (e["event"], e.get("reason") or e.get("outcome")) for d in desks for e in d.events
        if e["event"] not in ("step", "done", "inserted", "removed", "remove-card",
                              "enrolling", "stopped", "summary")]
    with Store.open(pg_url) as store:
        assert store.counts()["done"] == 40
        users = {u.upn: u for u in store.users()}
        keys = {k.serial: k for k in store.key_records()}
        for e in done:
            u = users[e["upn"]]
            assert (u.status, u.serial, u.claim_desk) == ("done", e["serial"],
                                                          f"desk-{desks.index(_of(desks, e))}")
            assert keys[e["serial"]].owner_upn == e["upn"]
            [cert] = store.certificates(e["serial"], status="present")
            assert cert.slot == "9a" and cert.fingerprint == e["fingerprint"]
        enrolled = [a.upn for a in store.audit_trail() if a.step == "enrolled"]
        assert sorted(enrolled) == upns
        assert len(store.escrow_rows()) == 40
    # The cards agree with the database.
    for card in [c for pile in piles for c in pile]:
        st = load_state(card)
        assert cert_upns(read_state(card, tmp_path)) == [users_by_serial(users)[st.serial]]
    # Reports and Graph files for the whole roster, from the database.
    from tests.cli.clihelp import run_json

    out = run_json(None, "--db", pg_url, "batch", "report", "--report", str(work / "all"),
                   "--graph-out", str(work / "graph"))
    report = json.loads((work / "all.json").read_text())
    assert report["counts"]["done"] == 40 and len(report["users"]) == 40
    graph = [p for p in out["outputs"] if "graph-" in p]
    assert len(graph) == 2  # 20 PATCH requests per $batch body
    print(f"4 desks x 2 readers, 40 users: {elapsed:.1f} s")


def _of(desks: list[BatchProc], event: dict[str, object]) -> BatchProc:
    return next(d for d in desks if event in d.events)


def users_by_serial(users: dict[str, object]) -> dict[int, str]:
    return {u.serial: upn for upn, u in users.items()}  # type: ignore[attr-defined]


def test_killed_desk_resumes_its_user_on_the_same_key(tmp_path: Path, pg_url: str) -> None:
    work, upns = setup(tmp_path, 3)
    make_pile(work / "pile0", 3, 84000000)
    gate = work / "gate"
    gate.write_text("closed")
    issuer = ["--issuer-cmd", gated_issuer_cmd(work / "ca", gate)]
    first = BatchProc(desk_args(0, *issuer, "--sim-readers", "1"),
                      desk_env(pg_url, "desk-k"), work)
    [claim] = first.wait_for(lambda e: e["event"] == "enrolling")
    first.wait_for(lambda e: e.get("step") == "certificate request")
    first.kill()
    with Store.open(pg_url) as store:
        held = store.find(claim["upn"])
        assert held is not None and (held.status, held.serial) == ("enrolling", claim["serial"])
        # Another desk does not take a user under this desk's live lease.
        assert store.claim_user(held.id, "elsewhere", 1) is None
    gate.unlink()
    again = BatchProc(desk_args(0, *issuer), desk_env(pg_url, "desk-k"), work)
    assert again.finish(timeout=120) == 0, again.transcript()
    resumed = [e for e in again.events if e["event"] == "enrolling" and e["resume"]]
    assert [(e["upn"], e["serial"]) for e in resumed] == [(claim["upn"], claim["serial"])]
    with Store.open(pg_url) as store:
        assert store.counts()["done"] == 3
        enrolled = [a.upn for a in store.audit_trail() if a.step == "enrolled"]
        assert sorted(enrolled) == upns  # nobody twice
        assert store.find(claim["upn"]).serial == claim["serial"]  # type: ignore[union-attr]


def test_stale_schema_is_refused_before_any_key(tmp_path: Path, pg_url: str) -> None:
    work, _ = setup(tmp_path, 2)
    pile = make_pile(work / "pile0", 2, 85000000)
    engine = create_engine(pg_url)
    upgrade(engine, "0001")
    engine.dispose()
    before = [p.read_bytes() for p in pile]
    p = BatchProc(desk_args(0, "--ca", "ca"), desk_env(pg_url, "desk-s"), work)
    assert p.finish() == 2
    assert "schema is at revision 0001, this pivtool needs 0003" in p.stderr
    assert [p.read_bytes() for p in pile] == before


def test_database_gone_mid_batch_stops_the_desk_and_the_rerun_completes(
        tmp_path: Path, pg_server: PgServer) -> None:
    dbname = pg_server.createdb()
    url = pg_server.url(dbname)
    work, upns = setup(tmp_path, 2)
    make_pile(work / "pile0", 2, 86000000)
    gate = work / "gate"
    gate.write_text("closed")
    issuer = ["--issuer-cmd", gated_issuer_cmd(work / "ca", gate), "--sim-readers", "1"]
    p = BatchProc(desk_args(0, *issuer), desk_env(url, "desk-g"), work)
    [claim] = p.wait_for(lambda e: e["event"] == "enrolling")
    p.wait_for(lambda e: e.get("step") == "certificate request")
    # The database goes away: no new connections, the desk's sessions cut.
    pg_server.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    pg_server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
    gate.unlink()
    assert p.finish(timeout=60) == 1, p.transcript()
    assert "database unavailable" in p.stderr
    assert not [e for e in p.events if e["event"] == "done" and e["upn"] != claim["upn"]]
    pg_server.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    with Store.open(url) as store:  # the key stays bound to its user
        held = store.find(claim["upn"])
        assert held is not None and (held.status, held.serial) == ("enrolling", claim["serial"])
    again = BatchProc(desk_args(0, *issuer[:2]), desk_env(url, "desk-g"), work)
    assert again.finish(timeout=120) == 0, again.transcript()
    with Store.open(url) as store:
        assert store.counts()["done"] == 2
        assert store.find(claim["upn"]).serial == claim["serial"]  # type: ignore[union-attr]
        assert sorted(u.upn for u in store.users() if u.status == "done") == upns
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM keys")).scalar() == 2
    engine.dispose()
