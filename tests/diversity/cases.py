"""The card-diversity matrix: every pivtool command on every kind of card the emulator
makes (``pivtool.sim.profiles``), and what each must end in.

Used by tests/diversity/test_diversity.py (in process, ``--sim``), test_diversity_pcsc.py
(a subset through pcscd) and tools/gen_bad_input.py (docs/card-diversity.md).

Commands are enumerated from the CLI's own command table (:data:`pivtool.cli.main.COMMANDS`,
walked down to every leaf), so a new command cannot be forgotten: it needs a :class:`Case`
here or a line in :data:`CARDLESS` saying why no card is involved.

Cards are prepared through the emulator's own state (never through pivtool, whose
behaviour is what is under test): a fresh card, a *loaded* card (9a: a generated P-256 key
with a certificate, 9c: an imported P-256 key with a certificate), a card with the PIN
blocked, and one with PIN and PUK blocked.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.testing import Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pivtool.certs.ca import LabCA
from pivtool.sim.consts import Origin, PinPolicy, TouchPolicy
from pivtool.sim.keys import to_pem
from pivtool.sim.profiles import PROFILES
from pivtool.sim.state import SlotKey, new_card_state, save_state
from pivtool.sim.tlv import tlv
from tests.cli.clihelp import run

PROFILE_NAMES: tuple[str, ...] = tuple(PROFILES)
UPN = "alice@contoso.com"
SERIAL = 5550140
PIN, PUK = "123456", "12345678"
NEW_PIN, NEW_PUK = "24681357", "86427531"
DEFAULT_KEY = "010203040506070801020304050607080102030405060708"
#: What a user gives for commands that change the card.
ADMIN = {"PIVTOOL_PIN": PIN, "PIVTOOL_MGMT_KEY": DEFAULT_KEY}
#: Documented exit codes (docs/exit-codes.md).
EXIT_CODES = frozenset({0, 1, 2, 3, 4, 5})

#: Leaves that never open a card, with the reason (checked against the command table).
CARDLESS: dict[str, str] = {
    "ca crl": "lab CA files only",
    "ca init": "lab CA files only",
    "ca issue": "lab CA files only",
    "ca list": "lab CA files only",
    "ca revoke": "lab CA files only",
    "escrow list": "escrow file only",
    "escrow show": "escrow file only",
    "completion": "shell completion script",
    "batch status": "batch state file only",
    "batch report": "batch state file only",
    "batch release": "batch state file only",
    "sim serve": "serves a card to pcscd: the pcscd tier runs every profile behind it",
    "keys verify-attestation": "attestation files only",
    "sim touch": "presses the touch sensor of a card another process is serving (emulator "
                 "control, no card command)",
    "entra policy": "Microsoft Graph only",
    "entra bind": "Microsoft Graph; its card part (the certificate of --slot) is the one "
                  "'entra ids' reads, run on every profile",
    "entra unbind": "Microsoft Graph; its card part is the one 'entra ids' reads",
    "db grants": "inventory database only",
    "db status": "inventory database only",
    "db upgrade": "inventory database only",
    "inventory export": "inventory database only",
    "inventory import": "inventory database and batch files only",
    "inventory list": "inventory database only",
    "inventory show": "inventory database only",
    "lost": "inventory database only",
    "retire": "inventory database only",
}


@dataclass(frozen=True)
class Case:
    """One command, as a user would type it; *card* names the prepared card it runs on."""

    command: str  # the leaf, e.g. "keys generate"
    args: tuple[str, ...]
    # Tells apart several cases of one command (a row of its own in the table).
    variant: str = ""
    card: str = "loaded"  # fresh | loaded | pin-blocked | all-blocked | None (no --sim)
    env: dict[str, str] = field(default_factory=dict)
    # Through pcscd too (the pcscd tier runs a representative subset).
    pcsc: bool = False

    @property
    def label(self) -> str:
        """The row name: the command, and the variant when there is one."""
        return f"{self.command} ({self.variant})" if self.variant else self.command


CASES: tuple[Case, ...] = (
    Case("info", ("info",), pcsc=True),
    Case("list", ("list",)),
    Case("inventory register", ("--db", "sqlite:///inventory.db", "inventory", "register")),
    Case("check", ("check", "--upn", UPN), env={"PIVTOOL_PIN": PIN}, pcsc=True),
    Case("diagnose", ("diagnose", "-o", "diagnose.txt")),
    Case("enroll", ("enroll", "--upn", UPN, "--ca", "ca"), card="fresh",
         env={"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": NEW_PIN, "PIVTOOL_NEW_PUK": NEW_PUK,
              "PIVTOOL_MGMT_KEY": DEFAULT_KEY}, pcsc=True),
    Case("entra ids", ("entra", "ids", "--slot", "9a")),
    Case("keys attest", ("keys", "attest", "9a", "-o", "attestation.pem", "--roots",
                         "sim-root.pem"), pcsc=True),
    Case("keys delete", ("keys", "delete", "9c", "--yes"), env=ADMIN),
    Case("keys export", ("keys", "export", "9a", "-o", "pub9a.pem")),
    Case("keys generate", ("keys", "generate", "9d", "-a", "eccp256", "-o", "pub9d.pem"),
         env=ADMIN, pcsc=True),
    Case("keys generate", ("keys", "generate", "9a", "-a", "eccp384", "--force"),
         variant="P-384 in 9a", env=ADMIN),
    Case("keys import", ("keys", "import", "9e", "key.pem", "--no-cert"), env=ADMIN),
    Case("keys info", ("keys", "info", "9a"), pcsc=True),
    Case("keys info", ("keys", "info", "9c"), variant="imported key"),
    Case("keys move", ("keys", "move", "9c", "9d"), env=ADMIN),
    Case("certs delete", ("certs", "delete", "9c", "--yes"), env=ADMIN),
    Case("certs export", ("certs", "export", "9a", "-o", "cert9a.pem"), pcsc=True),
    Case("certs import", ("certs", "import", "9a", "cert9a-new.pem", "--force"), env=ADMIN),
    Case("certs import", ("certs", "import", "9c", "cert9c-new.pem", "--force"),
         variant="imported key", env=ADMIN),
    Case("certs request", ("certs", "request", "9a", "--upn", UPN, "-o", "req.csr"),
         env={"PIVTOOL_PIN": PIN}, pcsc=True),
    Case("certs selfsign", ("certs", "selfsign", "9a", "--upn", UPN, "--force"), env=ADMIN),
    Case("mgmt-key change", ("mgmt-key", "change", "--generate", "--protect"), card="fresh",
         env=ADMIN),
    Case("objects ccc", ("objects", "ccc", "--generate"), card="fresh", env=ADMIN),
    Case("objects chuid", ("objects", "chuid", "--generate"), card="fresh", env=ADMIN),
    Case("objects read", ("objects", "read", "5fc105", "-o", "object.bin")),
    Case("objects write", ("objects", "write", "5fc10d", "object-in.bin"), env=ADMIN),
    Case("pin change", ("pin", "change"), card="fresh",
         env={"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": NEW_PIN}),
    Case("pin set-retries", ("pin", "set-retries", "5", "5", "--yes"), card="fresh",
         env=ADMIN),
    Case("pin unblock", ("pin", "unblock"), card="pin-blocked",
         env={"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": NEW_PIN}, pcsc=True),
    Case("pin unblock", ("pin", "unblock", "--allow-last-try"), card="pin-blocked",
         variant="--allow-last-try", env={"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": NEW_PIN}),
    Case("pin verify", ("pin", "verify"), card="fresh", env={"PIVTOOL_PIN": PIN}, pcsc=True),
    Case("puk change", ("puk", "change"), card="fresh",
         env={"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PUK": NEW_PUK}),
    Case("recover", ("recover", "--yes"), card="pin-blocked",
         env={"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": NEW_PIN}),
    Case("recover", ("recover", "--yes", "--allow-last-try"), card="pin-blocked",
         variant="--allow-last-try", env={"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": NEW_PIN}),
    Case("reset", ("reset", "--yes", "--backup-dir", "backups"), card="all-blocked"),
    Case("batch enroll", ("batch", "enroll", "roster.csv", "--sim-pile", "pile", "--ca", "ca",
                          "--yes", "--max-cards", "1", "--sim-readers", "1"), card=None,
         env={"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": NEW_PIN, "PIVTOOL_NEW_PUK": NEW_PUK,
              "PIVTOOL_MGMT_KEY": DEFAULT_KEY}),
    Case("sim create", ("sim", "create", "created.json", "--profile", "{profile}"), card=None),
    Case("sim attestation-root", ("sim", "attestation-root", "loaded.json", "-o", "root.pem"),
         card=None),
)


# --- what each case must end in -----------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """How a case must end: *exit* (0 = success; several codes when the choice between
    them is the client's), and *says*, a regex the ``Error:`` line (or, with *report*, the
    output of a command that reports per item, like ``check`` and ``batch``) must match.
    *xfail*: why this cell is a known client bug (issue 14 items 1-4); the test asserts
    the expectation under ``xfail(strict=True)`` until the fix lands, then must pass."""

    exit: tuple[int, ...] = (0,)
    says: str = ""
    report: bool = False
    xfail: str = ""

    @property
    def outcome(self) -> str:
        """The expected outcome in words (for the docs table)."""
        if self.exit == (0,):
            return "ok"
        return ("report" if self.report else "refused") + " (exit " + \
            "/".join(str(c) for c in self.exit) + ")"


OK = Expect()
CHECK_FAILS = Expect((1,), r"^FAIL", report=True)
NO_SERIAL = Expect((1,), r"no serial number", report=True)
#: "The card cannot do this": exit 2 when pivtool knew before sending anything that
#: changes the card, 1 when the card refused; which one is the client's call.
CANNOT = (1, 2)
NEEDS_57 = Expect(CANNOT, r"needs YubiKey firmware 5\.7 or later")

YUBIKEYS_OLD = ("yubikey-5.4", "yubikey-4.3", "yubikey-neo", "yubikey-compatible")
#: Cards that cannot tell the PUK's tries (no GET METADATA; VERIFY of the PUK refused).
PUK_UNREADABLE = ("yubikey-4.3", "yubikey-neo", "generic")
#: The retry guard: a PUK try the card cannot count needs --allow-last-try (or a person's
#: yes); enroll replaces a factory PUK it cannot rule out, so it asks too (or --keep-puk).
GUARDED = Expect((4,), r"allow-last-try")

#: (command label, profile) -> expectation; anything not listed must succeed.
EXPECT: dict[tuple[str, str], Expect] = {
    **{("check", p): CHECK_FAILS for p in PROFILE_NAMES},
    **{(c, p): NEEDS_57 for c in ("keys delete", "keys move") for p in YUBIKEYS_OLD},
    **{("batch enroll", p): NO_SERIAL for p in ("yubikey-4.3", "yubikey-neo", "generic")},
    **{("inventory register", p): Expect(CANNOT, r"no serial number")
       for p in ("yubikey-4.3", "yubikey-neo", "generic")},
    **{(c, p): GUARDED for c in ("pin unblock", "puk change", "recover", "enroll")
       for p in PUK_UNREADABLE},
    # NEO
    ("keys attest", "yubikey-neo"): Expect(CANNOT, r"not supported"),
    ("keys generate (P-384 in 9a)", "yubikey-neo"): Expect(CANNOT, r"eccp384.*4\.0"),
    # generic
    ("keys attest", "generic"): Expect(CANNOT, r"YubiKey extension; this is a generic PIV card"),
    ("keys delete", "generic"): Expect(CANNOT, r"YubiKey extension; this is a generic PIV card"),
    ("keys move", "generic"): Expect(CANNOT, r"YubiKey extension; this is a generic PIV card"),
    ("keys import", "generic"): Expect(CANNOT, r"generic PIV card only generates its keys"),
    ("keys generate (P-384 in 9a)", "generic"): Expect(
        CANNOT, r"refuses this algorithm in this slot"),
    ("mgmt-key change", "generic"): Expect((2,), r"protect"),
    ("pin set-retries", "generic"): Expect(CANNOT, r"YubiKey extension"),
    ("reset", "generic"): Expect(CANNOT, r"only its issuer can"),
    ("sim attestation-root", "generic"): Expect(CANNOT, r"generic PIV card: it has no attest"),
    ("sim attestation-root", "yubikey-neo"): Expect(CANNOT, r"yubikey-neo card: it has no att"),
}


def expect(label: str, profile: str) -> Expect:
    """What the case labelled *label* must end in on a card of *profile*."""
    return EXPECT.get((label, profile), OK)


# --- clean refusal ---------------------------------------------------------------------------

_BARE_SW = re.compile(r"^Error: (?:[^:]*: )?SW=[0-9A-F]{4}(?: \([A-Z_ ]+\))?\.?$")
_NONE_WORD = re.compile(r"\bNone\b")
#: ... and ``keys attest`` reports an attestation it cannot verify (exit 1) in its one line.
_REPORT = re.compile(r"^FAIL|not enrolled: |FAILED: |attestation NOT verified", re.M)
#: Wording that takes the card in the reader for a YubiKey (a generic card's messages must
#: not use it; saying that something *needs* a YubiKey is fine).
_YUBIKEY_WORDING = re.compile(r"on a YubiKey|this YubiKey|your YubiKey|touch policy|"
                              r"YubiKey \d[.\d]* serial")


def problems(r: Result, profile: str) -> list[str]:
    """What is wrong with how a command ended, whatever its exit code."""
    out: list[str] = []
    text = r.output
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        out.append(f"raised {type(r.exception).__name__}")
    if "Traceback" in text:
        out.append("traceback")
    if r.exit_code not in EXIT_CODES:
        out.append(f"undocumented exit code {r.exit_code}")
    if _NONE_WORD.search(text):
        out.append("says None")
    if profile == "generic" and _YUBIKEY_WORDING.search(text):
        out.append("YubiKey wording on a generic card: "
                   + _YUBIKEY_WORDING.search(text).group(0))  # type: ignore[union-attr]
    if r.exit_code != 0:
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
        if not errors and r.exit_code == 1 and _REPORT.search(text):
            pass  # check / batch: a report whose items say what failed (exit 1 documented)
        elif len(errors) != 1:
            out.append(f"{len(errors)} Error: lines")
        elif _BARE_SW.match(errors[0]):
            out.append("bare SW: " + errors[0])
        elif not r.stderr.rstrip().endswith(errors[0]):
            out.append("the error is not the last thing said")
    return out


def judge(r: Result, case: Case, profile: str) -> list[str]:
    """Everything wrong with how *case* ended on *profile*: :func:`problems`, plus an exit
    code or a message other than :func:`expect` says."""
    exp = expect(case.label, profile)
    found = problems(r, profile)
    if exp.says and not re.search(exp.says, r.output if exp.report else error_line(r), re.M):
        found.append(f"does not say /{exp.says}/")
    if r.exit_code not in exp.exit:
        found.append(f"exit {r.exit_code}, expected {'/'.join(map(str, exp.exit))}")
    return found


def run_in(work: Path, *args: str, env: dict[str, str]) -> Result:
    """``pivtool ARGS`` with *work* as the current directory (relative paths in messages)."""
    old = os.getcwd()
    os.chdir(work)
    try:
        return run(None, *args, env=env)
    finally:
        os.chdir(old)


def error_line(r: Result) -> str:
    """The ``Error:`` line (without the prefix), or "" on success."""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    return lines[-1][len("Error: "):] if lines else ""


# --- the command table ------------------------------------------------------------------------

def leaf_commands() -> list[str]:
    """Every leaf command of ``pivtool``, from the CLI's command table."""
    from pivtool.cli.main import cli

    leaves: list[str] = []

    def walk(cmd: click.Command, path: list[str], parent: click.Context) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, parent=parent, info_name=path[-1] if path else "pivtool")
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, [*path, name], ctx)
        else:
            leaves.append(" ".join(path))

    walk(cli, [], click.Context(cli, info_name="pivtool"))
    return leaves


