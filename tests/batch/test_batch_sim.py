"""``pivtool batch enroll --sim-pile``: the batch on a pile of virtual YubiKeys, in process
(no pcscd). The same runner, state, audit and reports as with PC/SC readers; only the card
source differs."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pivtool.cli.main import cli
from pivtool.sim.state import load_state, new_card_state, save_state
from tests.batch.batchhelp import cert_upns, make_ca, read_jsonl, write_roster

ESCROW_PASS = "Esc-pile-4411"
USERS = [f"user{i}@contoso.com" for i in range(1, 6)]


def make_pile(directory: Path, n: int, first_serial: int = 82000001) -> list[Path]:
    directory.mkdir()
    cards = []
    for i in range(n):
        path = directory / f"key-{i + 1:02d}.json"
        save_state(new_card_state(serial=first_serial + i), path)
        cards.append(path)
    return cards


def invoke(work: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[Any], str]:
    """Run pivtool in process from *work*; return the exit code, the JSON lines, stderr."""
    import os

    old = os.getcwd()
    os.chdir(work)
    try:
        r = CliRunner().invoke(cli, list(args), env={"PIVTOOL_ESCROW_PASSPHRASE": ESCROW_PASS,
                                                     **(env or {})},
                               catch_exceptions=False)
    finally:
        os.chdir(old)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.exit_code, events, r.stderr


def read_state(card: Path, tmp: Path) -> Any:
    """pivtool's view of the virtual key, read from a copy (never written back)."""
    import shutil

    from pivtool.connect import open_sim_link
    from pivtool.piv.session import PivSession
    from pivtool.workflows.state import read_card_state

    copy = tmp / f"copy-{card.name}"
    shutil.copyfile(card, copy)
    link = open_sim_link(copy)
    try:
        return read_card_state(PivSession(link))
    finally:
        link.close()


def batch_args(*extra: str) -> list[str]:
    return ["batch", "enroll", "roster.csv", "--json", "--sim-pile", "pile", "--ca", "ca",
            "--pin-letters", "letters", "--escrow", "escrow.json", "--yes", *extra]


def setup_desk(tmp_path: Path, cards: int = 5) -> tuple[Path, list[Path]]:
    work = tmp_path / "work"
    work.mkdir()
    make_ca(work)
    write_roster(work / "roster.csv", ["upn,display name", *(f"{u},User {u[4]}" for u in USERS)])
    return work, make_pile(work / "pile", cards)


