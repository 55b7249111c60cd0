"""Review (safety standards): the retry guard's advice names the option that exists."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.clihelp import make_card, run


def test_last_pin_try_fix_names_allow_last_try(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    for _ in range(2):  # 3 -> 1 tries left
        r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "99999999"})
        assert r.exit_code == 3, r.output
    r = run(card, "pin", "verify", env={"PIVTOOL_PIN": "123456"})
    assert r.exit_code == 4 and "--allow-last-try" in r.stderr
    r = run(card, "--json", "check")
    items = {i["id"]: i for i in json.loads(r.stdout)["items"]}
    fix = items["pin.tries"]["fix"]
    assert "--allow-last-try" in fix and "--force" not in fix
    # ... and the advice works: the right PIN with the option resets the counter.
    r = run(card, "pin", "verify", "--allow-last-try", env={"PIVTOOL_PIN": "123456"})
    assert r.exit_code == 0, r.output
