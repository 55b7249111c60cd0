"""Fault-injection, fuzz and bad-input tests: a per-session directory for the rows the
doc generators read (tools/gen_bad_input.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.faulthelp import ROWS_ENV


@pytest.fixture(scope="session", autouse=True)
def rows_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tests append (input, message, exit code) rows here; the staleness tests render
    them. Session-scoped so every module's rows end up in one place."""
    old = os.environ.get(ROWS_ENV)
    # tools/gen_bad_input.py sets the directory itself, to read the rows afterwards.
    where = old or str(tmp_path_factory.mktemp("rows"))
    os.environ[ROWS_ENV] = where
    yield where
    if old is None:
        os.environ.pop(ROWS_ENV, None)
    else:
        os.environ[ROWS_ENV] = old
