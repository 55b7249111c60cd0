"""Fixtures for the interop tests: the pcscd stack (tests/pcsc_stack.py) plus tool helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is not a package; make the shared stack module importable under one name only
# ("pcsc_stack"), so both test directories share a single pcscd.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from pcsc_stack import pcsc_stack, vcard_factory, virtual_yubikey  # noqa: E402

__all__ = ["opensc_conf", "pcsc_stack", "vcard_factory", "virtual_yubikey"]

# OpenSC's PKCS#11 module gives each reader slots_per_card (4) virtual slots and stops at
# max_virtual_slots (16): with our six readers the last two would be invisible.
_OPENSC_CONF = """\
app default {
	framework pkcs15 {
	}
}
app opensc-pkcs11 {
	pkcs11 {
		max_virtual_slots = 64;
	}
}
"""


@pytest.fixture(scope="session")
def opensc_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An opensc.conf that lets OpenSC's PKCS#11 module see every test reader."""
    path = tmp_path_factory.mktemp("opensc") / "opensc.conf"
    path.write_text(_OPENSC_CONF)
    yield path
