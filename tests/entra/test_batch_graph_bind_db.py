"""``batch enroll --db URL --graph-bind`` on both engines, against the Graph stand-in: two
desks bind every user exactly once; a desk SIGKILLed between Entra applying a PATCH and the
database recording it is finished by its re-run without a second PATCH; Graph's 429/503
are retried, a bind that still fails keeps the enrollment and a re-run binds it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pivtool.store import schema
from pivtool.store.api import Store
from pivtool.workflows.batch.graphbind import GraphBinding
from tests.batch.batchhelp import BatchProc, make_ca, write_roster
from tests.batch.test_batch_sim import invoke, make_pile
from tests.entra.conftest import app_env
from tests.entra.graph_standin import GraphStandIn
from tests.entra.test_batch_graph_bind import _patches_per_user
from tests.pg_stack import db_url, pg_server

__all__ = ["db_url", "pg_server"]  # fixtures

PASS = "fleet-escrow-pass"
PIN = "24681357"


def _setup(tmp_path: Path, standin: GraphStandIn, n: int) -> tuple[Path, list[str]]:
    work = tmp_path / "work"
    work.mkdir()
    make_ca(work)
    upns = [f"user{i:02d}@contoso.com" for i in range(n)]
    write_roster(work / "roster.csv", ["upn", *upns])
    for upn in upns:
        standin.add_user(upn)
    return work, upns


def _env(url: str, desk: str, standin: GraphStandIn) -> dict[str, str]:
    return {"PIVTOOL_DB": url, "PIVTOOL_DESK": desk, "PIVTOOL_ESCROW_PASSPHRASE": PASS,
            "PIVTOOL_NEW_PIN": PIN, **app_env(standin)}


def _args(n: int, *extra: str) -> list[str]:
    return ["roster.csv", "--sim-pile", f"pile{n}", "--escrow", "db", "--ca", "ca", "--yes",
            "--state", f"desk{n}.state.json", "--graph-bind", *extra]


def _binds(url: str) -> dict[str, dict[str, object]]:
    with Store.open(url, create=False) as store, store.engine.connect() as conn:
        return {r.upn_key: dict(r._mapping) for r in conn.execute(schema.graph_binds.select())}


def test_two_desks_bind_every_user_exactly_once(tmp_path: Path, standin: GraphStandIn,
                                                db_url: str) -> None:
    work, upns = _setup(tmp_path, standin, 6)
    for n in range(2):
        make_pile(work / f"pile{n}", 3, 87000000 + 100 * n)
    desks = [BatchProc(_args(n), _env(db_url, f"desk-{n}", standin), work) for n in range(2)]
    codes = [d.finish(timeout=180) for d in desks]
    assert set(codes) <= {0, 1}, [d.transcript() for d in desks]
    bound = [e for d in desks for e in d.events if e["event"] == "graph-bound"]
    assert sorted(e["upn"] for e in bound) == upns, [d.transcript() for d in desks]
    assert all(e["patched"] for e in bound)
    assert _patches_per_user(standin) == dict.fromkeys(upns, 1)
    binds = _binds(db_url)
    assert {k: (b["status"], b["attempts"], b["patched"]) for k, b in binds.items()} == \
        dict.fromkeys(upns, ("bound", 1, True))
    # The desk that enrolled a user bound them.
    enrolled_by = {e["upn"]: f"desk-{n}" for n, d in enumerate(desks) for e in d.events
                   if e["event"] == "done"}
    assert {k: b["desk"] for k, b in binds.items()} == enrolled_by
    with Store.open(db_url, create=False) as store:
        audit = [a for a in store.audit_trail() if a.step == "graph-bind"]
        assert sorted(a.upn for a in audit if a.outcome == "done") == upns
        assert all(len(standin.user(u).certificate_user_ids) == 3 for u in upns)
    # The summary counts the whole roster's bindings, and a re-run binds nothing.
    rc, events, err = invoke(work, *["batch", "enroll", "--json", *_args(0)],
                             env=_env(db_url, "desk-0", standin))
    assert rc == 0, err
    assert not [e for e in events if e["event"].startswith("graph-")]
    assert events[-1]["graph"] == {"bound": 6, "failed": 0, "binding": 0, "unbound": 0}
    assert _patches_per_user(standin) == dict.fromkeys(upns, 1)


def test_desk_killed_after_the_patch_reruns_without_a_second_patch(
        tmp_path: Path, standin: GraphStandIn, db_url: str) -> None:
    work, upns = _setup(tmp_path, standin, 3)
    make_pile(work / "pile0", 3, 88000000)
    desk = BatchProc(_args(0, "--sim-readers", "1"), _env(db_url, "desk-k", standin), work)

    def kill_on_first_patch(method: str, path: str, status: int) -> None:
        # Entra applied the write; the desk dies before it hears the answer.
        if method == "PATCH" and status == 204 and standin.on_handled is not None:
            standin.on_handled = None
            os.kill(desk.proc.pid, signal.SIGKILL)

    standin.on_handled = kill_on_first_patch
    assert desk.finish(timeout=120) == -signal.SIGKILL
    [first] = [u for u, n in _patches_per_user(standin).items()]
    assert _binds(db_url)[first]["status"] == "binding"  # written ahead, answer lost

    rc, events, err = invoke(work, *["batch", "enroll", "--json", *_args(0)],
                             env=_env(db_url, "desk-k", standin))
    assert rc == 0, err
    bound = {e["upn"]: e for e in events if e["event"] == "graph-bound"}
    assert sorted(bound) == upns
    assert bound[first]["patched"] is False and bound[first]["added"] == []
    assert _patches_per_user(standin) == dict.fromkeys(upns, 1)
    binds = _binds(db_url)
    assert {k: b["status"] for k, b in binds.items()} == dict.fromkeys(upns, "bound")
    assert binds[first]["attempts"] == 2  # the killed attempt and the confirming one


def test_throttled_graph_is_retried_and_a_failed_bind_is_rerun(
        tmp_path: Path, standin: GraphStandIn, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    work, upns = _setup(tmp_path, standin, 2)
    make_pile(work / "pile0", 2, 89000000)
    waits: list[float] = []
    monkeypatch.setattr(GraphBinding, "graph_sleep", staticmethod(waits.append))
    argv = ["batch", "enroll", "--json", *_args(0, "--sim-readers", "1")]
    # The first user's writes: 5 x 429 (the client's own retries give up), then 5 x 503
    # (the batch's second attempt gives up), then one that goes through.
    standin.throttle("PATCH", "/v1.0/users/", count=5, retry_after=0, status=429)
    standin.throttle("PATCH", "/v1.0/users/", count=5, retry_after=0, status=503)
    rc, events, err = invoke(work, *argv, env=_env(db_url, "desk-t", standin))
    assert rc == 0, err
    bound = [e for e in events if e["event"] == "graph-bound"]
    assert [e["attempts"] for e in bound] == [3, 1] and waits == [1.0, 2.0]
    first = bound[0]["upn"]
    assert _patches_per_user(standin) == {first: 11, bound[1]["upn"]: 1}
    with Store.open(db_url, create=False) as store:
        retries = [a.detail for a in store.audit_trail(upn=first)
                   if a.step == "graph-bind" and a.outcome == "retry"]
        assert len(retries) == 2 and "429" in retries[0] and "503" in retries[1]
    assert _binds(db_url)[first]["attempts"] == 3

    # A third user, and Graph down for all of their writes: the enrollment stands, the
    # bind is recorded as failed, and the next run binds it.
    write_roster(work / "roster.csv", ["upn", *upns, "user99@contoso.com"])
    standin.add_user("user99@contoso.com")
    make_pile(work / "pile1", 1, 89000100)
    standin.throttle("PATCH", "/v1.0/users/", count=15, retry_after=0, status=503)
    argv1 = ["batch", "enroll", "--json", *_args(1, "--sim-readers", "1")]
    rc, events, err = invoke(work, *argv1, env=_env(db_url, "desk-u", standin))
    assert rc == 1, err
    [failed] = [e for e in events if e["event"] == "graph-failed"]
    assert failed["upn"] == "user99@contoso.com" and "HTTP 503" in failed["error"]
    assert events[-1]["counts"]["done"] == 3 and events[-1]["graph"]["failed"] == 1
    assert _binds(db_url)["user99@contoso.com"]["status"] == "failed"
    rc, events, err = invoke(work, *argv, env=_env(db_url, "desk-t", standin))  # any desk
    assert rc == 0, err
    assert [e["upn"] for e in events if e["event"] == "graph-bound"] == ["user99@contoso.com"]
    assert _binds(db_url)["user99@contoso.com"]["desk"] == "desk-t"
    assert _patches_per_user(standin)["user99@contoso.com"] == 16
