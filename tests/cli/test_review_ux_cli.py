"""Command-line UX: --help overview, --json everywhere with stable shapes, exit codes and
one-line actionable errors for scripts, check's default platforms, option spellings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pivtool.cli.docgen import walk
from pivtool.cli.main import COMMANDS, SECTIONS, cli
from tests.cli.clihelp import make_card, run, run_json

PIN = "24681357"


def _leaf_commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(cli, info_name="pivtool", **cli.context_settings)
    return [(c.command_path, cmd) for cmd, c in walk(cli, ctx)
            if not isinstance(cmd, click.Group)]


def _block_pin(card: Path) -> None:
    for _ in range(3):
        r = run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "00000000"})
        assert r.exit_code in (3, 4)


# --- pivtool --help ------------------------------------------------------------------


def test_help_groups_every_command_once_in_task_order() -> None:
    grouped = [name for _title, names in SECTIONS for name in names]
    assert sorted(grouped) == sorted(COMMANDS), "every command in exactly one section"
    r = run(None, "--help")
    assert r.exit_code == 0
    out = r.stdout
    titles = [title for title, _ in SECTIONS]
    positions = [out.index(f"{title}:") for title in titles]
    assert positions == sorted(positions)
    # The desk's first command comes first, the locked-out path before the read commands.
    assert out.index("  enroll ") < out.index("  pin ") < out.index("  recover ") \
        < out.index("  info ")
    # No summary is cut off with "..." and no listing line is wider than a terminal.
    listing = out[out.index(f"{titles[0]}:"):out.index("Exit codes:")]
    assert "..." not in listing
    assert all(len(line) <= 80 for line in listing.splitlines())


def test_help_exit_codes_name_the_real_option() -> None:
    out = run(None, "--help").stdout
    assert "Exit codes:" in out
    assert "--allow-last-try not given" in out
    assert "--force not given" not in out


def test_version_does_not_import_heavy_modules() -> None:
    code = ("import sys\nfrom pivtool.cli.main import main\nrc = main(['--version'])\n"
            "heavy = [m for m in ('cryptography', 'smartcard', 'msal', 'requests') "
            "if m in sys.modules]\n"
            "print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("0 []"), out


# --- --json everywhere -----------------------------------------------------------------

NO_JSON = {"pivtool completion", "pivtool sim serve"}


@pytest.mark.parametrize("path,cmd", _leaf_commands(), ids=lambda v: str(v))
def test_every_command_takes_json(path: str, cmd: click.Command) -> None:
    names = {n for p in cmd.params for n in p.opts}
    if path in NO_JSON:
        assert "--json" not in names
    else:
        assert "--json" in names, f"{path} has no --json"


def test_completion_refuses_json() -> None:
    r = run(None, "--json", "completion", "bash")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "--json does not apply" in r.stderr


def test_write_commands_take_json_after_the_command(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "pin", "change", "--json",
            env={"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": PIN})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["schema"] == "pivtool.pin-change/1"
    r = run(card, "puk", "change", "--json",
            env={"PIVTOOL_PUK": "12345678", "PIVTOOL_NEW_PUK": "86427531"})
    assert json.loads(r.stdout)["schema"] == "pivtool.puk-change/1"
    r = run(card, "mgmt-key", "change", "--protect", "--json", env={"PIVTOOL_PIN": PIN})
    assert json.loads(r.stdout)["schema"] == "pivtool.mgmt-key-change/1"
    r = run(None, "sim", "create", str(tmp_path / "other.json"), "--json")
    assert json.loads(r.stdout)["schema"] == "pivtool.sim-create/1"


def test_file_key_is_always_there(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    env = {"PIVTOOL_PIN": "123456"}
    data = run_json(card, "keys", "generate", "9c", env=env)
    assert data["file"] is None
    out = tmp_path / "pub.pem"
    with_file = run_json(card, "keys", "export", "9c", "-o", str(out))
    without = run_json(card, "keys", "export", "9c")
    assert set(with_file) == set(without)
    assert with_file["file"] == str(out) and without["file"] is None
    csr = run_json(card, "certs", "request", "9c", "--upn", "a@contoso.com", env=env)
    assert csr["file"] is None and csr["pem"].startswith("-----BEGIN CERTIFICATE REQUEST")


def test_ca_crl_and_issue_json(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    run_json(None, "ca", "init", str(ca), "--subject", "CN=Lab")
    # --json with the CRL going to stdout: one JSON document, the CRL inside it.
    r = run(None, "--json", "ca", "crl", str(ca))
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["schema"] == "pivtool.ca-crl/1" and data["output"] is None
    assert data["crl_pem"].startswith("-----BEGIN X509 CRL-----")
    to_file = run_json(None, "ca", "crl", str(ca), "-o", str(tmp_path / "c.crl"))
    assert set(to_file) == set(data)
    # ca issue has the same keys with and without -o.
    card = make_card(tmp_path)
    env = {"PIVTOOL_PIN": "123456"}
    run_json(card, "keys", "generate", "9a", env=env)
    csr = tmp_path / "a.csr"
    run_json(card, "certs", "request", "9a", "--upn", "a@contoso.com", "-o", str(csr),
             env=env)
    a = run_json(None, "ca", "issue", str(ca), str(csr))
    b = run_json(None, "ca", "issue", str(ca), str(csr), "-o", str(tmp_path / "a.crt"))
    assert set(a) == set(b) and b["certificate_pem"].startswith("-----BEGIN CERTIFICATE")


def test_diagnose_to_file_has_a_schema(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    out = tmp_path / "diag.json"
    data = run_json(card, "diagnose", "-o", str(out))
    assert data == {"schema": "pivtool.diagnose-file/1", "output": str(out),
                    "card_error": None}
    assert json.loads(out.read_text())["schema"] == "pivtool.diagnose/1"


def test_batch_report_and_release_json(tmp_path: Path) -> None:
    from pivtool.workflows.batch import BatchState
    from pivtool.workflows.roster import RosterDefaults, load_roster

    roster = tmp_path / "roster.csv"
    roster.write_text("upn\nu1@contoso.com\n")
    state_path = tmp_path / "r.state.json"
    state = BatchState.load(state_path)
    state.merge_roster(str(roster), load_roster(str(roster), RosterDefaults()))
    user = state.find("u1@contoso.com")
    assert user is not None
    user.status, user.serial, user.error = "failed", 123, "boom"
    state.save()
    report = run_json(None, "batch", "report", "--state", str(state_path))
    assert report["schema"] == "pivtool.batch-report-files/1"
    assert report["state"] == str(state_path) and report["outputs"]
    r = run(None, "--json", "batch", "release", "--state", str(state_path),
            "u1@contoso.com", "--yes")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"schema": "pivtool.batch-release/1",
                                    "upn": "u1@contoso.com", "released_serial": 123,
                                    "status": "pending"}


# --- scripts: errors, exit codes, no prompts -----------------------------------------


def test_mgmt_key_change_without_a_new_key_says_what_to_use(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    before = card.read_bytes()
    r = run(card, "mgmt-key", "change", env={"PIVTOOL_PIN": "123456"})
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "--protect" in err and "PIVTOOL_NEW_MGMT_KEY" in err
    assert card.read_bytes() == before


def test_blocked_pin_error_says_what_to_do(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "00000000"})
    assert "recover" not in r.stderr  # 2 tries left: nothing to recover yet
    _block_pin(card)
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "123456"})
    assert r.exit_code == 4
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the PIN is blocked")
    assert "pivtool recover" in lines[0]


def test_recover_wrong_puk_is_said_once(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _block_pin(card)
    r = run(card, "recover", env={"PIVTOOL_PUK": "11111111", "PIVTOOL_NEW_PIN": PIN})
    assert r.exit_code == 3
    assert r.stderr.count("wrong PUK") == 1, r.stderr
    assert "[!!]" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        "Error: unblock PIN: wrong PUK, 2 tries left (SW=63C2)"


def test_recover_keeps_the_step_hint_in_the_error(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _block_pin(card)
    env = {"PIVTOOL_PUK": "11111111", "PIVTOOL_NEW_PIN": PIN}
    run(card, "recover", env=env)
    run(card, "recover", env=env)
    r = run(card, "recover", "--allow-last-try", env=env)
    assert r.exit_code == 4
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: unblock PIN: wrong PUK; the PUK is now blocked")
    assert "only a reset remains" in last
    assert r.stderr.count("the PUK is now blocked") == 1


# --- check's default platforms -----------------------------------------------------


def test_check_default_is_ios_and_windows(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    r = run(card, "--json", "check")
    data = json.loads(r.stdout)
    assert data["platforms"] == ["ios", "windows"]
    ids = {i["id"] for i in data["items"]}
    assert "piv.nfc" in ids and "windows.chuid" in ids
    assert not any(i.startswith("macos.") for i in ids)
    r = run(card, "--json", "check", "--platform", "all")
    assert json.loads(r.stdout)["platforms"] == ["ios", "macos", "windows"]


def test_check_passes_a_plain_enrollment(tmp_path: Path) -> None:
    """A key enrolled without --macos is READY by default (no macOS 9d failure)."""
    ca = tmp_path / "ca"
    run_json(None, "ca", "init", str(ca), "--subject", "CN=Lab",
             "--crl-url", "http://ca.contoso.test/lab.crl")
    card = make_card(tmp_path)
    r = run(card, "enroll", "--upn", "a@contoso.com", "--ca", str(ca),
            env={"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    r = run(card, "check", "--upn", "a@contoso.com")
    assert r.exit_code == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("READY")
    r = run(card, "check", "--platform", "all")
    assert r.exit_code == 1 and "macos.9d" in r.stdout


# --- one spelling for algorithms and policies ----------------------------------------


def test_enroll_takes_the_same_algorithm_names_as_keys_generate(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    csr = tmp_path / "a.csr"
    r = run(card, "enroll", "--upn", "a@contoso.com", "-a", "p256", "--pin-policy", "ONCE",
            "--csr-out", str(csr), env={"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": "86427531"})
    assert r.exit_code == 0, r.output
    r = run(card, "enroll", "--upn", "a@contoso.com", "-a", "x25519",
            "--csr-out", str(tmp_path / "b.csr"))
    assert r.exit_code == 2 and "'x25519' is not one of eccp256" in r.stderr
    r = run(card, "enroll", "--help")
    assert "[eccp256|eccp384|rsa2048|rsa1024|rsa3072|rsa4096|ed25519]" in r.stdout


def test_backup_dir_help_says_where_imports_save(tmp_path: Path) -> None:
    for args in (("keys", "import"), ("certs", "import")):
        out = run(None, *args, "--help").stdout
        assert "next to FILE" in " ".join(out.split())
    out = run(None, "certs", "delete", "--help").stdout
    assert "(default: the current directory)" in " ".join(out.split())
