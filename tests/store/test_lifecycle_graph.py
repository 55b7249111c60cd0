"""``pivtool lost|retire --graph-unbind`` against the Graph stand-in, on both engines: the key
is marked first, revoked, and exactly its certificateUserIds leave the owner in Entra (another
key's binding and values set outside pivtool stay); a Graph failing after the revocation is
finished by the same command (no second revocation, one PATCH applied); a failed pre-flight
changes nothing; the JSON is the one docs/json.md documents."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pivtool.certs.ca import LabCA
from pivtool.certs.entra import CertUserId, graph_selection
from tests.cli.clihelp import make_card, run
from tests.entra.conftest import SECRET, UPN, app_env, standin
from tests.entra.graph_standin import GraphStandIn
from tests.store.test_inventory_cli import NEW, at, ca, dump_db
from tests.test_docs import DOCS, abbreviate, blocks, shape_matches

__all__ = ["ca", "standin"]  # fixtures

PN = f"X509:<PN>{UPN}"
OUTSIDE = "X509:<RFC822>alice@fabrikam.example"  # set in Entra outside pivtool
#: The documented command (docs/json.md) this test runs for real.
DOC_COMMAND = ("pivtool --db sqlite:///inventory.db --json lost 7780001 --ca lab-ca "
               "--graph-unbind --yes")


def _enroll(tmp_path: Path, db: str, ca: Path, serial: int, upn: str = UPN) -> list[str]:
    """Enroll a virtual card with --db; its high-affinity values, as recorded."""
    card = make_card(tmp_path, f"card-{serial}.json", serial=serial)
    r = run(card, *at(db, "desk-a", "enroll", "--upn", upn, "--ca", str(ca)), env=NEW)
    assert r.exit_code == 0, r.output
    shown = json.loads(run(None, "--json", *at(db, "d", "inventory", "show",
                                                  str(serial))).stdout)
    [cert] = shown["certificates"]
    ids = graph_selection([CertUserId(**i) for i in cert["certificate_user_ids"]])[0]
    return [i.value for i in ids if i.affinity == "high"]  # in Graph's order


def _lost(db: str, ca: Path, serial: int, env: dict[str, str], *extra: str) -> Any:
    return run(None, "--json", *at(db, "desk-c", "lost", str(serial), "--ca", str(ca),
                                   "--graph-unbind", "--yes", *extra), env=env)


def _steps(db: str, serial: int) -> list[tuple[str, str]]:
    shown = json.loads(run(None, "--json", *at(db, "d", "inventory", "show",
                                                str(serial))).stdout)
    return [(e["step"], e["outcome"]) for e in shown["audit"]]


def test_lost_unbinds_exactly_that_key(tmp_path: Path, ca: Path, db_url: str,
                                       standin: GraphStandIn) -> None:
    first = _enroll(tmp_path, db_url, ca, 7780001)
    second = _enroll(tmp_path, db_url, ca, 7780002)
    alice = standin.user(UPN)
    alice.certificate_user_ids = [PN, *first, *second, OUTSIDE]
    r = _lost(db_url, ca, 7780001, app_env(standin))
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    # The PN value stays: the second key's certificate names alice too.
    assert data["certificate_user_ids_to_remove"] == first
    assert data["entra"]["ok"] and data["entra"]["unbind"]["removed"] == first
    assert data["summary"] == ("key marked lost, certificates revoked, 3 certificateUserIds "
                               "value(s) removed in Entra")
    assert alice.certificate_user_ids == [PN, *second, OUTSIDE]
    assert len(standin.requests("PATCH")) == 1
    assert [c.status for c in LabCA.open(ca).issued()] == ["revoked", "valid"]
    assert _steps(db_url, 7780001) == [("enroll", "done"), ("lost", "started"),
                                       ("revoke", "done"), ("entra-unbind", "done"),
                                       ("lost", "done")]
    assert SECRET not in r.output and SECRET not in dump_db(db_url)
    _check_json_md(data)


def _check_json_md(real: dict[str, Any]) -> None:
    """docs/json.md's lifecycle example has the real output's shape
    (``PIVTOOL_UPDATE_DOCS=1`` rewrites it from this run)."""
    page = DOCS / "json.md"
    bs = blocks(page)
    [i] = [i for i in range(1, len(bs)) if bs[i].lang == "json"
           and bs[i - 1].lang == "sh" and DOC_COMMAND in bs[i - 1].text]
    if os.environ.get("PIVTOOL_UPDATE_DOCS") == "1":
        text = page.read_text()
        start, end = bs[i].span
        example = json.dumps(abbreviate(real), indent=2, ensure_ascii=False)
        page.write_text(text[:start] + re.sub(r'"id": "[0-9a-f-]{36}"',
                                              '"id": "a64d6de6-0eca-4102-a508-4ce909480cba"',
                                              example) + "\n" + text[end:])
        return
    assert shape_matches(json.loads(bs[i].text), real) == []


def test_preflight_then_graph_failure_then_same_command(tmp_path: Path, ca: Path,
                                                        db_url: str,
                                                        standin: GraphStandIn) -> None:
    values = _enroll(tmp_path, db_url, ca, 7780003)
    _enroll(tmp_path, db_url, ca, 7780004, upn="dave@contoso.com")  # not in the tenant
    standin.user("carol@contoso.com").certificate_user_ids = _enroll(
        tmp_path, db_url, ca, 7780005, upn="carol@contoso.com")  # synchronised from AD
    alice = standin.user(UPN)
    alice.certificate_user_ids = [*values, OUTSIDE]
    env = app_env(standin)
    wrong = "not-the-secret~value.2"
    before = dump_db(db_url)

    # Pre-flight failures: nothing changes in the store, at the CA or in Entra.
    no_tenant = {**env, "PIVTOOL_TENANT": ""}
    # (The refused secret first: MSAL would answer from its token cache after a success.)
    for serial, e, code, message in (
            (7780003, {**env, "PIVTOOL_CLIENT_SECRET": wrong}, 3, "AADSTS7000215"),
            (7780003, no_tenant, 2, "no tenant"),
            (7780004, env, 2, "no user dave@contoso.com in tenant"),
            (7780005, env, 2, "carol@contoso.com is synchronised from on-premises")):
        r = _lost(db_url, ca, serial, e)
        assert r.exit_code == code and message in r.stderr, r.output
        assert wrong not in r.output and SECRET not in r.output
    r = run(None, *at(db_url, "d", "lost", "7780003", "--ca", str(ca), "--yes",
                      "--client-id", "x"), env=env)
    assert r.exit_code == 2 and "--client-id is for --graph-unbind" in r.stderr
    assert dump_db(db_url) == before
    assert [c.status for c in LabCA.open(ca).issued()] == ["valid"] * 3
    assert standin.requests("PATCH") == []

    # Graph answers 503 to every write until the client's retries are spent: the key is
    # marked and revoked, the unbind reported failed, exit 1.
    applied: list[str] = []
    standin.on_handled = lambda m, p, status: applied.append(p) if (
        m == "PATCH" and status == 204) else None
    standin.throttle("PATCH", "/v1.0/users/", count=5, retry_after=0, status=503)
    r = _lost(db_url, ca, 7780003, env)
    assert r.exit_code == 1, r.output
    assert ("Error: key marked lost, certificates revoked, Entra unbind failed: run the same "
            "command again (Graph PATCH") in r.stderr
    data = json.loads(r.stdout)
    assert not data["ok"] and "HTTP 503" in data["entra"]["error"]
    assert [c["slot"] for c in data["revoked"]] == ["9a"]
    assert alice.certificate_user_ids == [*values, OUTSIDE] and applied == []

    # The same command finishes: no second revocation, one PATCH applied.
    r = _lost(db_url, ca, 7780003, env)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["revoked"] == [] and [c["slot"] for c in data["already_revoked"]] == ["9a"]
    assert data["entra"]["unbind"]["removed"] == values
    assert alice.certificate_user_ids == [OUTSIDE] and len(applied) == 1
    # Once more: nothing left anywhere, no error, no write.
    r = _lost(db_url, ca, 7780003, env)
    assert r.exit_code == 0 and len(applied) == 1, r.output
    assert json.loads(r.stdout)["entra"]["unbind"]["patched"] is False
    steps = _steps(db_url, 7780003)
    assert steps.count(("revoke", "done")) == 1 and steps.count(("lost", "started")) == 1
    assert steps[1:5] == [("lost", "started"), ("revoke", "done"), ("entra-unbind", "failed"),
                          ("lost", "partial")]
    assert steps[-2:] == [("entra-unbind", "done"), ("lost", "done")]
    assert SECRET not in r.output and SECRET not in dump_db(db_url)
