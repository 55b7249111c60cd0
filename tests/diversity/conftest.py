"""Card-diversity tests: the rows directory the doc generator reads (shared with the faults
suite, tools/gen_bad_input.py) and the pcscd fixtures (see tests/pcsc_stack.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from pcsc_stack import pcsc_stack, vcard_factory  # noqa: E402

from tests.faults.conftest import rows_dir  # noqa: E402

__all__ = ["pcsc_stack", "rows_dir", "vcard_factory"]
