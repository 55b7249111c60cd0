#!/usr/bin/env python3
"""Write docs/cli-reference.md from the click commands (``--check``: exit 1 if stale).

    .venv/bin/python tools/gen_cli_reference.py          # regenerate
    .venv/bin/python tools/gen_cli_reference.py --check  # what tests/test_docs.py checks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pivtool.cli.docgen import render  # noqa: E402

TARGET = ROOT / "docs" / "cli-reference.md"


def main() -> int:
    """Regenerate (or with --check compare) the CLI reference."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    ap.add_argument("-o", "--output", type=Path, default=TARGET)
    args = ap.parse_args()
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run tools/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
