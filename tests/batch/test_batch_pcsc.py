"""``pivtool batch enroll`` against virtual YubiKeys behind pcscd (3 readers at once).

Cards are ``sim serve`` processes: starting one is inserting the key, SIGKILL is pulling it.
The batch runs as a subprocess with ``--json``; the tests wait for its events. The gated
issuer (gated_issuer.py) holds every enrollment between "certificate request" and "issue
certificate" until the test opens the gate, so "mid-enrollment" is a known step."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.batch.batchhelp import (
    BatchProc,
    assert_no_secret,
    card_state,
    cert_upns,
    gated_issuer_cmd,
    make_ca,
    output_texts,
    read_batch_state,
    read_jsonl,
    run_batch,
    write_roster,
)

pytestmark = pytest.mark.pcsc

ESCROW_PASS = "Esc-canary-7781"
SHARED_PIN = "73195284"
SHARED_PUK = "46820571"


def _is(kind: str, **fields: Any) -> Any:
    return lambda e: e["event"] == kind and all(e.get(k) == v for k, v in fields.items())


def _step_done(step: str, serial: int | None = None) -> Any:
    return lambda e: (e["event"] == "step" and e["step"] == step and e["status"] == "done"
                      and (serial is None or e["serial"] == serial))


def _state(work: Path) -> dict[str, Any]:
    return read_batch_state(work)


def test_parallel_three_readers(vcard_factory: Any, tmp_path: Path) -> None:
    """Three keys in three readers enrolled at the same time; a bad roster row is skipped
    with a clear error; a user pinned to a serial gets exactly that key; random PINs go to
    0600 letters and random PUKs to the escrow, and neither reaches any output."""
    from pivtool.workflows.escrow import EscrowFile

    cards = [vcard_factory(serial=81000001 + i) for i in range(3)]
    work = tmp_path / "work"
    work.mkdir()
    ca = make_ca(work)
    gate = work / "gate"
    gate.write_text("closed")
    # carol is first in the roster but pinned to the third key: the other two keys must
    # skip her and take alice and bob.
    roster = write_roster(work / "roster.csv", [
        "upn,email,display name,serial,algorithm",
        f"carol@contoso.com,,Carol,{cards[2].serial},",
        "alice@contoso.com,alice@contoso.com,\"Doe, Alice\",,",
        "bad row without at sign,,,,",
        "bob@contoso.com,,,,eccp384",
    ])
    env = {"PIVTOOL_ESCROW_PASSPHRASE": ESCROW_PASS}
    p = BatchProc([str(roster), "--issuer-cmd", gated_issuer_cmd(ca, gate),
                   "--readers", "pivtool-test", "--pin-letters", "letters",
                   "--escrow", "escrow.json", "--operator", "helpdesk-7", "--yes",
                   "--timeout", "20"], env, work)
    # All three wait at the issuer at once: the readers really work in parallel.
    p.wait_for(_step_done("certificate request"), count=3)
    gate.unlink()
    done = p.wait_for(_is("done"), count=3)
    rc = p.finish()
    assert rc == 1, p.transcript()  # the bad row makes the run "not ok"
    by_serial = {e["serial"]: e["upn"] for e in done}
    assert by_serial[cards[2].serial] == "carol@contoso.com"
    assert {by_serial[cards[0].serial], by_serial[cards[1].serial]} == {
        "alice@contoso.com", "bob@contoso.com"}
    assert {e["reader"] for e in done} == {c.reader for c in cards}
    summary = json.loads(p.lines[-1])
    assert summary["schema"] == "pivtool.batch-summary/1" and summary["reason"] == "complete"
    assert summary["counts"]["done"] == 3 and summary["counts"]["invalid"] == 1

    state = _state(work)
    assert state["invalid_rows"][0]["row"] == 4
    assert "row 4" in state["invalid_rows"][0]["error"]
    users = state["users"]
    assert [u["status"] for u in users.values()] == ["done"] * 3
    assert users["bob@contoso.com"]["options"]["algorithm"] == "eccp384"
    assert users["alice@contoso.com"]["last_step"] == "prove key"

    # Audit: every line complete, the operator recorded, a fingerprint on each enrollment.
    audit = read_jsonl(work / "roster.audit.jsonl")
    assert all(set(a) == {"time", "operator", "reader", "serial", "upn", "step", "outcome",
                          "detail", "fingerprint"} for a in audit)
    assert {a["operator"] for a in audit} == {"helpdesk-7"}
    assert any(a["step"] == "roster" and a["outcome"] == "invalid" for a in audit)
    enrolled = {a["upn"]: a["fingerprint"] for a in audit if a["step"] == "enrolled"}
    assert set(enrolled) == set(users)

    # Report (JSON + CSV) and the Graph $batch body.
    report = json.loads((work / "roster.report.json").read_text())
    assert report["schema"] == "pivtool.batch-report/1"
    for u in report["users"]:
        assert f"X509:<PN>{u['upn']}" in [i["value"] for i in u["certificate_user_ids"]]
        assert u["certificate"]["sha256"] == enrolled[u["upn"]]
    rows = list(csv.DictReader((work / "roster.report.csv").open()))
    assert {r["status"] for r in rows} == {"done", "invalid"}
    graph = json.loads((work / "roster.graph-001.json").read_text())
    assert not (work / "roster.graph-002.json").exists()
    assert [r["id"] for r in graph["requests"]] == ["1", "2", "3"]
    for r in graph["requests"]:
        assert r["method"] == "PATCH" and r["headers"] == {"Content-Type": "application/json"}
        upn = r["url"].removeprefix("/users/")
        ids = r["body"]["authorizationInfo"]["certificateUserIds"]
        assert ids[0].startswith("X509:<I>") and f"X509:<PN>{upn}" in ids

    # The cards: each holds its user's certificate, the letter's PIN, the escrowed PUK.
    letters = work / "letters"
    assert stat.S_IMODE(letters.stat().st_mode) == 0o700
    escrow = EscrowFile(work / "escrow.json", ESCROW_PASS.encode())
    secret_values = [ESCROW_PASS]
    for card in cards:
        upn = by_serial[card.serial]
        letter = letters / f"{upn}.txt"
        assert stat.S_IMODE(letter.stat().st_mode) == 0o600
        pin = next(line.split(": ")[1] for line in letter.read_text().splitlines()
                   if line.startswith("Initial PIN"))
        sim = card.load_state()
        assert sim.pin == pin.encode()
        entry = escrow.get(card.serial)
        assert entry is not None and entry.upn == upn and sim.puk == entry.puk.encode()
        secret_values += [pin, entry.puk]
        st = card_state(card, tmp_path)
        assert cert_upns(st) == [upn]
        assert st.mgmt_key_default is False and st.mgmt_key_protected
    assert_no_secret(output_texts(work, "".join(p.lines), p.stderr), secret_values)


def test_card_pulled_mid_enrollment(vcard_factory: Any, tmp_path: Path) -> None:
    """A key pulled while its certificate is being issued: the state shows the step it
    reached; the other readers carry on; re-inserting it finishes the same user."""
    cards = [vcard_factory(serial=82000001 + i) for i in range(3)]
    work = tmp_path / "work"
    work.mkdir()
    ca = make_ca(work)
    gate = work / "gate"
    gate.write_text("closed")
    roster = write_roster(work / "roster.csv", ["upn", "u1@contoso.com", "u2@contoso.com",
                                               "u3@contoso.com"])
    env = {"PIVTOOL_NEW_PIN": SHARED_PIN, "PIVTOOL_NEW_PUK": SHARED_PUK}
    p = BatchProc([str(roster), "--issuer-cmd", gated_issuer_cmd(ca, gate), "--readers",
                   "pivtool-test", "--yes", "--timeout", "20"], env, work)
    p.wait_for(_step_done("certificate request"), count=3)
    victim = cards[1]
    victim.kill()  # SIGKILL the serve process: the key is pulled
    gate.unlink()
    failed = p.wait_for(_is("failed", serial=victim.serial))[0]
    assert failed["step"] == "import certificate" and failed["user_status"] == "incomplete"
    p.wait_for(_is("done"), count=2)
    upn = failed["upn"]
    user = _state(work)["users"][upn]
    assert user["status"] == "incomplete" and user["serial"] == victim.serial
    assert user["last_step"] == "check certificate"
    assert [a["step"] for a in read_jsonl(work / "roster.audit.jsonl")
            if a["upn"] == upn and a["outcome"] == "failed"] == ["import certificate"]

    mark = len(p.events)
    victim.start()  # re-insert the same key (same state file)
    resumed = p.wait_for(_is("enrolling", serial=victim.serial), since=mark)[0]
    assert resumed["resume"] is True and resumed["upn"] == upn
    p.wait_for(_is("done", serial=victim.serial), since=mark)
    assert p.finish() == 0, p.transcript()
    user = _state(work)["users"][upn]
    assert user["status"] == "done" and user["attempts"] == 2
    assert user["history"][0]["last_step"] == "check certificate"
    # Every user on exactly one key, every key with exactly its user.
    assert sorted(cert_upns(card_state(c, tmp_path))[0] for c in cards) == [
        "u1@contoso.com", "u2@contoso.com", "u3@contoso.com"]
    assert victim.load_state().pin == SHARED_PIN.encode()
    assert_no_secret(output_texts(work, "".join(p.lines), p.stderr), [SHARED_PIN, SHARED_PUK])


def test_batch_killed_then_resumed(vcard_factory: Any, tmp_path: Path) -> None:
    """SIGKILL the batch while two keys are half-enrolled (PIN, PUK, management key and the
    9a key done); the re-run finishes both for the same users and enrolls nobody twice."""
    cards = [vcard_factory(serial=83000001 + i) for i in range(2)]
    work = tmp_path / "work"
    work.mkdir()
    ca = make_ca(work)
    gate = work / "gate"
    gate.write_text("closed")
    roster = write_roster(work / "roster.csv", ["upn", "k1@contoso.com", "k2@contoso.com",
                                               "k3@contoso.com"])
    env = {"PIVTOOL_ESCROW_PASSPHRASE": ESCROW_PASS}
    args = [str(roster), "--readers", "pivtool-test", "--pin-letters", "letters",
            "--escrow", "escrow.json", "--yes", "--timeout", "3"]
    p = BatchProc([*args, "--issuer-cmd", gated_issuer_cmd(ca, gate)], env, work)
    p.wait_for(_step_done("certificate request"), count=2)
    p.kill()
    state = _state(work)
    half = {u["upn"]: u for u in state["users"].values() if u["status"] == "enrolling"}
    assert len(half) == 2
    assert {u["last_step"] for u in half.values()} == {"certificate request"}
    assert {u["serial"] for u in half.values()} == {c.serial for c in cards}
    pins_before = {upn: (work / "letters" / f"{upn}.txt").read_text() for upn in half}

    gate.unlink()
    rc, p2 = run_batch([*args, "--ca", str(ca)], env, work)
    assert rc == 1, p2.transcript()  # k3 has no key: still pending when the timeout hits
    resumed = [e for e in p2.events if e["event"] == "enrolling"]
    assert {(e["upn"], e["serial"], e["resume"]) for e in resumed} == {
        (u["upn"], u["serial"], True) for u in half.values()}
    state = _state(work)
    for upn, u in half.items():
        assert state["users"][upn]["status"] == "done"
        assert state["users"][upn]["serial"] == u["serial"]
        # The PIN set before the kill is still the user's PIN (read back from the letter).
        assert (work / "letters" / f"{upn}.txt").read_text() == pins_before[upn]
    assert state["users"]["k3@contoso.com"]["status"] == "pending"
    for card in cards:
        upns = cert_upns(card_state(card, tmp_path))
        assert len(upns) == 1 and half[upns[0]]["serial"] == card.serial
        # The half-made 9a key was replaced under --force: its old certificate (none yet)
        # and key are gone, the new certificate matches the key.
        assert card_state(card, tmp_path).slot(_slot9a()).cert_matches_key()
    summary = json.loads(p2.lines[-1])
    assert summary["reason"] == "timeout" and summary["counts"]["pending"] == 1


def _slot9a() -> Any:
    from pivtool.piv.constants import Slot

    return Slot.AUTHENTICATION


def test_refusals_lock_and_reassign(vcard_factory: Any, tmp_path: Path) -> None:
    """A key enrolled outside the batch (9a certificate for another UPN) is refused; a
    second batch on the same state file is refused (exit 2); a key done in this batch is
    never given to another user; --reassign wipes the foreign key and enrolls it."""
    from pivtool.certs.ca import LabCA

    work = tmp_path / "work"
    work.mkdir()
    ca = make_ca(work)
    # Enroll card 2 for mallory in-process (as a previous owner would have), then serve it.
    foreign = vcard_factory(serial=84000002, start=False)
    _enroll_sim(foreign.state_path, "mallory@contoso.com", ca)
    fresh = vcard_factory(serial=84000001)
    foreign.start()
    roster = write_roster(work / "roster.csv", ["upn", "alice@contoso.com",
                                               "bob@contoso.com"])
    env = {"PIVTOOL_NEW_PIN": SHARED_PIN, "PIVTOOL_NEW_PUK": SHARED_PUK}
    args = [str(roster), "--ca", str(ca), "--readers", "pivtool-test", "--yes"]
    p = BatchProc([*args, "--timeout", "2"], env, work)
    refused = p.wait_for(_is("refused", serial=foreign.serial))[0]
    assert refused["outcome"] == "foreign" and "mallory@contoso.com" in refused["reason"]
    p.wait_for(_is("done", serial=fresh.serial, upn="alice@contoso.com"))
    rc2, p2 = run_batch([*args, "--timeout", "1"], env, work)
    assert rc2 == 2 and "another batch is running" in p2.stderr
    assert p.finish() == 1, p.transcript()  # bob still pending at the timeout

    rc, p3 = run_batch([*args, "--reassign", "--timeout", "5"], env, work)
    assert rc == 0, p3.transcript()
    ev = {(e["event"], e.get("serial")): e for e in p3.events}
    assert ev[("refused", fresh.serial)]["outcome"] == "already-enrolled"
    assert ev[("wiped", foreign.serial)]["upn"] == "bob@contoso.com"
    assert ev[("done", foreign.serial)]["upn"] == "bob@contoso.com"
    assert cert_upns(card_state(foreign, tmp_path)) == ["bob@contoso.com"]
    assert cert_upns(card_state(fresh, tmp_path)) == ["alice@contoso.com"]
    backups = list((work / "roster.backups").rglob("slot-9a.pem"))
    assert len(backups) == 1 and LabCA  # mallory's certificate was saved before the wipe
    audit = read_jsonl(work / "roster.audit.jsonl")
    assert [a["upn"] for a in audit if a["step"] == "wipe"] == ["bob@contoso.com"]
    assert_no_secret(output_texts(work, "".join(p.lines + p3.lines), p.stderr, p3.stderr),
                     [SHARED_PIN, SHARED_PUK])
    assert not (work / "roster.state.json").exists()  # the state is the database beside it
    assert os.stat(work / "roster.state.db").st_mode & 0o077 == 0


def _enroll_sim(state_path: Path, upn: str, ca: Path) -> None:
    from pivtool.connect import open_sim_link
    from pivtool.piv.session import PivSession
    from pivtool.workflows.auth import StaticPrompter
    from pivtool.workflows.enroll import Enroller
    from pivtool.workflows.enroll_options import EnrollOptions
    from pivtool.workflows.issuers import LabCAIssuer

    link = open_sim_link(state_path)
    try:
        Enroller(PivSession(link), StaticPrompter({"new_pin": b"99887766",
                                                   "new_puk": b"55443322"}),
                 EnrollOptions(upn=upn), LabCAIssuer(str(ca))).run()
    finally:
        link.close()


def test_ctrl_c_finishes_the_key_in_progress(vcard_factory: Any, tmp_path: Path) -> None:
    """Ctrl-C stops taking keys but lets the enrollment in progress finish; exit 130 with
    the state saved."""
    import signal

    card = vcard_factory(serial=85000001)
    work = tmp_path / "work"
    work.mkdir()
    ca = make_ca(work)
    gate = work / "gate"
    gate.write_text("closed")
    roster = write_roster(work / "roster.csv", ["upn", "a@contoso.com", "b@contoso.com"])
    env = {"PIVTOOL_NEW_PIN": SHARED_PIN, "PIVTOOL_NEW_PUK": SHARED_PUK}
    p = BatchProc([str(roster), "--issuer-cmd", gated_issuer_cmd(ca, gate), "--readers",
                   "pivtool-test", "--yes"], env, work)
    p.wait_for(_step_done("certificate request", card.serial))
    p.proc.send_signal(signal.SIGINT)
    gate.unlink()
    assert p.finish() == 130, p.transcript()
    assert [e["event"] for e in p.events][-3:] == ["remove-card", "stopped", "summary"]
    users = _state(work)["users"]
    assert users["a@contoso.com"]["status"] == "done"
    assert users["b@contoso.com"]["status"] == "pending"
    assert cert_upns(card_state(card, tmp_path)) == ["a@contoso.com"]
