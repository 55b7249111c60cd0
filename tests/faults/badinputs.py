"""The hostile inputs pivtool is tried with, through its CLI, and what it must say.

Used by tests/faults/test_faults_badinput.py (which asserts each outcome and records rows)
and by tools/gen_bad_input.py (which renders docs/bad-input.md from those rows). Cases run
in a scratch directory holding the files below, so every path in a message is relative and
the generated table is the same on every machine.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import NameOID

from pivtool.certs.ca import LabCA
from pivtool.sim.state import load_state
from tests.cli.clihelp import make_card, run
from tests.faults.faulthelp import counting_links

PIN, PUK = "24681357", "86427531"
UPN = "alice@contoso.com"


@dataclass(frozen=True)
class Case:
    """One bad input: what it is, the command, and the exit code pivtool must give."""

    input: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    exit: int = 2
    sim: bool = True  # run with --sim card.json


def _self_signed(key: Any, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))


def prepare(work: Path) -> None:
    """Write the card, the lab CA and the input files into *work* (the cwd of the cases)."""
    card = make_card(work, "card.json")
    LabCA.init(work / "ca", "CN=Bad Input CA", crl_url="http://127.0.0.1/ca.crl")
    r = run(card, "enroll", "--upn", UPN, "--ca", str(work / "ca"),
            env={"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK})
    assert r.exit_code == 0, r.output
    other = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(other, "Someone Else")
    der = cert.public_bytes(Encoding.DER)
    files: dict[str, bytes] = {
        "empty.pem": b"",
        "random.bin": bytes((i * 131 + 7) % 256 for i in range(700)),
        "text.txt": b"this is not a certificate\n",
        "truncated.pem": cert.public_bytes(Encoding.PEM)[:300],
        "key-only.pem": other.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
        "other-key.pem": cert.public_bytes(Encoding.PEM),
        "flipped.der": der[:40] + bytes([der[40] ^ 0xFF]) + der[41:],
        "truncated.der": der[: len(der) // 2],
        "bad-version.der": der[:6] + b"\x02\x01\x7f" + der[9:],
        "locked.p12": pkcs12.serialize_key_and_certificates(
            b"x", other, cert, None, serialization.BestAvailableEncryption(b"right")),
        "corrupt.p12": b"\x30\x82\x01\x00\x02\x01\x03" + bytes(250),
        "encrypted-key.pem": other.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right")),
        "rsa1024.pem": rsa.generate_private_key(65537, 1024).private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "garbage.csr": b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                       b"-----END CERTIFICATE REQUEST-----\n",
        "no-upn.csr": x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(
            other, hashes.SHA256()).public_bytes(Encoding.PEM),
        "corrupt-card.json": b'{"format": "pivtool-sim-state", "version": 1, "pin": ',
        "future-card.json": json.dumps({"format": "pivtool-sim-state",
                                        "version": 99}).encode(),
    }
    for name, data in files.items():
        (work / name).write_bytes(data)


PINENV = {"PIVTOOL_PIN": PIN}
#: A Graph configuration that is never reached: these cases fail before any request.
GRAPH = {"PIVTOOL_TENANT": "contoso.onmicrosoft.com", "PIVTOOL_CLIENT_ID": "app",
         "PIVTOOL_CLIENT_SECRET": "never-sent"}

CASES: list[Case] = [
    # --- certificate files for `certs import` -----------------------------------------
    Case("empty certificate file", ("certs", "import", "9a", "empty.pem"), PINENV),
    Case("random bytes as a certificate", ("certs", "import", "9a", "random.bin"), PINENV),
    Case("a text file as a certificate", ("certs", "import", "9a", "text.txt"), PINENV),
    Case("truncated PEM certificate", ("certs", "import", "9a", "truncated.pem"), PINENV),
    Case("PEM with a key, no certificate", ("certs", "import", "9a", "key-only.pem"),
         PINENV),
    Case("DER certificate with a flipped byte", ("certs", "import", "9a", "flipped.der"),
         PINENV),
    Case("truncated DER certificate", ("certs", "import", "9a", "truncated.der"), PINENV),
    Case("certificate with an invalid X.509 version",
         ("certs", "import", "9a", "bad-version.der"), PINENV),
    Case("certificate for another key", ("certs", "import", "9a", "other-key.pem"), PINENV),
    Case("PKCS#12 with the wrong password", ("certs", "import", "9a", "locked.p12"),
         {**PINENV, "PIVTOOL_PFX_PASSWORD": "wrong"}),
    Case("corrupt PKCS#12", ("certs", "import", "9a", "corrupt.p12"),
         {**PINENV, "PIVTOOL_PFX_PASSWORD": "x"}),
    Case("certificate file that does not exist", ("certs", "import", "9a", "missing.pem"),
         PINENV),
    Case("unknown slot", ("certs", "import", "9z", "other-key.pem"), PINENV),
    # --- private keys for `keys import` -----------------------------------------------
    Case("random bytes as a private key", ("keys", "import", "9d", "random.bin"), PINENV),
    Case("encrypted key without a password", ("keys", "import", "9d", "encrypted-key.pem"),
         PINENV),
    Case("encrypted key, wrong password", ("keys", "import", "9d", "encrypted-key.pem"),
         {**PINENV, "PIVTOOL_PFX_PASSWORD": "wrong"}),
    Case("a certificate as a private key", ("keys", "import", "9d", "other-key.pem"),
         PINENV),
    # --- CSRs for `ca issue` ----------------------------------------------------------
    Case("CSR with garbage inside the PEM", ("ca", "issue", "ca", "garbage.csr"), sim=False),
    Case("random bytes as a CSR", ("ca", "issue", "ca", "random.bin"), sim=False),
    # A request the CA refuses and a missing CA directory are bad input (exit 2) like a
    # malformed CSR: nothing was issued.
    Case("CSR without UPN or e-mail", ("ca", "issue", "ca", "no-upn.csr"), sim=False),
    Case("a certificate as a CSR", ("ca", "issue", "ca", "other-key.pem"), sim=False),
    Case("CA directory that does not exist", ("ca", "issue", "no-ca", "no-upn.csr"), sim=False),
    # --- secrets -----------------------------------------------------------------------
    Case("PIN of 5 characters", ("pin", "verify"), {"PIVTOOL_PIN": "12345"}),
    Case("PIN of 9 characters", ("pin", "verify"), {"PIVTOOL_PIN": "123456789"}),
    Case("empty PIN", ("pin", "verify"), {"PIVTOOL_PIN": ""}),
    Case("no PIN and no terminal", ("pin", "verify"), {}),
    Case("new PIN too short", ("pin", "change"), {**PINENV, "PIVTOOL_NEW_PIN": "1"}),
    Case("management key not hex", ("mgmt-key", "change", "-a", "aes128"),
         {**PINENV, "PIVTOOL_NEW_MGMT_KEY": "not-hex-at-all"}),
    Case("management key of the wrong length", ("mgmt-key", "change", "-a", "aes128"),
         {**PINENV, "PIVTOOL_NEW_MGMT_KEY": "00112233"}),
    Case("PUK of 3 characters", ("puk", "change"),
         {"PIVTOOL_PUK": "123", "PIVTOOL_NEW_PUK": "12345678"}),
    # --- enroll options ----------------------------------------------------------------
    Case("UPN without a domain", ("enroll", "--upn", "alice", "--ca", "ca"), PINENV),
    Case("subject that is not a DN", ("enroll", "--upn", UPN, "--subject", "not a dn",
                                      "--ca", "ca"), PINENV),
    Case("policy that is not an OID", ("enroll", "--upn", UPN, "--policy", "x.y",
                                       "--ca", "ca"), PINENV),
    Case("two issuers", ("enroll", "--upn", UPN, "--ca", "ca", "--csr-out", "x.csr"),
         PINENV),
    Case("algorithm iOS cannot use", ("enroll", "--upn", UPN, "-a", "ed25519", "--ca", "ca"),
         PINENV),
    Case("unknown EKU", ("certs", "request", "9a", "--upn", UPN, "--eku", "frobnicate"),
         PINENV),
    # --- the card itself -----------------------------------------------------------------
    Case("virtual card file that does not exist", ("--sim", "nothing.json", "info"),
         sim=False),
    Case("corrupt virtual card file", ("--sim", "corrupt-card.json", "info"), sim=False),
    Case("virtual card file of a future format", ("--sim", "future-card.json", "info"),
         sim=False),
    Case("malformed PIVTOOL_SIM_FAULTS", ("info",), {"PIVTOOL_SIM_FAULTS": "x:melt"}),
    # --- Microsoft Graph (entra bind): refused before any request is sent ----------------
    Case("entra bind without a tenant", ("entra", "bind", "--upn", UPN),
         {"PIVTOOL_CLIENT_ID": "app"}),
    Case("Graph URL that is not https", ("entra", "bind", "--upn", UPN), {
        **GRAPH, "PIVTOOL_GRAPH_URL": "http://graph.example"}),
    Case("random bytes as the app's certificate",
         ("entra", "bind", "--upn", UPN, "--client-cert", "random.bin"), GRAPH),
    Case("unknown --values kind", ("entra", "bind", "--upn", UPN, "--values", "Serial"),
         GRAPH),
    Case("unknown --values kind, no certificate", ("entra", "policy", "--values", "Serial"),
         GRAPH),
    Case("entra bind with --slot and --cert", ("entra", "bind", "--upn", UPN, "--slot", "9a",
                                               "--cert", "other-key.pem"), GRAPH),
]


def run_case(work: Path, case: Case) -> dict[str, Any]:
    """Run *case* in *work* (the cwd); check the contract and return its table row:
    exit code as expected, one ``Error:`` line, no traceback, the card unchanged."""
    card = work / "card.json"
    before = load_state(card)
    with counting_links() as links:
        r = run(Path("card.json") if case.sim else None, *case.args, env=case.env)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, f"{case.input}: {r.stderr!r}"
    assert r.exit_code == case.exit, f"{case.input}: exit {r.exit_code}: {errors[0]}"
    after = load_state(card)
    assert (after.objects, after.keys, after.pin, after.mgmt_key) == (
        before.objects, before.keys, before.pin, before.mgmt_key), "the card changed"
    assert after.pin_retries_left == before.pin_retries_left, "a PIN try was spent"
    apdus = sum(link.sim.commands for link in links)
    cmd = " ".join(("pivtool", *(("--sim", "card.json") if case.sim else ()), *case.args))
    secrets = ", ".join(sorted(case.env)) or "-"
    return {"input": case.input, "command": cmd, "env": secrets,
            "message": errors[0].removeprefix("Error: "), "exit": r.exit_code,
            "apdus": apdus}


def render(rows: list[dict[str, Any]]) -> str:
    """docs/bad-input.md from the recorded rows (in :data:`CASES` order)."""
    order = {c.input: i for i, c in enumerate(CASES)}
    rows = sorted(rows, key=lambda r: order.get(r["input"], len(order)))

    def cell(text: object) -> str:
        return str(text).replace("|", "\\|")

    lines = [
        "# Bad input: what pivtool says",
        "",
        "<!-- GENERATED by tools/gen_bad_input.py from tests/faults/badinputs.py; "
        "do not edit. -->",
        "",
        "Every row is a test (`tests/faults/test_faults_badinput.py`): the command is run "
        "against a virtual YubiKey that holds an enrolled 9a credential, and the test checks "
        "the exit code, that exactly one `Error:` line is printed (no traceback), that the "
        "card did not change and that no PIN try was spent. *APDUs* is how many commands "
        "reached the card before pivtool refused (0: refused before the card was opened). "
        "*Secrets* lists the environment variables set (values are never shown).",
        "",
        "Random and mutated inputs beyond this table are covered by the fuzz tests "
        "(`tests/faults/test_faults_fuzz.py`, `bench/fuzz.py`); a card pulled mid-command "
        "by `docs/fault-tolerance.md`.",
        "",
        "| # | input | command | secrets | error shown | exit | APDUs |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {cell(r['input'])} | `{cell(r['command'])}` | "
                     f"{cell(r['env'])} | {cell(r['message'])} | {r['exit']} | "
                     f"{r['apdus']} |")
    return "\n".join(lines) + "\n"
