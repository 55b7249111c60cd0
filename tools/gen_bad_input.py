"""Regenerate docs/bad-input.md and docs/fault-tolerance.md from the tests that produce
their rows (tests/faults/test_faults_badinput.py, tests/faults/test_faults_cardpull.py).

    .venv/bin/python tools/gen_bad_input.py

Runs those tests with a rows directory, then renders the tables from what they recorded;
the tests themselves fail when a checked-in file differs from what they would render.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.badinputs import render as render_bad_input  # noqa: E402
from tests.faults.faultdoc import render as render_fault_tolerance  # noqa: E402
from tests.faults.faulthelp import ROWS_ENV, read_rows  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pivtool-rows-") as rows:
        env = {**os.environ, ROWS_ENV: rows}
        # Deselect the staleness checks: they would fail on the very files we regenerate.
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/faults/test_faults_badinput.py", "tests/faults/test_faults_cardpull.py",
             "-k", "not doc_is_current"], cwd=ROOT, env=env, check=False)
        if proc.returncode != 0:
            print("the tests failed; docs not regenerated", file=sys.stderr)
            return 1
        os.environ[ROWS_ENV] = rows
        bad = read_rows("badinput")
        pulls = read_rows("cardpull")
    (ROOT / "docs" / "bad-input.md").write_text(render_bad_input(bad), encoding="utf-8")
    (ROOT / "docs" / "fault-tolerance.md").write_text(render_fault_tolerance(pulls),
                                                       encoding="utf-8")
    print(f"docs/bad-input.md: {len(bad)} rows; docs/fault-tolerance.md: {len(pulls)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