def test_five_users_on_five_keys_over_two_readers_then_nobody_twice(tmp_path: Path) -> None:
    from pivtool.workflows.escrow import EscrowFile

    work, cards = setup_desk(tmp_path)
    rc, events, err = invoke(work, *batch_args())
    assert rc == 0, err
    done = [e for e in events if e["event"] == "done"]
    assert sorted(e["upn"] for e in done) == USERS
    assert {e["reader"] for e in done} == {"pivtool virtual reader 1",
                                           "pivtool virtual reader 2"}
    # Keys go in as a person inserts them: a reader holds one key at a time, and every key
    # is removed before the reader takes the next from the pile.
    per_reader: dict[str, list[str]] = {}
    for e in events:
        if e["event"] in ("inserted", "removed"):
            per_reader.setdefault(e["reader"], []).append(e["event"])
    for seq in per_reader.values():
        # (the run may end before the last removal is reported)
        assert seq == ["inserted", "removed"] * (len(seq) // 2) + ["inserted"] * (len(seq) % 2)
    assert events[-1]["reason"] == "complete" and events[-1]["counts"]["done"] == 5

    escrow = EscrowFile(work / "escrow.json", ESCROW_PASS.encode())
    by_serial = {e["serial"]: e["upn"] for e in done}
    for path in cards:
        st = load_state(path)
        upn = by_serial[st.serial]
        letter = (work / "letters" / f"{upn}.txt").read_text()
        assert f"Initial PIN: {st.pin.decode()}" in letter
        entry = escrow.get(st.serial)
        assert entry is not None and entry.puk.encode() == st.puk
        assert cert_upns(read_state(path, tmp_path)) == [upn]
    audit = read_jsonl(work / "roster.audit.jsonl")
    assert sum(a["step"] == "enrolled" for a in audit) == 5

    # The same command again: everybody is done, no key is touched.
    before = {p: p.read_bytes() for p in cards}
    rc, events, err = invoke(work, *batch_args())
    assert rc == 0, err
    assert not [e for e in events if e["event"] in ("enrolling", "done")]
    assert {p: p.read_bytes() for p in cards} == before
    # A new state file on the same keys: each key is refused, nobody enrolled twice.
    rc, events, err = invoke(work, *batch_args("--state", "other.state.json"))
    assert rc == 1, err
    refused = [e for e in events if e["event"] == "refused"]
    assert len(refused) == 5 and {e["outcome"] for e in refused} == {"foreign"}
    assert events[-1]["reason"] == "pile-empty"
    assert {p: p.read_bytes() for p in cards} == before


def test_stop_mid_pile_then_resume(tmp_path: Path) -> None:
    """Ctrl-C (request_stop) after the first key: keys in progress finish, the rest are
    untouched; the same command again enrolls exactly the users left."""
    from pivtool.connect import SimPileSource
    from pivtool.workflows.batch import (
        BatchOptions,
        BatchPaths,
        BatchRunner,
        BatchState,
        SecretPolicy,
    )
    from pivtool.workflows.issuers import LabCAIssuer
    from pivtool.workflows.roster import RosterDefaults, load_roster

    work, _ = setup_desk(tmp_path)
    paths = BatchPaths.derive(work / "roster.state.json")

    def one_run(stop_after: int | None) -> tuple[Any, list[Any]]:
        state = BatchState.load(paths.state)
        state.merge_roster("roster.csv", load_roster(work / "roster.csv", RosterDefaults()))
        options = BatchOptions(issuer=LabCAIssuer(str(work / "ca")),
                               secrets=SecretPolicy(new_pin=b"73195284", new_puk=b"46820571"))
        seen: list[Any] = []
        runner: BatchRunner

        def on_event(e: Any) -> None:
            seen.append(e)
            if stop_after and sum(x.kind == "done" for x in seen) == stop_after:
                threading.Thread(target=runner.request_stop).start()

        runner = BatchRunner(state, paths, options, SimPileSource(work / "pile", 2), on_event)
        return runner.run(), seen

    summary, seen = one_run(stop_after=1)
    assert summary.reason == "interrupted"
    first = {e.upn for e in seen if e.kind == "done"}
    assert 1 <= len(first) <= 2  # the other reader's key in progress finishes too
    assert not [e for e in seen if e.kind == "failed"]
    summary, seen = one_run(stop_after=None)
    assert summary.reason == "complete" and summary.counts["done"] == 5
    second = {e.upn for e in seen if e.kind == "done"}
    assert first.isdisjoint(second) and first | second == set(USERS)


def test_global_sim_is_never_ignored(tmp_path: Path) -> None:
    work, cards = setup_desk(tmp_path, cards=1)
    rc, _, err = invoke(work, "--sim", str(cards[0]), *batch_args())
    assert rc == 2 and "--sim-pile" in err
    rc, _, err = invoke(work, "--sim", str(cards[0]), "batch", "status", "--state", "x")
    assert rc == 2 and "drop --sim" in err
    rc, _, err = invoke(work, "--sim", str(cards[0]), "ca", "show", "ca")
    assert rc == 2 and "drop --sim" in err
    rc, _, err = invoke(work, "batch", "enroll", "roster.csv", "--ca", "ca", "--sim-readers",
                        "3", "--yes")
    assert rc == 2 and "--sim-pile" in err
    rc, _, err = invoke(work, *batch_args()[:5], "empty", *batch_args()[6:])
    assert rc == 2 and "empty" in err


def test_answer_lost_on_every_key_then_the_same_command_finishes(tmp_path: Path) -> None:
    """In process, the fault hook on every key of the pile: each key executes its N-th
    command and the answer is lost. The same command again finishes every user on their
    own key: no second key, no second certificate, no PIN or PUK try spent."""
    from pivtool.certs.ca import LabCA

    work, cards = setup_desk(tmp_path, cards=3)
    write_roster(work / "roster.csv", ["upn", *USERS[:3]])
    # A batch key answers ~99 commands (its state is read, then enrolled): N spread over
    # PIN/PUK, the management key, key generation and the certificate import.
    for n, sub in zip((74, 80, 90, 94), ("a", "b", "c", "d"), strict=True):
        desk = tmp_path / sub
        desk.mkdir()
        import shutil

        shutil.copytree(work, desk / "work")
        w = desk / "work"
        rc, events, err = invoke(w, *batch_args(), env={"PIVTOOL_SIM_FAULTS":
                                                        f"{n}:answer-lost"})
        assert rc == 1, err
        assert events[-1]["counts"]["done"] == 0, (n, events[-1])
        assert len([e for e in events if e["event"] == "failed"]) == 3, n
        rc, events, err = invoke(w, *batch_args())
        assert rc == 0, (n, err)
        assert events[-1]["counts"]["done"] == 3
        assert len(LabCA.open(w / "ca").issued()) == 3, n  # one certificate per user
        for path in sorted((w / "pile").glob("*.json")):
            st = load_state(path)
            assert st.pin_retries_left == 3 and st.puk_retries_left == 3, (n, path)
            assert [s for s in st.keys if s != 0xF9] == [0x9A], n  # no stray second key
    assert cards
