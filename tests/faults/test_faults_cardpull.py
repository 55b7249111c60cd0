"""The card pulled at every APDU of the commands that change a card.

For each operation: run it once to count its APDUs, then for every N pull the card at APDU
N (the pulled APDU is not executed; everything before it is on the card's flash) and check

* one ``Error:`` line, exit 5, naming the workflow step where the command has steps;
* nothing the user had is lost: the card's PIN/PUK are ones the user knows, pivtool still
  gets management-key access with the PIN and the keys the user knows, and every
  certificate the card held is still on it or in a backup file;
* re-running the same command (no ``--force`` added) completes, and neither the fault nor
  the re-run spent a PIN or PUK try (the card's retry counters are full again).

ANSWER-LOST (the card executes the command, its answer never arrives) runs at every APDU of
the commands; a subset runs with RESET (another program resets the card), GARBAGE (a 9000
response that is not what the card sent; the command is not executed) and
TRANSMISSION-ERROR faults. Rows go to the
generated table in docs/fault-tolerance.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pivtool.certs.ca import LabCA
from pivtool.core.errors import NotFoundError
from pivtool.piv.constants import Slot
from pivtool.sim.state import load_state
from pivtool.workflows.journal import JOURNAL_ENV
from tests.cli.clihelp import make_card, run, session
from tests.faults.faulthelp import (
    count_apdus,
    default_key,
    error_line,
    mgmt_key_opens,
    record,
    run_faulted,
)

UPN = "alice@contoso.com"
PIN0, PUK0 = "123456", "12345678"
PIN, PUK = "24681357", "86427531"
PIN2 = "11223344"
PUK2 = "55667788"
GIVEN_KEY = bytes(range(1, 25))  # an AES-192 key the user typed (and so knows)

#: The steps enroll names in its errors (StepFailedError "step: ...").
ENROLL_STEPS = ("read card", "check slots", "PIN and PUK", "management key",
                "generate key", "certificate request", "issue certificate",
                "check certificate", "import certificate", "CHUID and CCC", "prove key")


@dataclass
class Scenario:
    """One operation on a prepared card, and what the user knows about that card."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    pins: set[str]
    puks: set[str]
    keys: set[bytes] = field(default_factory=set)
    steps: tuple[str, ...] = ()
    #: PIN/PUK may be blocked mid-way by design (reset spends them on purpose).
    blocks_on_purpose: bool = False
    rerun_args: tuple[str, ...] | None = None
    #: Check of the card after the successful re-run.
    done: Callable[[Path], None] = lambda card: None


def cert_der(card: Path, slot: Slot = Slot.AUTHENTICATION) -> bytes | None:
    s = session(card)
    try:
        return s.get_certificate_der(slot)[0]
    except NotFoundError:
        return None
    finally:
        s.connection.close()


def saved_certs(directory: Path) -> set[bytes]:
    """DER of every certificate in a PEM file under *directory*."""
    out = set()
    for p in directory.rglob("*.pem"):
        try:
            for c in x509.load_pem_x509_certificates(p.read_bytes()):
                out.add(c.public_bytes(Encoding.DER))
        except ValueError:
            continue
    return out


