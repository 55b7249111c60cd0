"""``batch enroll --sim-pile ... --graph-bind``: every enrolled user bound exactly once in
the Graph stand-in, across a batch killed mid-bind (the PATCH applied, its answer lost) and
the re-run; a failing Graph never undoes an enrollment, and the re-run binds what is missing.
On the JSON state file (``--state-format json``); test_batch_graph_bind_db.py runs the same
on the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pivtool.workflows.batch.graphbind import GraphBinding
from tests.batch.batchhelp import make_ca, read_jsonl, write_roster
from tests.batch.test_batch_sim import ESCROW_PASS, invoke, make_pile
from tests.entra.conftest import app_env
from tests.entra.graph_standin import GraphStandIn

USERS = ["ann@contoso.com", "ben@contoso.com", "cat@contoso.com"]


def _desk(tmp_path: Path, standin: GraphStandIn) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    make_ca(work)
    write_roster(work / "roster.csv", ["upn", *USERS])
    make_pile(work / "pile", len(USERS))
    for upn in USERS:
        standin.add_user(upn)
    return work


def _args(*extra: str) -> list[str]:
    return ["batch", "enroll", "roster.csv", "--json", "--sim-pile", "pile", "--ca", "ca",
            "--sim-readers", "1", "--pin-letters", "letters", "--escrow", "escrow.json",
            "--yes", "--state-format", "json", "--graph-bind", *extra]


def _patches_per_user(standin: GraphStandIn) -> dict[str, int]:
    ids = {u.id: u.upn for u in standin.users.values()}
    out: dict[str, int] = {}
    for _m, path, _q, _h in standin.requests("PATCH"):
        upn = ids[path.rsplit("/", 1)[-1]]
        out[upn] = out.get(upn, 0) + 1
    return out


def test_every_user_bound_exactly_once_across_a_crash(tmp_path: Path,
                                                      standin: GraphStandIn) -> None:
    work = _desk(tmp_path, standin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
    env.update(app_env(standin), PIVTOOL_ESCROW_PASSPHRASE=ESCROW_PASS)
    proc = subprocess.Popen([sys.executable, "-m", "pivtool", *_args()], cwd=work, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def kill_on_first_patch(method: str, path: str, status: int) -> None:
        # The write reached Entra; the batch dies before it hears the answer.
        if method == "PATCH" and status == 204 and standin.on_handled is not None:
            standin.on_handled = None
            os.kill(proc.pid, signal.SIGKILL)

    standin.on_handled = kill_on_first_patch
    try:
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((work / "roster.state.json").read_text())
    first = next(u for u in state["users"].values() if u["status"] == "done")
    assert first["graph"]["status"] == "binding"  # written ahead; the answer was lost
    assert _patches_per_user(standin) == {first["upn"]: 1}

    rc, events, err = invoke(work, *_args(), env=app_env(standin))
    assert rc == 0, err
    bound = [e for e in events if e["event"] == "graph-bound"]
    assert sorted(e["upn"] for e in bound) == USERS
    # The killed user's bind is confirmed without a second write.
    again = next(e for e in bound if e["upn"] == first["upn"])
    assert again["patched"] is False and again["added"] == []
    assert _patches_per_user(standin) == {u: 1 for u in USERS}
    summary = events[-1]
    assert summary["graph"] == {"bound": 3, "failed": 0, "binding": 0, "unbound": 0}
    for upn in USERS:
        values = standin.user(upn).certificate_user_ids
        assert len(values) == 3
        assert values[0].startswith("X509:<I>O=Contoso,CN=Contoso Batch CA<SR>")
    # Recorded per user in the state, the report and the audit log.
    report = json.loads((work / "roster.report.json").read_text())
    assert {u["upn"]: u["graph"]["status"] for u in report["users"]} == \
        {u: "bound" for u in USERS}
    audit = read_jsonl(work / "roster.audit.jsonl")
    assert sum(a["step"] == "graph-bind" and a["outcome"] == "done" for a in audit) == 3

    # A third run: nothing to enroll, nothing to write.
    rc, events, err = invoke(work, *_args(), env=app_env(standin))
    assert rc == 0, err
    assert not [e for e in events if e["event"].startswith("graph-")]
    assert _patches_per_user(standin) == {u: 1 for u in USERS}


def test_failed_bind_keeps_the_enrollment_and_rerun_binds_it(
        tmp_path: Path, standin: GraphStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    work = _desk(tmp_path, standin)
    waits: list[float] = []
    monkeypatch.setattr(GraphBinding, "graph_sleep", staticmethod(waits.append))
    # Graph answers 503 to every write of the first user: the client retries 4 times on
    # Retry-After, the batch twice more with backoff; then the next users go through.
    standin.throttle("PATCH", "/v1.0/users/", count=15, retry_after=0, status=503)
    t0 = time.monotonic()
    rc, events, err = invoke(work, *_args(), env=app_env(standin))
    assert rc == 1, err
    failed = [e for e in events if e["event"] == "graph-failed"]
    assert len(failed) == 1 and "HTTP 503" in failed[0]["error"]
    assert failed[0]["attempts"] == 3 and waits == [1.0, 2.0]
    assert sum(e["event"] == "done" for e in events) == 3  # every enrollment stands
    assert events[-1]["graph"]["failed"] == 1 and events[-1]["counts"]["done"] == 3
    loser = failed[0]["upn"]
    assert standin.user(loser).certificate_user_ids == []
    assert time.monotonic() - t0 < 60

    rc, events, err = invoke(work, *_args(), env=app_env(standin))
    assert rc == 0, err
    assert [e["upn"] for e in events if e["event"] == "graph-bound"] == [loser]
    assert len(standin.user(loser).certificate_user_ids) == 3
    assert _patches_per_user(standin)[loser] == 16  # 15 answered 503, then one write


def test_graph_bind_needs_an_app_credential(tmp_path: Path, standin: GraphStandIn) -> None:
    work = _desk(tmp_path, standin)
    env = app_env(standin)
    del env["PIVTOOL_CLIENT_SECRET"]
    rc, _events, err = invoke(work, *_args(), env=env)
    assert rc == 2 and "--graph-bind runs unattended" in err
    env["PIVTOOL_CLIENT_SECRET"] = "not-the-secret"
    rc, _events, err = invoke(work, *_args(), env=env)
    assert rc == 3 and "AADSTS7000215" in err
    assert not (work / "roster.state.json").exists()  # refused before any key
    rc, _events, err = invoke(work, *_args()[:-1], "--tenant", "x.example", env=env)
    assert rc == 2 and "--tenant is for --graph-bind" in err