# --- preparing the cards ------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(key: ec.EllipticCurvePrivateKey, cn: str, serial: int) -> x509.Certificate:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(serial).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))


def _cert_object(cert: x509.Certificate) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    return tlv(0x70, der) + tlv(0x71, b"\x00") + tlv(0xFE)


@dataclass
class Prepared:
    """The cards and input files of one profile, in *work*."""

    work: Path
    profile: str
    key9a: Any = None


def prepare(work: Path, profile: str) -> Prepared:
    """Write the prepared cards of *profile* and the input files into *work*."""
    work.mkdir(parents=True, exist_ok=True)
    fresh = new_card_state(profile=profile, serial=SERIAL)
    save_state(fresh, work / "fresh.json")
    key9a = ec.generate_private_key(ec.SECP256R1())
    key9c = ec.generate_private_key(ec.SECP256R1())
    loaded = new_card_state(profile=profile, serial=SERIAL)
    for slot, key, origin, policy in ((0x9A, key9a, Origin.GENERATED, PinPolicy.ONCE),
                                      (0x9C, key9c, Origin.IMPORTED, PinPolicy.ALWAYS)):
        loaded.keys[slot] = SlotKey(algorithm=0x11, private_key_pem=to_pem(key),
                                    pin_policy=policy, touch_policy=TouchPolicy.NEVER,
                                    origin=origin)
    loaded.objects[0x5FC105] = _cert_object(_cert(key9a, "alice", 1))
    loaded.objects[0x5FC10A] = _cert_object(_cert(key9c, "alice signing", 2))
    save_state(loaded, work / "loaded.json")
    blocked = new_card_state(profile=profile, serial=SERIAL)
    blocked.pin_retries_left = 0
    save_state(blocked, work / "pin-blocked.json")
    blocked.puk_retries_left = 0
    save_state(blocked, work / "all-blocked.json")
    # Input files.
    other = ec.generate_private_key(ec.SECP256R1())
    (work / "key.pem").write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (work / "cert9a-new.pem").write_bytes(
        _cert(key9a, "alice renewed", 3).public_bytes(serialization.Encoding.PEM))
    (work / "cert9c-new.pem").write_bytes(
        _cert(key9c, "alice signing renewed", 4).public_bytes(serialization.Encoding.PEM))
    (work / "object-in.bin").write_bytes(b"\x01\x02\x03")
    (work / "roster.csv").write_text(f"upn,display name\n{UPN},Alice\n")
    (work / "pile").mkdir()
    save_state(new_card_state(profile=profile, serial=SERIAL + 1), work / "pile" / "key-1.json")
    LabCA.init(work / "ca", "CN=Diversity Lab CA", crl_url="http://127.0.0.1/ca.crl")
    # The virtual card's own attestation root, to trust for 'keys attest --roots' (a card
    # without attestation gets some other root: it must refuse before it matters).
    root = _cert(other, "not an attestation root", 5)
    if loaded.attestation_root_cert:
        root = x509.load_der_x509_certificate(loaded.attestation_root_cert)
    (work / "sim-root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return Prepared(work, profile, key9a)


def case_dir(base: Path, prepared: Path, case: Case, profile: str) -> Path:
    """A scratch copy of the prepared directory for one case (cases change their card)."""
    d = base / re.sub(r"[^a-z0-9.]+", "-", f"{profile} {case.label}".lower())
    shutil.copytree(prepared, d, symlinks=True)
    return d


def argv(case: Case, profile: str) -> list[str]:
    """The command line of *case* (``--sim CARD`` first when it runs on a card)."""
    args = [a.replace("{profile}", profile) for a in case.args]
    return (["--sim", f"{case.card}.json"] if case.card else []) + args
