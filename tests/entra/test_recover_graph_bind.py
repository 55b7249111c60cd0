"""``recover --reenroll --graph-bind``: after a reset and re-enrollment, the old
certificate's values leave the user and the new one's arrive, in one PATCH."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cryptography import x509

from pivtool.certs import LabCA
from pivtool.certs.entra import HIGH, certificate_user_ids
from tests.cli.clihelp import run
from tests.entra.conftest import NEW_PIN, UPN, app_env
from tests.entra.graph_standin import GraphStandIn


def _block_pin(card: Path) -> None:
    for n in range(3):
        run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": f"0000000{n}"})


def test_reenroll_rebinds_old_to_new(standin: GraphStandIn, lab: LabCA, enrolled: Path,
                                     tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    shutil.copy(enrolled, card)
    env = app_env(standin)
    assert run(card, "entra", "bind", "--upn", UPN, env=env).exit_code == 0
    old_values = list(standin.user(UPN).certificate_user_ids)
    assert len(old_values) == 4  # alice's UPN value + the old certificate's 3
    _block_pin(card)
    r = run(card, "--json", "recover", "--puk-unknown", "--yes", "--reenroll", "--ca",
            str(lab.directory), "--backup-dir", str(tmp_path / "bk"), "--graph-bind",
            env={**env, "PIVTOOL_NEW_PIN": NEW_PIN, "PIVTOOL_NEW_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["reenroll"]["status"] == "enrolled"
    graph = data["graph"]
    assert graph["schema"] == "pivtool.entra-bind/1" and graph["action"] == "rebind"
    old = x509.load_pem_x509_certificate((tmp_path / "bk" / "slot-9a.pem").read_bytes())
    new_pem = run(card, "certs", "export", "9a").stdout.encode()
    new = x509.load_pem_x509_certificate(new_pem)

    def high(c: x509.Certificate) -> list[str]:
        return sorted(i.value for i in certificate_user_ids(c) if i.affinity == HIGH)

    assert sorted(graph["removed"]) == high(old) and sorted(graph["added"]) == high(new)
    stored = standin.user(UPN).certificate_user_ids
    assert stored[0] == "X509:<PN>alice@contoso.com" and sorted(stored[1:]) == high(new)
    assert len(standin.requests("PATCH")) == 2  # the first bind, then one rebind


def test_graph_bind_is_checked_before_the_card(standin: GraphStandIn, enrolled: Path,
                                               tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    shutil.copy(enrolled, card)
    before = card.read_bytes()
    r = run(card, "recover", "--graph-bind", env=app_env(standin))
    assert r.exit_code == 2 and "--graph-bind binds the certificate of --reenroll" in r.stderr
    env = {**app_env(standin), "PIVTOOL_CLIENT_SECRET": "wrong"}
    r = run(card, "recover", "--puk-unknown", "--yes", "--reenroll", "--ca", "x",
            "--graph-bind", env=env)
    assert r.exit_code == 3 and "AADSTS7000215" in r.stderr
    assert card.read_bytes() == before
