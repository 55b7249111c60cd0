"""The virtual card's state file under parallel processes (issue 16: six parallel wrong-PIN
runs got four "wrong PIN" answers from a 3-try counter). Every command runs under a lock on
the state and continues from the file's current state."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pivtool.sim.state import load_state
from tests.certs.test_ca_concurrency import run_forked
from tests.cli.clihelp import make_card


def test_parallel_wrong_pins_cannot_exceed_the_counter(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    argvs = [["--sim", str(card), "--json", "pin", "verify", "--allow-last-try"]
             for _ in range(6)]
    os.environ["PIVTOOL_PIN"] = "87654321"
    try:
        codes = run_forked(argvs, tmp_path / "err")
    finally:
        del os.environ["PIVTOOL_PIN"]
    # Three tries: at most three wrong-PIN answers (exit 3), the rest find the PIN blocked
    # (exit 4). Without the lock every run spent a try of its own copy: six exit 3.
    assert codes.count(3) <= 3 and set(codes) <= {3, 4}, codes
    assert load_state(card).pin_retries_left == 0
    assert [p.name for p in tmp_path.iterdir() if p.name != "err"] == [card.name]
    json.loads(card.read_text())  # never a torn file
