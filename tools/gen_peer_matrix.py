"""Regenerate the peer-suite matrix in docs/virtual-yubikey.md from a run of the tier.

    .venv/bin/python tools/gen_peer_matrix.py            # runs tests/peer, then writes
    .venv/bin/python tools/gen_peer_matrix.py --from DIR # writes from the results in DIR

The tier (tests/peer/test_ykman_device_suite.py) runs yubikey-manager's PIV device tests
against the virtual YubiKey for every profile and fails when its counts differ from the
table; with PIVTOOL_PEER_RESULTS set it records them instead (one JSON file per profile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peer.ykman_suite import (  # noqa: E402
    DOC,
    MATRIX_BEGIN,
    MATRIX_END,
    RESULTS_ENV,
    render_matrix,
)


def write(results_dir: Path) -> int:
    results = [json.loads(p.read_text(encoding="utf-8"))
               for p in sorted(results_dir.glob("*.json"))]
    if not results:
        print(f"no results in {results_dir}", file=sys.stderr)
        return 1
    text = DOC.read_text(encoding="utf-8")
    block = render_matrix(results)
    if MATRIX_BEGIN not in text:
        print(f"{DOC}: no {MATRIX_BEGIN!r} marker", file=sys.stderr)
        return 1
    start = text.index(MATRIX_BEGIN)
    end = text.index(MATRIX_END) + len(MATRIX_END)
    DOC.write_text(text[:start] + block + text[end:], encoding="utf-8")
    print(f"wrote {len(results)} profile(s) to {DOC.relative_to(ROOT)}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--from":
        return write(Path(argv[1]))
    with tempfile.TemporaryDirectory(prefix="pivtool-peer-") as rows:
        env = {**os.environ, RESULTS_ENV: rows}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/peer"],
            cwd=ROOT, env=env, check=False)
        if proc.returncode != 0:
            print("the peer suites failed; docs not regenerated", file=sys.stderr)
            return 1
        return write(Path(rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
