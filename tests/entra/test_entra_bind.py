"""pivtool entra bind/unbind through MSAL + requests against the local Graph stand-in."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pivtool.certs.entra import HIGH, certificate_user_ids
from pivtool.piv.constants import Slot
from tests.cli.clihelp import run, session
from tests.entra.conftest import UPN, app_env
from tests.entra.graph_standin import GraphStandIn, app_certificate


def _high_values(card: Path) -> list[str]:
    s = session(card)
    try:
        cert = s.get_certificate(Slot.AUTHENTICATION)
    finally:
        s.connection.close()
    return [i.value for i in certificate_user_ids(cert) if i.affinity == HIGH]


def test_enroll_bind_twice_unbind(standin: GraphStandIn, enrolled: Path) -> None:
    env = app_env(standin)
    high = _high_values(enrolled)
    assert len(high) == 3  # issuer+serial, SKI, SHA1 public key
    r = run(enrolled, "--json", "entra", "bind", "--upn", UPN, "--slot", "9a", env=env)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["schema"] == "pivtool.entra-bind/1"
    assert data["patched"] and data["verified"] and sorted(data["added"]) == sorted(high)
    assert data["added"][0].startswith("X509:<I>")  # issuer+serial first, as in --graph
    assert data["kept"] == ["X509:<PN>alice@contoso.com"]
    # Exactly the certificate's high-affinity values, plus what alice already had.
    stored = standin.user(UPN).certificate_user_ids
    assert stored[0] == "X509:<PN>alice@contoso.com" and sorted(stored[1:]) == sorted(high)
    patches = standin.requests("PATCH")
    assert len(patches) == 1
    assert patches[0][3]["Content-Type"] == "application/json"

    r = run(enrolled, "entra", "bind", "--upn", UPN, "--slot", "9a", env=env)
    assert r.exit_code == 0, r.output
    assert "already bound; nothing to change" in r.stdout
    assert len(standin.requests("PATCH")) == 1  # the second bind sent no PATCH

    r = run(enrolled, "entra", "unbind", "--upn", UPN, env=env)
    assert r.exit_code == 0, r.output
    assert "3 removed" in r.stdout and "read back and verified" in r.stdout
    assert standin.user(UPN).certificate_user_ids == ["X509:<PN>alice@contoso.com"]


def test_throttled_patch_is_retried_after_retry_after(standin: GraphStandIn,
                                                      enrolled: Path) -> None:
    standin.throttle("PATCH", "/v1.0/users/", count=1, retry_after=1)
    r = run(enrolled, "entra", "bind", "--upn", UPN, env=app_env(standin))
    assert r.exit_code == 0, r.output
    patches = standin.requests("PATCH")
    assert len(patches) == 2  # 429 with Retry-After, then the write
    assert len(standin.user(UPN).certificate_user_ids) == 4


def test_synced_user_is_refused_with_on_premises_steps(standin: GraphStandIn,
                                                       enrolled: Path) -> None:
    r = run(enrolled, "entra", "bind", "--upn", "carol@contoso.com", env=app_env(standin))
    assert r.exit_code == 1, r.output
    assert "synchronised from on-premises" in r.stderr
    assert "altSecurityIdentities" in r.stderr
    assert "Set-ADUser carol -Add @{altSecurityIdentities='X509:<I>" in r.stderr
    assert standin.requests("PATCH") == []


def test_value_held_by_another_user_is_named(standin: GraphStandIn, enrolled: Path) -> None:
    high = _high_values(enrolled)
    standin.user("bob@contoso.com").certificate_user_ids = [high[1]]
    r = run(enrolled, "entra", "bind", "--upn", UPN, env=app_env(standin))
    assert r.exit_code == 1, r.output
    assert f"{high[1]} is held by bob@contoso.com" in r.stderr
    assert "HTTP" not in r.stderr
    assert standin.requests("PATCH") == []
    # The lookup used Graph's advanced query: $count and ConsistencyLevel: eventual.
    lookups = standin.requests("GET", "/v1.0/users")
    lookups = [q for q in lookups if q[1] == "/v1.0/users"]
    assert lookups and all(q[3].get("ConsistencyLevel") == "eventual" for q in lookups)


def test_conflict_found_only_by_the_patch_is_named(standin: GraphStandIn,
                                                   enrolled: Path) -> None:
    # The holder appears between the check and the write: the 400 is explained by name.
    high = _high_values(enrolled)
    bob = standin.user("bob@contoso.com")
    original = standin._list_users
    calls = {"n": 0}

    def racing(*a: object, **kw: object) -> object:
        answer = original(*a, **kw)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == 3:  # another admin writes right after the three pre-checks
            bob.certificate_user_ids = [high[2]]
        return answer

    standin._list_users = racing  # type: ignore[method-assign]
    r = run(enrolled, "entra", "bind", "--upn", UPN, env=app_env(standin))
    assert r.exit_code == 1, r.output
    assert f"{high[2]} is held by bob@contoso.com" in r.stderr
    assert len(standin.requests("PATCH")) == 1


def test_merge_over_the_limit_is_refused_naming_kept_values(standin: GraphStandIn,
                                                            enrolled: Path) -> None:
    alice = standin.user(UPN)
    alice.certificate_user_ids = [f"X509:<SKI>{n:040x}" for n in range(9)]
    r = run(enrolled, "entra", "bind", "--upn", UPN, "--dry-run", env=app_env(standin))
    assert r.exit_code == 2, r.output
    assert "would have 12 certificateUserIds values; Entra allows 10" in r.stderr
    assert "already has 9" in r.stderr and "X509:<SKI>" + "0" * 40 in r.stderr
    assert standin.requests("PATCH") == []


def test_dry_run_and_value_lists(standin: GraphStandIn, enrolled: Path) -> None:
    env = app_env(standin)
    r = run(enrolled, "--json", "entra", "bind", "--upn", UPN, "--values",
            "IssuerAndSerialNumber,principalname", "--dry-run", env=env)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["dry_run"] and not data["patched"]
    assert [v.split(">")[0] for v in data["added"]] == ["X509:<I"]
    assert standin.requests("PATCH") == []
    r = run(enrolled, "entra", "bind", "--upn", UPN, "--values", "Nonsense", env=env)
    assert r.exit_code == 2 and "not high, all or one of" in r.stderr


def test_unknown_user_and_missing_permission(standin: GraphStandIn, enrolled: Path) -> None:
    env = app_env(standin)
    r = run(enrolled, "entra", "bind", "--upn", "nobody@contoso.com", env=env)
    assert r.exit_code == 1
    assert "no user nobody@contoso.com in tenant contoso.onmicrosoft.com" in r.stderr
    reader = standin.add_app(secret="reader-secret", roles=("User.Read.All",))
    r = run(enrolled, "entra", "bind", "--upn", UPN,
            env=standin.env(reader.client_id, "reader-secret"))
    assert r.exit_code == 1
    assert "HTTP 403 Authorization_RequestDenied" in r.stderr
    assert "Permissions" in r.stderr


def test_client_certificate_credential(standin: GraphStandIn, enrolled: Path,
                                       tmp_path: Path) -> None:
    _key, cert, pem = app_certificate()
    app = standin.add_app(certificate=cert, roles=("User.ReadWrite.All",))
    cert_file = tmp_path / "app.pem"
    cert_file.write_bytes(pem)
    env = standin.env(app.client_id)
    r = run(enrolled, "entra", "bind", "--upn", UPN, "--client-cert", str(cert_file), env=env)
    assert r.exit_code == 0, r.output
    form = [q for q in standin.requests("POST") if q[1].endswith("/oauth2/v2.0/token")]
    assert form, "no token request"
    # A certificate the app registration does not hold is refused by the token endpoint.
    _k2, _c2, other = app_certificate("someone else")
    (tmp_path / "other.pem").write_bytes(other)
    cache = Path(env["XDG_CONFIG_HOME"]) / "pivtool" / "msal-token-cache.json"
    cache.unlink()
    r = run(enrolled, "entra", "unbind", "--upn", UPN, "--client-cert",
            str(tmp_path / "other.pem"), env=env)
    assert r.exit_code == 3, r.output
    assert "invalid_client (AADSTS700027)" in r.stderr


def test_wrong_secret_is_exit_3_without_the_secret(standin: GraphStandIn,
                                                   enrolled: Path, tmp_path: Path) -> None:
    env = app_env(standin)
    env["PIVTOOL_CLIENT_SECRET"] = "Wr0ng-secret-value"
    r = run(enrolled, "entra", "bind", "--upn", UPN, env=env)
    assert r.exit_code == 3, r.output
    assert "AADSTS7000215" in r.stderr and "Wr0ng-secret-value" not in r.output
    # The secret from a file works the same way (and beats the environment).
    secret_file = tmp_path / "secret"
    secret_file.write_text("stand-in-secret~value.1\n")
    r = run(enrolled, "entra", "bind", "--upn", UPN, "--client-secret-file",
            str(secret_file), env=env)
    assert r.exit_code == 0, r.output


def test_device_code_sign_in_and_token_cache(standin: GraphStandIn, enrolled: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pivtool.cli.graph

    admin_app = standin.add_app(delegated=("User.ReadWrite.All",))
    env = standin.env(admin_app.client_id)
    # Without a terminal nobody can sign in: refused at once instead of waiting 15 minutes.
    r = run(enrolled, "entra", "bind", "--upn", UPN, env=env)
    assert r.exit_code == 2 and "no terminal" in r.stderr
    assert not standin.requests("POST", f"/{standin.tenant_id}/oauth2/v2.0/devicecode")
    monkeypatch.setattr(pivtool.cli.graph, "terminal", lambda: True)  # an admin at a desk
    r = run(enrolled, "entra", "bind", "--upn", UPN, env=env)
    assert r.exit_code == 0, r.output
    assert "https://microsoft.com/devicelogin and enter the code" in r.stderr
    cache = Path(env["XDG_CONFIG_HOME"]) / "pivtool" / "msal-token-cache.json"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache.parent).st_mode) == 0o700
    # The next run signs in silently from the cache (even without a terminal).
    monkeypatch.undo()
    r = run(enrolled, "entra", "unbind", "--upn", UPN, env=env)
    assert r.exit_code == 0, r.output
    assert "devicelogin" not in r.stderr
    assert len(standin.requests("POST", f"/{standin.tenant_id}/oauth2/v2.0/devicecode")) == 1


def test_configuration_errors_are_usage_errors(enrolled: Path, tmp_path: Path) -> None:
    r = run(enrolled, "entra", "bind", "--upn", UPN, env={"PIVTOOL_CLIENT_ID": "x"})
    assert r.exit_code == 2 and "PIVTOOL_TENANT" in r.stderr
    r = run(enrolled, "entra", "bind", "--upn", UPN, env={
        "PIVTOOL_TENANT": "contoso.onmicrosoft.com", "PIVTOOL_CLIENT_ID": "x",
        "PIVTOOL_GRAPH_URL": "http://graph.example"})
    assert r.exit_code == 2 and "must be an https:// URL" in r.stderr


def test_card_commands_do_not_load_msal_or_requests(enrolled: Path) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom pivtool.cli.main import main\n"
            f"rc = main(['--sim', {str(enrolled)!r}, 'info'])\n"
            "print(rc, [m for m in ('msal', 'requests', 'urllib3') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("0 []"), out