# --- card templates, made once per module ----------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The lab CA and the prepared cards (templates, copied for every N)."""
    base = tmp_path_factory.mktemp("cardpull")
    ca = base / "ca"
    LabCA.init(ca, "CN=Fault CA", crl_url="http://127.0.0.1/ca.crl")
    fresh = make_card(base, "fresh.json")
    enrolled = make_card(base, "enrolled.json")
    r = run(enrolled, "enroll", "--upn", UPN, "--ca", str(ca),
            env={"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK})
    assert r.exit_code == 0, r.output
    # A card whose user set a PIN and typed a management key (not PIN-protected).
    typed = make_card(base, "typed.json")
    for args, env in [(("pin", "change"), {"PIVTOOL_PIN": PIN0, "PIVTOOL_NEW_PIN": PIN}),
                      (("mgmt-key", "change", "-a", "aes192"),
                       {"PIVTOOL_NEW_MGMT_KEY": GIVEN_KEY.hex()})]:
        r = run(typed, *args, env=env)
        assert r.exit_code == 0, r.output
    # A card whose PIN is blocked (the user still knows the PUK).
    locked = base / "locked.json"
    shutil.copy(enrolled, locked)
    for _ in range(3):
        run(locked, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "00000000"})
    assert load_state(locked).pin_retries_left == 0
    # A second certificate for the enrolled 9a key, to import over the first.
    r = run(enrolled, "certs", "request", "9a", "--upn", UPN, "-o", str(base / "new.csr"),
            env={"PIVTOOL_PIN": PIN})
    assert r.exit_code == 0, r.output
    new_cert = LabCA.open(ca).issue((base / "new.csr").read_bytes())
    (base / "new.pem").write_bytes(new_cert.public_bytes(Encoding.PEM))
    return {"ca": ca, "fresh": fresh, "enrolled": enrolled, "typed": typed, "locked": locked,
            "new.pem": base / "new.pem"}


def scenarios(lab: dict[str, Path]) -> dict[str, tuple[Path, Scenario]]:
    ca = str(lab["ca"])
    new_pem = lab["new.pem"].read_bytes()
    enroll = ("enroll", "--upn", UPN, "--ca", ca)

    def enrolled_ok(card: Path) -> None:
        st = load_state(card)
        assert st.pin == PIN.encode() and st.puk == PUK.encode()
        assert 0x9A in st.keys and cert_der(card) is not None

    def new_cert_in(card: Path) -> None:
        der = cert_der(card)
        assert der == x509.load_pem_x509_certificate(new_pem).public_bytes(Encoding.DER)

    def protected(card: Path) -> None:
        assert mgmt_key_opens(card, {PIN}, set()) == "protected"

    def given(card: Path) -> None:
        st = load_state(card)
        assert st.mgmt_key == GIVEN_KEY and 0x5FC109 not in st.objects

    def factory(card: Path) -> None:
        st = load_state(card)
        assert st.pin == PIN0.encode() and st.pin_retries_left == 3
        assert set(st.keys) <= {0xF9}  # only the attestation key survives a reset

    def unblocked(card: Path) -> None:
        st = load_state(card)
        assert st.pin == PIN2.encode() and st.pin_retries_left == 3

    return {
        "enroll": (lab["fresh"], Scenario(
            "enroll", enroll, {"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK},
            {PIN0, PIN}, {PUK0, PUK}, {default_key()}, ENROLL_STEPS, done=enrolled_ok)),
        "enroll --force": (lab["enrolled"], Scenario(
            "enroll --force (replace)", (*enroll, "--force", "--backup-dir", "bk"),
            {"PIVTOOL_PIN": PIN}, {PIN}, {PUK}, set(), ENROLL_STEPS, done=enrolled_ok)),
        "certs import": (lab["enrolled"], Scenario(
            "certs import --force", ("certs", "import", "9a", str(lab["new.pem"]), "--force",
                                     "--backup-dir", "bk"),
            {"PIVTOOL_PIN": PIN}, {PIN}, {PUK}, done=new_cert_in)),
        "mgmt-key --protect": (lab["typed"], Scenario(
            "mgmt-key change --protect (typed key)", ("mgmt-key", "change", "--protect"),
            {"PIVTOOL_PIN": PIN, "PIVTOOL_MGMT_KEY": GIVEN_KEY.hex()}, {PIN}, {PUK0},
            {GIVEN_KEY}, done=protected)),
        "mgmt-key --protect rotate": (lab["enrolled"], Scenario(
            "mgmt-key change --protect (rotate)", ("mgmt-key", "change", "--protect"),
            {"PIVTOOL_PIN": PIN}, {PIN}, {PUK}, set(), done=protected)),
        "mgmt-key unprotect": (lab["enrolled"], Scenario(
            "mgmt-key change (protected -> typed)", ("mgmt-key", "change", "-a", "aes192"),
            {"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_MGMT_KEY": GIVEN_KEY.hex()}, {PIN}, {PUK},
            {GIVEN_KEY}, done=given)),
        "pin change": (lab["enrolled"], Scenario(
            "pin change", ("pin", "change"), {"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": PIN2},
            {PIN, PIN2}, {PUK}, set(), done=lambda c: _pin_is(c, PIN2))),
        "puk change": (lab["enrolled"], Scenario(
            "puk change", ("puk", "change"), {"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PUK": PUK2},
            {PIN}, {PUK, PUK2}, set(), done=lambda c: _puk_is(c, PUK2))),
        "reset": (lab["enrolled"], Scenario(
            "reset", ("reset", "--yes", "--backup-dir", "bk"), {}, {PIN, PIN0}, {PUK, PUK0},
            blocks_on_purpose=True, done=factory)),
        "recover (unblock)": (lab["locked"], Scenario(
            "recover (PUK)", ("recover",), {"PIVTOOL_PUK": PUK, "PIVTOOL_NEW_PIN": PIN2},
            {PIN, PIN2}, {PUK}, blocks_on_purpose=True, done=unblocked)),
        "recover (reset)": (lab["locked"], Scenario(
            "recover --puk-unknown (reset)", ("recover", "--puk-unknown", "--yes",
                                              "--backup-dir", "bk"),
            {}, {PIN, PIN0}, {PUK, PUK0}, blocks_on_purpose=True, done=factory)),
    }


def _pin_is(card: Path, pin: str) -> None:
    assert load_state(card).pin == pin.encode()


def _puk_is(card: Path, puk: str) -> None:
    assert load_state(card).puk == puk.encode()


OPS = ["enroll", "enroll --force", "certs import", "pin change", "puk change",
       "mgmt-key --protect",
       "mgmt-key --protect rotate", "mgmt-key unprotect", "reset", "recover (unblock)",
       "recover (reset)"]


def check_after_fault(work: Path, card: Path, sc: Scenario, certs_before: set[bytes]
                      ) -> str:
    """Nothing the user had is lost. Returns how the management key opens ('-' if the
    PIN is blocked on purpose)."""
    st = load_state(card)
    assert st.pin.decode() in sc.pins, "PIN changed to something the user does not know"
    assert st.puk.decode() in sc.puks, "PUK changed to something the user does not know"
    on_card = {d for d in (cert_der(card, slot) for slot in (Slot.AUTHENTICATION,
                                                             Slot.KEY_MANAGEMENT)) if d}
    lost = certs_before - on_card - saved_certs(work)
    assert not lost, "a certificate is neither on the card nor backed up"
    if st.pin_retries_left < st.pin_retries_total:
        # Only reset/recover spend PIN tries, and they do so on purpose.
        assert sc.blocks_on_purpose, "a PIN try was spent"
        return "-"
    return mgmt_key_opens(card, sc.pins, sc.keys)


def rerun(work: Path, card: Path, sc: Scenario) -> tuple[int, str]:
    """Re-run the same command, exactly as given; it must complete without spending a PIN
    or PUK try (the counters are read from the card). Returns (exit code, note)."""
    r = run_faulted(card, sc.args, sc.env)
    assert r.exit_code == 0, r.output
    st = load_state(card)
    if not sc.blocks_on_purpose:
        assert st.pin_retries_left == st.pin_retries_total, "the re-run spent a PIN try"
        assert st.puk_retries_left == st.puk_retries_total, "the re-run spent a PUK try"
    return 0, "already enrolled" if "already enrolled" in r.stdout else ""


def pull_case(tmp_path: Path, template: Path, sc: Scenario, n: int, kind: str,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    work = tmp_path / f"{kind}-{n}"
    work.mkdir()
    monkeypatch.chdir(work)  # relative --backup-dir, and default backup dirs, land here
    # Every case is its own world: the fresh copy of the card has its own (empty) journal.
    monkeypatch.setenv(JOURNAL_ENV, str(work / "journal"))
    card = work / "card.json"
    shutil.copy(template, card)
    certs_before = {d for d in (cert_der(card, s) for s in (Slot.AUTHENTICATION,
                                                            Slot.KEY_MANAGEMENT)) if d}
    r = run_faulted(card, sc.args, sc.env, at=n, kind=kind)
    if r.exit_code == 0:
        # Only a GARBAGE answer to a command whose response is ignored gets this far.
        assert kind == "garbage", r.output
        line = "(exit 0: completed; the garbled answer was re-read or not needed)"
    else:
        line = error_line(r)
        if kind in ("card-removed", "reset", "answer-lost"):
            assert r.exit_code == 5, line
            assert "the card was removed" in line or "reset by another program" in line
        elif kind == "garbage":
            # A garbled SELECT (N=1) leaves the applet unselected while looking like an
            # answer some PIV cards give (an FCI), so the card then looks generic: a
            # YubiKey-only option is refused (exit 2), or the retry guard will not spend a
            # try the card cannot count (exit 4) — nothing changed. Elsewhere never 2 or 4.
            assert r.exit_code in ((1, 2, 3, 4, 5) if n == 1 else (1, 3, 5)), line
        else:
            assert r.exit_code == 5, line
    step = ""
    if sc.steps and r.exit_code != 0:
        named = [s for s in sc.steps if line.startswith(f"Error: {s}: ")]
        # The first APDUs (SELECT while the session opens) come before step 1.
        step = named[0] if named else "(opening the card)"
        assert named or n <= 2, line
    how = check_after_fault(work, card, sc, certs_before)
    code, extra = rerun(work, card, sc)
    sc.done(card)
    assert not (certs_before - {cert_der(card)} - saved_certs(work)), "old cert lost"
    return {"op": sc.name, "kind": kind, "n": n, "exit": r.exit_code, "step": step,
            "error": line.removeprefix("Error: "), "mgmt": how,
            "rerun": f"{code}" + (f" ({extra})" if extra else "")}


@pytest.fixture(scope="module")
def counts(lab: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, int]:
    """APDUs of each operation, from one clean run on a copy of its template."""
    out = {}
    base = tmp_path_factory.mktemp("count")
    for op, (template, sc) in scenarios(lab).items():
        work = base / op.replace(" ", "_")
        work.mkdir()
        card = work / "card.json"
        shutil.copy(template, card)
        cwd = Path.cwd()
        import os

        os.chdir(work)
        old_journal = os.environ.get(JOURNAL_ENV)
        os.environ[JOURNAL_ENV] = str(work / "journal")  # as in pull_case: a fresh world
        try:
            out[op] = count_apdus(card, sc.args, sc.env)
        finally:
            os.chdir(cwd)
            if old_journal is None:
                os.environ.pop(JOURNAL_ENV, None)
            else:
                os.environ[JOURNAL_ENV] = old_journal
    return out


@pytest.mark.parametrize("kind", ["card-removed", "answer-lost"])
@pytest.mark.parametrize("op", OPS)
def test_card_pulled_at_every_apdu(op: str, kind: str, lab: dict[str, Path],
                                   counts: dict[str, int], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    template, sc = scenarios(lab)[op]
    total = counts[op]
    assert total >= 3
    for n in range(1, total + 1):
        row = pull_case(tmp_path, template, sc, n, kind, monkeypatch)
        record("cardpull", {**row, "total": total})


@pytest.mark.parametrize("kind", ["reset", "garbage", "transmission-error"])
@pytest.mark.parametrize("op", OPS)
def test_other_faults_sampled(op: str, kind: str, lab: dict[str, Path],
                              counts: dict[str, int], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    template, sc = scenarios(lab)[op]
    total = counts[op]
    # Every third APDU plus the last covers each step at a fraction of the cost; but a
    # garbled read of a certificate is what could make a destructive command skip its
    # backup, so those commands get garbage at every APDU.
    every = kind == "garbage" and op in ("enroll --force", "certs import", "reset",
                                         "recover (reset)")
    for n in sorted({*range(1, total + 1, 1 if every else 3), total}):
        row = pull_case(tmp_path, template, sc, n, kind, monkeypatch)
        record("cardpull", {**row, "total": total})


def test_fault_tolerance_doc_is_current(lab: dict[str, Path]) -> None:
    """docs/fault-tolerance.md matches this run's matrix (regenerate with
    ``.venv/bin/python tools/gen_bad_input.py``). Needs the whole module's rows."""
    from tests.faults.faultdoc import render
    from tests.faults.faulthelp import read_rows

    rows = read_rows("cardpull")
    expected = {(sc.name, kind) for _, sc in scenarios(lab).values()
                for kind in ("card-removed", "answer-lost", "reset", "garbage",
                             "transmission-error")}
    if {(r["op"], r["kind"]) for r in rows} != expected:
        pytest.skip("only part of the matrix ran")
    doc = Path(__file__).resolve().parents[2] / "docs" / "fault-tolerance.md"
    assert doc.exists() and doc.read_text(encoding="utf-8") == render(rows), \
        "docs/fault-tolerance.md is stale: run .venv/bin/python tools/gen_bad_input.py"
