"""Hostile input through the CLI: exit 2 with one line, the card unchanged. The rows feed
docs/bad-input.md (tools/gen_bad_input.py); the last test fails when that file is stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.badinputs import CASES, Case, prepare, render, run_case
from tests.faults.faulthelp import read_rows, record

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("badinput")
    prepare(d)
    return d


@pytest.fixture
def in_work(work: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(work)
    yield work


@pytest.mark.parametrize("case", CASES, ids=[c.input for c in CASES])
def test_bad_input(case: Case, in_work: Path) -> None:
    record("badinput", run_case(in_work, case))


def test_bad_input_doc_is_current(in_work: Path) -> None:
    """docs/bad-input.md is what the cases produce now (regenerate with
    ``.venv/bin/python tools/gen_bad_input.py``)."""
    rows = {r["input"]: r for r in read_rows("badinput")}
    for case in CASES:  # when run alone, try the cases here
        if case.input not in rows:
            rows[case.input] = run_case(in_work, case)
    expected = render(list(rows.values()))
    assert DOC.exists() and DOC.read_text(encoding="utf-8") == expected, \
        "docs/bad-input.md is stale: run .venv/bin/python tools/gen_bad_input.py"
