"""The batch's default state: a SQLite database beside the state file (``roster.state.db``
beside ``roster.state.json``); the JSON state of an older pivtool imported once; the JSON
file itself on request (``--state-format json``). On a ``--sim-pile`` (no pcscd).

A half-made enrollment is made with ``--issuer-cmd false``: the card is changed (PIN, PUK,
management key, 9a key) and then the issuer fails, which leaves the user ``incomplete`` and
bound to that key, as a pulled card or a killed batch does."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from pivtool.sim.state import load_state
from pivtool.workflows.batch import BatchPaths
from tests.batch.batchhelp import cert_upns, make_ca, read_batch_state, read_jsonl, write_roster
from tests.batch.test_batch_sim import invoke, make_pile, read_state

ENV = {"PIVTOOL_NEW_PIN": "51739264", "PIVTOOL_NEW_PUK": "80462915"}


def _desk(tmp_path: Path, roster: list[str]) -> tuple[Path, Path]:
    work = tmp_path / "work"
    work.mkdir()
    make_ca(work)
    write_roster(work / "roster.csv", roster)
    return work, make_pile(work / "pile", 1)[0]


def _enroll(work: Path, *extra: str) -> tuple[int, list[Any], str]:
    return invoke(work, "batch", "enroll", "roster.csv", "--json", "--sim-pile", "pile",
                  "--yes", *extra, env=ENV)


def _json(work: Path, *args: str) -> Any:
    """Run a read command with --json from *work*; its one JSON document."""
    from click.testing import CliRunner

    from pivtool.cli.main import cli

    old = os.getcwd()
    os.chdir(work)
    try:
        r = CliRunner().invoke(cli, ["--json", *args], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _ok(kind: str, events: list[Any]) -> list[Any]:
    return [e for e in events if e["event"] == kind]


def test_state_names() -> None:
    """The database goes beside the state's name: .json becomes .db, other names get .db;
    the lock and the outputs keep the state file's names (an older pivtool on the same
    file is kept off by the same lock)."""
    p = BatchPaths.derive("roster.state.json")
    assert (p.database, p.lock, p.audit) == (Path("roster.state.db"),
                                             Path("roster.state.json.lock"),
                                             Path("roster.audit.jsonl"))
    assert BatchPaths.derive("roster.state.db") == p  # naming the database: the same batch
    q = BatchPaths.derive("/srv/progress")
    assert (q.database, q.lock, q.report) == (Path("/srv/progress.db"),
                                              Path("/srv/progress.lock"),
                                              Path("/srv/progress.report"))


def test_legacy_json_state_imported_once_and_resumed_on_the_same_key(tmp_path: Path) -> None:
    work, card = _desk(tmp_path, ["upn", "u1@contoso.com", "u2@contoso.com"])
    # An older pivtool's batch: the JSON state file (today: --state-format json), u1 left
    # half-enrolled on the key.
    rc, events, err = _enroll(work, "--issuer-cmd", "false", "--state-format", "json")
    assert rc == 1, err
    assert [e["user_status"] for e in _ok("failed", events)] == ["incomplete"]
    assert not (work / "roster.state.db").exists()
    legacy = json.loads((work / "roster.state.json").read_text())
    assert legacy["users"]["u1@contoso.com"]["status"] == "incomplete"
    key_before = load_state(card).keys[0x9A].private_key_pem

    # This pivtool: the same command without --state-format imports it and finishes u1.
    rc, events, err = _enroll(work, "--ca", "ca")
    assert rc == 1, err  # u2 has no key left in the pile
    assert [(e["upn"], e["resume"]) for e in _ok("enrolling", events)] == [
        ("u1@contoso.com", True)]
    assert [e["upn"] for e in _ok("done", events)] == ["u1@contoso.com"]
    assert events[-1]["state"] == "roster.state.db"
    # The same key (no second key), now with u1's certificate.
    assert load_state(card).keys[0x9A].private_key_pem == key_before
    assert cert_upns(read_state(card, tmp_path)) == ["u1@contoso.com"]
    assert not (work / "roster.state.json").exists()
    assert json.loads((work / "roster.state.json.imported").read_text()) == legacy
    users = read_batch_state(work)["users"]
    assert users["u1@contoso.com"]["status"] == "done"
    assert users["u1@contoso.com"]["attempts"] == 2
    assert users["u2@contoso.com"]["status"] == "pending"

    # Again: nothing to import, nobody enrolled twice; the import audited exactly once.
    rc, events, err = _enroll(work, "--ca", "ca")
    assert rc == 1 and not _ok("enrolling", events), err
    assert [e["outcome"] for e in _ok("refused", events)] == ["already-enrolled"]
    from pivtool.store.api import Store

    with Store.open(f"sqlite:///{work / 'roster.state.db'}", create=False) as store:
        imports = [a for a in store.audit_trail() if a.step == "import"]
    assert len(imports) == 1 and "roster.state.json.imported" in imports[0].detail


def test_status_report_release_and_modes_on_the_default_state(tmp_path: Path) -> None:
    work, card = _desk(tmp_path, ["upn", "u1@contoso.com", "u2@contoso.com", "bad row"])
    rc, events, err = _enroll(work, "--issuer-cmd", "false")
    assert rc == 1, err
    assert [e["user_status"] for e in _ok("failed", events)] == ["incomplete"]
    serial = load_state(card).serial

    # 0600 for the database and the -wal/-shm files SQLite makes beside it, whatever the
    # umask of whoever opens it next.
    from pivtool.store.api import Store

    old = os.umask(0)
    try:
        with Store.open(f"sqlite:///{work / 'roster.state.db'}", create=False) as store:
            store.users()
            modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                     for p in work.glob("roster.state.db*")}
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(["roster.state.db", "roster.state.db-wal",
                                   "roster.state.db-shm"], 0o600)

    def status() -> Any:
        return _json(work, "batch", "status", "--state", "roster.state.json")

    st = status()
    assert st["state"] == "roster.state.db"
    assert st["counts"]["incomplete"] == 1 and st["counts"]["pending"] == 1
    assert st["counts"]["invalid"] == 1 and st["invalid_rows"][0]["row"] == 4
    u1 = next(u for u in st["users"] if u["upn"] == "u1@contoso.com")
    assert u1["serial"] == serial and u1["last_step"] == "certificate request"

    _json(work, "batch", "report", "--state", "roster.state.json")
    report = json.loads((work / "roster.report.json").read_text())
    assert [u["status"] for u in report["users"]] == ["incomplete", "pending"]
    assert report["invalid_rows"] == st["invalid_rows"]

    assert _json(work, "batch", "release", "--state", "roster.state.json", "--yes",
                 "u1@contoso.com") == {"schema": "pivtool.batch-release/1",
                                             "upn": "u1@contoso.com",
                                             "released_serial": serial, "status": "pending"}
    assert [u["status"] for u in status()["users"]] == ["pending", "pending"]
    released = [a for a in read_jsonl(work / "roster.audit.jsonl") if a["step"] == "release"]
    assert [(a["upn"], a["serial"]) for a in released] == [("u1@contoso.com", serial)]


def test_import_keeps_bindings_and_bad_rows(tmp_path: Path) -> None:
    """A state file's confirmed Entra bindings and bad roster rows come along: a
    --graph-bind re-run does not ask Graph again, status and reports still list the rows."""
    from pivtool.workflows.batch import BatchState
    from pivtool.workflows.batch.dbstate import DbBatchState
    from pivtool.workflows.batch.local import import_legacy, open_local
    from pivtool.workflows.roster import RosterDefaults, load_roster

    roster = write_roster(tmp_path / "r.csv", ["upn", "a@contoso.com", "b@contoso.com", "x"])
    paths = BatchPaths.derive(tmp_path / "r.state.json")
    old = BatchState.load(paths.state)
    old.merge_roster(str(roster), load_roster(roster, RosterDefaults()))
    a = old.users["a@contoso.com"]
    a.status, a.serial = "done", 86000001
    a.graph = {"status": "bound", "values": ["X509:<SKI>ab"], "patched": True,
               "added": ["X509:<SKI>ab"], "attempts": 1, "error": None}
    old.save()
    with open_local(paths) as store:
        done = import_legacy(store, paths)
        assert done is not None and done[1] == tmp_path / "r.state.json.imported"
        assert import_legacy(store, paths) is None  # renamed: never twice
        state = DbBatchState(store, path=paths.database)
        assert state.users["a@contoso.com"].graph["status"] == "bound"  # type: ignore[index]
        assert state.users["b@contoso.com"].graph is None
        assert [r["row"] for r in state.doc["invalid_rows"]] == [4]


def test_default_database_of_an_older_pivtool_is_upgraded(tmp_path: Path) -> None:
    """The default state's file is the batch's own: an older schema is brought up to date
    when the batch opens it (a --db database is refused until 'pivtool db upgrade')."""
    import pytest

    from pivtool.store.api import Store
    from pivtool.store.engine import SchemaError, create_engine, head_revision, upgrade
    from pivtool.workflows.batch.local import open_local, sqlite_url

    paths = BatchPaths.derive(tmp_path / "r.state.json")
    engine = create_engine(sqlite_url(paths.database))
    upgrade(engine, "0002")
    engine.dispose()
    with pytest.raises(SchemaError, match="db upgrade"):
        Store.open(sqlite_url(paths.database))
    with open_local(paths) as store, store.engine.connect() as conn:
        from pivtool.store.engine import current_revision

        assert current_revision(conn) == head_revision() != "0002"
