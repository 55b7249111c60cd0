"""The desk role of docs/fleet.md, on a real PostgreSQL: it claims users and records keys,
certificates, escrow and audit rows, and it cannot delete anything, change an audit row or
the schema. The SQL is what ``pivtool db grants`` prints and docs/fleet.md shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from pivtool.store.api import Store
from pivtool.store.engine import create_engine, upgrade
from pivtool.store.records import AuditEvent, CertRecord, KeyRecord, RosterInput
from pivtool.store.roles import desk_grants
from pivtool.workflows.escrow import StoreEscrow
from tests.cli.clihelp import run
from tests.pg_stack import PgServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"


def test_the_documented_grants_are_the_printed_ones() -> None:
    text = DOC.read_text()
    printed = run(None, "db", "grants").stdout
    assert printed == desk_grants()
    assert printed.strip() in text, "docs/fleet.md shows other GRANTs than 'pivtool db grants'"


def test_a_desk_role_records_but_never_deletes(pg_server: PgServer) -> None:
    dbname = pg_server.createdb()
    engine = create_engine(pg_server.url(dbname))
    upgrade(engine)  # as the owner (the superuser here)
    engine.dispose()
    group, desk = f"desks_{os.getpid()}", f"desk_{os.getpid()}"
    for statement in desk_grants(group, dbname).splitlines():
        pg_server.execute(statement, dbname)
    pg_server.execute(f"CREATE ROLE {desk} LOGIN IN ROLE {group}", dbname)
    url = pg_server.url(dbname, user=desk)

    with Store.open(url, desk="desk-1", create=False) as store:
        store.merge_roster("r.csv", [RosterInput(2, "ann@contoso.com", {"serial": None})])
        user = store.claim_next("reader", 99)
        assert user is not None
        store.record_card(KeyRecord(99, owner_upn="ann@contoso.com"),
                          [CertRecord("9a", "ab" * 32)], [AuditEvent("enroll", "done", 99)])
        store.update_user(user.id, status="done", events=[AuditEvent("enrolled", "done", 99)])
        escrow = StoreEscrow(store, b"correct horse battery")
        escrow.put(99, "ann@contoso.com", puk=b"12345679")
        entry = escrow.get(99)
        assert entry is not None and entry.puk == "12345679"
        assert len(store.audit_trail(serial=99)) == 2
        # --graph-bind: the write-ahead claim, a retry, the lease, the outcome.
        assert store.bind_claim("ann@contoso.com", ["X509:<SKI>AB"], 60) is not None
        store.bind_retry("ann@contoso.com")
        assert store.bind_heartbeat(60) == 1
        assert store.bind_finish("ann@contoso.com", True, True, ["X509:<SKI>AB"], None)
        assert store.bind_interrupted() == 0
        assert store.users()[0].graph["status"] == "bound"  # type: ignore[index]

        forbidden = ["UPDATE audit SET detail = 'x'", "DELETE FROM audit",
                     "TRUNCATE audit", "DELETE FROM users", "DELETE FROM keys",
                     "DELETE FROM certificates", "DELETE FROM escrow",
                     "DELETE FROM graph_binds",
                     "UPDATE meta SET value = '{}'", "DROP TABLE keys",
                     "ALTER TABLE keys ADD COLUMN x int", "CREATE TABLE mine (x int)",
                     "UPDATE alembic_version SET version_num = '0001'"]
        for sql in forbidden:
            with pytest.raises(sa.exc.ProgrammingError,
                               match=re.compile("permission denied|must be owner")), \
                    store.engine.begin() as conn:
                conn.execute(sa.text(sql))
    # Nor can a desk change the schema with pivtool's own migrations.
    from alembic import command

    from pivtool.store.engine import _alembic_config

    engine = create_engine(url)
    try:
        with pytest.raises(sa.exc.ProgrammingError, match="must be owner"), \
                engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0001")
    finally:
        engine.dispose()
