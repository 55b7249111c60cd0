"""Regenerate docs/bad-input.md, docs/fault-tolerance.md and docs/card-diversity.md from the
tests that produce their rows (tests/faults/test_faults_badinput.py,
tests/faults/test_faults_cardpull.py, tests/diversity/test_diversity.py).

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

from tests.diversity.diversitydoc import render as render_diversity  # noqa: E402
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
             "tests/diversity/test_diversity.py",
             "-k", "not doc_is_current"], cwd=ROOT, env=env, check=False)
        # Exit 1 with failures only in xfail-marked cells is impossible (strict xfail
        # fails the run on XPASS): any failure means stale expectations, so stop.
        if proc.returncode != 0:
            print("the tests failed; docs not regenerated", file=sys.stderr)
            return 1
        os.environ[ROWS_ENV] = rows
        bad = read_rows("badinput")
        pulls = read_rows("cardpull")
        diversity = read_rows("diversity")
    (ROOT / "docs" / "bad-input.md").write_text(render_bad_input(bad), encoding="utf-8")
    (ROOT / "docs" / "fault-tolerance.md").write_text(render_fault_tolerance(pulls),
                                                       encoding="utf-8")
    (ROOT / "docs" / "card-diversity.md").write_text(render_diversity(diversity),
                                                      encoding="utf-8")
    print(f"docs/bad-input.md: {len(bad)} rows; docs/fault-tolerance.md: {len(pulls)} runs; "
          f"docs/card-diversity.md: {len(diversity)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
