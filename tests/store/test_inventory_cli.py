"""The inventory through the CLI, on both engines: card-changing commands record what they
did, recover at another desk finds the PUK in the database, lost/retire revoke and hand
over the certificateUserIds to remove, register and import bring existing keys and files in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pivtool.certs.ca import LabCA
from pivtool.workflows.batch import BatchState
from pivtool.workflows.batch.state import CertRecord
from pivtool.workflows.escrow import EscrowFile
from pivtool.workflows.roster import parse_roster
from tests.cli.clihelp import make_card, run, run_json

PIN, PUK = "24681357", "86427531"
UPN = "alice@contoso.com"
PASS = {"PIVTOOL_ESCROW_PASSPHRASE": "correct horse battery"}
NEW = {"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK, **PASS}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    LabCA.init(d, "CN=Contoso Lab CA", crl_url="http://127.0.0.1/ca.crl")
    return d


def at(db: str, desk: str, *args: str) -> list[str]:
    return ["--db", db, "--desk", desk, *args]


def block_pin(card: Path) -> None:
    for _ in range(3):
        run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "99999999"})


def dump_db(db_url: str) -> str:
    """Every value in every table, as text (to look for secrets)."""
    from pivtool.store.engine import create_engine

    engine = create_engine(db_url)
    out = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            out += [repr(tuple(r)) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    return "\n".join(out)


def test_a_key_lifecycle_across_desks(tmp_path: Path, ca: Path, db_url: str) -> None:
    card = make_card(tmp_path, serial=7770001)
    r = run(card, *at(db_url, "desk-a", "enroll", "--upn", UPN, "--ca", str(ca),
                      "--escrow", "db"), env=NEW)
    assert r.exit_code == 0, r.output
    shown = run_json(None, *at(db_url, "desk-b", "inventory", "show", "7770001"))
    assert shown["schema"] == "pivtool.inventory-show/1"
    assert shown["key"]["owner_upn"] == UPN and shown["key"]["status"] == "active"
    assert shown["key"]["last_desk"] == "desk-a" and shown["escrow"] == ["puk"]
    [cert] = shown["certificates"]
    assert cert["slot"] == "9a" and cert["status"] == "present"
    assert "X509:<PN>alice@contoso.com" in {i["value"] for i in cert["certificate_user_ids"]}
    assert [(e["desk"], e["step"], e["outcome"]) for e in shown["audit"]] == [
        ("desk-a", "enroll", "done")]
    # The database holds ciphertext only.
    assert PUK not in dump_db(db_url) and PIN not in dump_db(db_url)

    # The user locks the PIN and walks to another desk: the PUK is found in the database.
    block_pin(card)
    r = run(card, *at(db_url, "desk-b", "recover", "--escrow", "db"),
            env={**PASS, "PIVTOOL_NEW_PIN": "11223344"})
    assert r.exit_code == 0, r.output
    assert "from the escrow" in r.stdout and PUK not in r.output
    trail = run_json(None, *at(db_url, "desk-b", "inventory", "show", UPN))["audit"]
    assert [(e["desk"], e["step"]) for e in trail] == [("desk-a", "enroll"),
                                                       ("desk-b", "recover")]

    # A wrong passphrase is refused before the card (exit 3).
    r = run(card, *at(db_url, "desk-b", "recover", "--escrow", "db"),
            env={"PIVTOOL_ESCROW_PASSPHRASE": "wrong passphrase!", "PIVTOOL_NEW_PIN": "1"})
    assert r.exit_code == 3 and "wrong escrow passphrase" in r.stderr

    # Lost: revoked with the lab CA, the owner's values to remove, audited; again is a no-op.
    for attempt in range(2):
        data = run_json(None, *at(db_url, "desk-c", "lost", "7770001", "--ca", str(ca),
                                  "--graph-out", str(tmp_path / "graph.json"), "--yes"))
        assert data["status"] == "lost" and data["owner"] == UPN
        if attempt == 0:
            assert [c["slot"] for c in data["revoked"]] == ["9a"]
            assert "X509:<PN>alice@contoso.com" in data["certificate_user_ids_to_remove"]
        else:
            assert data["revoked"] == [] and data["failed"] == []
    assert [r.status for r in LabCA.open(ca).issued()] == ["revoked"]
    graph = json.loads((tmp_path / "graph.json").read_text())
    assert graph == {"method": "PATCH", "url": f"/users/{UPN}",
                     "body": {"authorizationInfo": {"certificateUserIds": []}}}
    listed = run_json(None, *at(db_url, "desk-c", "inventory", "list", "--status", "lost"))
    assert [(k["serial"], k["certificates"]) for k in listed["keys"]] == [(7770001, 0)]
    r = run(None, *at(db_url, "desk-c", "retire", "7770001", "--no-revoke", "--yes"))
    assert r.exit_code == 2 and "already lost" in r.stderr


def test_register_records_and_export(tmp_path: Path, ca: Path, db_url: str) -> None:
    card = make_card(tmp_path, serial=7770002)
    assert run(card, "enroll", "--upn", UPN, "--ca", str(ca), env=NEW).exit_code == 0
    data = run_json(card, *at(db_url, "desk-a", "inventory", "register", "--note", "spare"))
    assert data["key"]["owner_upn"] == UPN and len(data["certificates"]) == 1
    # certs delete is recorded through the same hook: the certificate becomes "removed".
    r = run(card, *at(db_url, "desk-a", "certs", "delete", "9a", "--yes",
                      "--backup-dir", str(tmp_path / "bk")),
            env={"PIVTOOL_PIN": PIN})
    assert r.exit_code == 0, r.output
    rows = run_json(None, *at(db_url, "desk-a", "inventory", "export"))["rows"]
    assert [(x["serial"], x["slot"], x["certificate_status"]) for x in rows] == [
        (7770002, "9a", "removed")]
    r = run(None, *at(db_url, "desk-a", "inventory", "export", "--csv"))
    lines = r.stdout.splitlines()
    assert lines[0].startswith("serial,status,owner_upn") and "7770002" in lines[1]
    steps = [e["step"] for e in run_json(None, *at(db_url, "d", "inventory", "show",
                                                    "7770002"))["audit"]]
    assert steps == ["register", "certs delete"]


def test_revoke_command_gets_the_certificate_and_no_secrets(tmp_path: Path, ca: Path,
                                                            db_url: str) -> None:
    card = make_card(tmp_path, serial=7770003)
    assert run(card, *at(db_url, "a", "enroll", "--upn", UPN, "--ca", str(ca)),
               env=NEW).exit_code == 0
    hook = tmp_path / "revoke.py"
    seen = tmp_path / "seen.json"
    hook.write_text("import json, os, sys\n"
                    f"json.dump({{'pem': sys.stdin.read(), 'env': dict(os.environ)}}, "
                    f"open({str(seen)!r}, 'w'))\nprint('revoked at the CA')\n")
    data = run_json(None, *at(db_url, "a", "retire", "7770003", "--revoke-cmd",
                              f"{sys.executable} {hook}", "--yes"),
                    env={"PIVTOOL_PIN": PIN})
    assert data["revoked"][0]["note"] == "revoked by the command: revoked at the CA"
    got = json.loads(seen.read_text())
    assert got["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert got["env"]["PIVTOOL_REVOKE_REASON"] == "cessation_of_operation"
    assert "PIVTOOL_PIN" not in got["env"] and "PIVTOOL_DB" not in got["env"]
    # A failing hook leaves the certificate present and exits 1; a re-run finishes.
    card2 = make_card(tmp_path, "card2.json", serial=7770004)
    assert run(card2, *at(db_url, "a", "enroll", "--upn", "bob@contoso.com", "--ca",
                          str(ca)), env=NEW).exit_code == 0
    r = run(None, *at(db_url, "a", "lost", "7770004", "--revoke-cmd", "false", "--yes"))
    assert r.exit_code == 1 and "NOT revoked" in r.stdout
    data = run_json(None, *at(db_url, "a", "lost", "7770004", "--revoke-cmd", "true", "--yes"))
    assert [c["slot"] for c in data["revoked"]] == ["9a"]


def test_import_state_and_escrow_files(tmp_path: Path, db_url: str) -> None:
    state_path = tmp_path / "roster.state.json"
    state = BatchState.load(state_path)
    state.merge_roster("roster.csv", parse_roster("upn\nann@contoso.com\nbo@contoso.com\n"))
    ann = state.find("ann@contoso.com")
    assert ann is not None
    ann.status, ann.serial = "done", 4242
    ann.certificate = CertRecord("ab" * 32, "01", "CN=ann", "CN=CA", "2030-01-01T00:00:00Z")
    ann.certificate_user_ids = [{"kind": "PrincipalName", "value": "X509:<PN>ann@contoso.com",
                                 "affinity": "low"}]
    state.save()
    (tmp_path / "roster.audit.jsonl").write_text(json.dumps(
        {"time": "2026-01-01T00:00:00.000Z", "operator": "op", "reader": "r", "serial": 4242,
         "upn": "ann@contoso.com", "step": "enrolled", "outcome": "done", "detail": "",
         "fingerprint": "ab" * 32}) + "\n")
    for _ in range(2):  # importing twice updates, never duplicates users or keys
        data = run_json(None, *at(db_url, "a", "inventory", "import", str(state_path)))
    assert (data["users"], data["keys"], data["audit"]) == (2, 1, 1)
    show = run_json(None, *at(db_url, "a", "inventory", "show", "ann@contoso.com"))
    assert show["roster"]["status"] == "done" and show["keys"][0]["key"]["serial"] == 4242
    escrow = EscrowFile(tmp_path / "escrow.json", PASS["PIVTOOL_ESCROW_PASSPHRASE"].encode())
    escrow.put(4242, "ann@contoso.com", puk=b"13572468")
    data = run_json(None, *at(db_url, "a", "inventory", "import", "--escrow",
                              str(tmp_path / "escrow.json")), env=PASS)
    assert data["escrow"] == 1
    entry = run_json(None, *at(db_url, "a", "escrow", "show", "db", "4242", "--reveal", "puk"),
                     env=PASS)
    assert entry["revealed"] == {"puk": "13572468"} and entry["upn"] == "ann@contoso.com"
    assert "13572468" not in dump_db(db_url)


def test_no_database_is_bad_input_and_light_commands_stay_light(tmp_path: Path) -> None:
    r = run(None, "inventory", "list", env={"PIVTOOL_DB": ""})
    assert r.exit_code == 2 and "no inventory database" in r.stderr
    r = run(None, "--db", "mysql://x/y", "inventory", "list")
    assert r.exit_code == 2 and "unsupported database URL" in r.stderr
    card = make_card(tmp_path)
    code = ("import sys\nfrom pivtool.cli.main import main\n"
            f"rc = main(['--sim', {str(card)!r}, 'info']) + main(['--version'])\n"
            "print(rc, [m for m in ('sqlalchemy', 'alembic', 'psycopg') if m in sys.modules])")
    env: dict[str, Any] = {"PIVTOOL_DB": f"sqlite:///{tmp_path / 'inv.db'}", "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip().endswith("0 []"), out
    assert not (tmp_path / "inv.db").exists()
