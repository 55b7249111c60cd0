"""Secrets audit for Microsoft Graph: a canary client secret, and every access and refresh
token the stand-in issues, must not appear in pivtool's output, log records (with ``-v``),
exception text or files written — except the MSAL token cache, which holds the tokens by
design and is checked to be 0600. Exercised: a good bind, a throttled write, a refused
secret, a value conflict, a synced user, a 403."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pivtool.certs import LabCA
from tests.cli.clihelp import make_card, run
from tests.entra.graph_standin import GraphStandIn, running
from tests.faults.canaries import CANARY_CLIENT_SECRET, binary_leaks, leaks
from tests.faults.test_faults_secrets import exceptions  # noqa: F401  (fixture)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[GraphStandIn]:
    yield from running(tmp_path / "standin")


def test_client_secret_and_tokens_never_leak(tmp_path: Path, standin: GraphStandIn,
                                             caplog: pytest.LogCaptureFixture,
                                             exceptions: list[str]) -> None:  # noqa: F811
    ca = LabCA.init(tmp_path / "ca", "CN=Canary Graph CA", crl_url="http://127.0.0.1/c.crl")
    card = make_card(tmp_path)
    assert run(card, "enroll", "--upn", "canary@contoso.com", "--ca", str(ca.directory),
               env={"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}
               ).exit_code == 0
    standin.add_user("canary@contoso.com")
    standin.add_user("held@contoso.com")
    standin.add_user("synced@contoso.com", synced=True)
    app = standin.add_app(secret=CANARY_CLIENT_SECRET,
                          roles=("User.ReadWrite.All", "Policy.Read.All",
                                 "Organization.Read.All"))
    env = standin.env(app.client_id, CANARY_CLIENT_SECRET)
    outputs: list[str] = []

    def go(*args: str, code: int, environ: dict[str, str] = env) -> None:
        r = run(card, "-v", *args, env=environ)
        outputs.append(r.stdout + r.stderr)
        assert r.exit_code == code, r.output

    with caplog.at_level(5):
        standin.throttle("PATCH", "/v1.0/users/", count=1, retry_after=0)
        go("entra", "bind", "--upn", "canary@contoso.com", code=0)
        go("entra", "policy", "--slot", "9a", code=1)
        go("entra", "unbind", "--upn", "canary@contoso.com", code=0)
        go("entra", "bind", "--upn", "synced@contoso.com", code=1)
        go("entra", "bind", "--upn", "canary@contoso.com", "--values", "all", code=0)
        go("entra", "bind", "--upn", "held@contoso.com", "--values", "all", code=1)
        reader = standin.add_app(secret=CANARY_CLIENT_SECRET, roles=("User.Read.All",))
        go("entra", "unbind", "--upn", "canary@contoso.com",
           environ=standin.env(reader.client_id, CANARY_CLIENT_SECRET), code=1)
        wrong = standin.add_app(secret="another-secret")
        go("entra", "bind", "--upn", "canary@contoso.com",
           environ=standin.env(wrong.client_id, CANARY_CLIENT_SECRET), code=3)
    text = "\n".join(outputs) + caplog.text + "\n".join(
        r.getMessage() for r in caplog.records) + "\n".join(exceptions)
    assert "PATCH /v1.0/users/" in text, "the Graph debug log was not on"
    assert "is held by canary@contoso.com" in text and "AADSTS7000215" in text
    assert not leaks(text), leaks(text)
    issued = [*standin.tokens, *standin.refresh_tokens]
    assert issued
    assert not [t for t in issued if t in text], "an access token leaked"
    cache = Path(env["XDG_CONFIG_HOME"]) / "pivtool" / "msal-token-cache.json"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    for p in tmp_path.rglob("*"):
        if p.is_file() and p != card:
            data = p.read_bytes()
            assert not binary_leaks(data), (p, binary_leaks(data))
            if p != cache:
                assert not [t for t in issued if t.encode() in data], p
