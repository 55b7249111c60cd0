"""Every pivtool command on every kind of card (``pivtool.sim.profiles``), in process: each
ends in success or in one clean refusal with a documented exit code, as tests/diversity/
cases.py expects. The rows feed docs/card-diversity.md (tools/gen_bad_input.py); the last
test fails when that file is stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.diversity.cases import (
    CARDLESS,
    CASES,
    PROFILE_NAMES,
    Case,
    argv,
    case_dir,
    error_line,
    expect,
    judge,
    leaf_commands,
    prepare,
    run_in,
)
from tests.diversity.diversitydoc import DOC, render
from tests.faults.faulthelp import read_rows, record


def _params() -> list[Any]:
    out = []
    for case in CASES:
        for profile in PROFILE_NAMES:
            exp = expect(case.label, profile)
            marks = [pytest.mark.xfail(strict=True, reason=exp.xfail)] if exp.xfail else []
            out.append(pytest.param(case, profile, id=f"{profile}:{case.label}", marks=marks))
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Per profile, a directory with the prepared cards and input files (made on demand)."""
    base = tmp_path_factory.mktemp("diversity")

    class Lazy(dict[str, Path]):
        def __missing__(self, profile: str) -> Path:
            d = base / profile / "prepared"
            prepare(d, profile)
            self[profile] = d
            return d

    yield Lazy()


def run_case(base: Path, prepared: Path, case: Case, profile: str) -> dict[str, Any]:
    """Run *case* on a scratch copy of the prepared cards; the row for the docs."""
    r = run_in(case_dir(base, prepared, case, profile), *argv(case, profile), env=case.env)
    return {"profile": profile, "command": case.label, "exit": r.exit_code,
            "error": error_line(r), "problems": judge(r, case, profile),
            "xfail": expect(case.label, profile).xfail, "output": r.output[-2000:]}


def test_every_command_has_a_case() -> None:
    """The command table, walked to every leaf: each leaf has a case or says why no card
    is involved (a new command cannot be forgotten)."""
    leaves = leaf_commands()
    covered = {c.command for c in CASES}
    assert not [leaf for leaf in leaves if leaf not in covered and leaf not in CARDLESS]
    assert not [c for c in [*covered, *CARDLESS] if c not in leaves], "stale entries"
    assert not covered & set(CARDLESS)


@pytest.mark.parametrize(("case", "profile"), _params())
def test_command_on_profile(case: Case, profile: str, prepared: dict[str, Path],
                            tmp_path: Path) -> None:
    row = run_case(tmp_path, prepared[profile], case, profile)
    record("diversity", row)
    assert not row["problems"], f"{row['problems']}\n{row['output']}"


def test_card_diversity_doc_is_current(prepared: dict[str, Path], tmp_path: Path) -> None:
    """docs/card-diversity.md is what the cases produce now (regenerate with
    ``.venv/bin/python tools/gen_bad_input.py``)."""
    rows = {(r["command"], r["profile"]): r for r in read_rows("diversity")}
    for case in CASES:  # when run alone, run the cases here
        for profile in PROFILE_NAMES:
            if (case.label, profile) not in rows:
                rows[case.label, profile] = run_case(tmp_path, prepared[profile], case, profile)
    expected = render(list(rows.values()))
    assert DOC.exists() and DOC.read_text(encoding="utf-8") == expected, \
        "docs/card-diversity.md is stale: run .venv/bin/python tools/gen_bad_input.py"
