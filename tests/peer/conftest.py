"""Fixtures for the peer suites: the pcscd stack of tests/pcsc_stack.py."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ is not a package; make the shared stack module importable under one name only
# ("pcsc_stack"), so all PC/SC test directories share a single pcscd.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from pcsc_stack import pcsc_stack, vcard_factory  # noqa: E402

__all__ = ["pcsc_stack", "vcard_factory"]
