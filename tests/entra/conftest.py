"""Fixtures for the Entra/Graph tests: the local HTTPS stand-in (a test fixture, see
graph_standin.py), a lab CA and an enrolled virtual card."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pivtool.certs import LabCA
from tests.cli.clihelp import make_card, run
from tests.entra.graph_standin import GraphStandIn, running

UPN = "alice@contoso.com"
NEW_PIN = "24681357"
#: Application permissions the unattended test app is granted.
APP_ROLES = ("User.ReadWrite.All", "Policy.Read.All", "Organization.Read.All",
             "PublicKeyInfrastructure.Read.All")
SECRET = "stand-in-secret~value.1"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[GraphStandIn]:
    """A running stand-in with users alice (one existing value), bob and a synced carol,
    and an app with a client secret."""
    for s in running(tmp_path):
        s.add_user(UPN, ["X509:<PN>alice@contoso.com"])
        s.add_user("bob@contoso.com")
        s.add_user("carol@contoso.com", synced=True)
        s.add_app("11111111-2222-3333-4444-555555555555", secret=SECRET, roles=APP_ROLES)
        yield s


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA.init(tmp_path_factory.mktemp("ca") / "ca", "CN=Contoso Lab CA,O=Contoso",
                      crl_url="http://crl.contoso.test/lab.crl")


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, lab: LabCA) -> Path:
    """A virtual card enrolled for alice (tests copy it before changing it)."""
    card = make_card(tmp_path_factory.mktemp("card"))
    r = run(card, "enroll", "--upn", UPN, "--ca", str(lab.directory),
            env={"PIVTOOL_NEW_PIN": NEW_PIN, "PIVTOOL_NEW_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    return card


def app_env(standin: GraphStandIn) -> dict[str, str]:
    """Environment for the secret-authenticated app."""
    return standin.env("11111111-2222-3333-4444-555555555555", SECRET)
