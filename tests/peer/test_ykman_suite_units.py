"""The peer-suite judge without pcscd: node ids from JUnit, known_upstream.txt rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peer.ykman_suite import (
    LIBRARY,
    Case,
    Profile,
    SuiteRun,
    judge,
    load_known,
    parse_junit,
    render_matrix,
)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.device.test_piv.TestPinComplexity" name="test_repeated_pins[111111]">
<skipped type="pytest.skip" message="Requires YubiKey with PIN complexity enabled"/></testcase>
<testcase classname="tests.device.cli.piv.test_misc.TestMisc" name="test_info"/>
<testcase classname="tests.device.test_piv" name="test_module_level">
<failure message="boom"/></testcase>
</testsuite></testsuites>"""


def test_parse_junit_node_ids(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    cases = parse_junit(path)
    assert [(c.nodeid, c.outcome) for c in cases] == [
        ("tests/device/test_piv.py::TestPinComplexity::test_repeated_pins[111111]", "skipped"),
        ("tests/device/cli/piv/test_misc.py::TestMisc::test_info", "passed"),
        ("tests/device/test_piv.py::test_module_level", "failed"),
    ]
    assert cases[0].message == "Requires YubiKey with PIN complexity enabled"


def _known(tmp_path: Path, text: str) -> list:  # type: ignore[type-arg]
    path = tmp_path / "known.txt"
    path.write_text(text)
    return load_known(path)


def test_judge_explained_unexplained_and_stale(tmp_path: Path) -> None:
    known = _known(tmp_path, """
# comment
skip 5.7.1 tests/device/test_piv.py::TestBioMpe::* -- YubiKey Bio only
fail * tests/device/test_piv.py::TestX::test_bug -- upstream bug
skip 5.7.1 tests/device/test_piv.py::TestGone::* -- matches nothing any more
""")
    run = SuiteRun("5.7.1", "5.9.2", [
        Case("tests/device/test_piv.py::TestBioMpe::test_a", "skipped", "Requires Bio"),
        Case("tests/device/test_piv.py::TestX::test_bug", "passed"),
        Case("tests/device/test_piv.py::TestY::test_z", "skipped", "why?"),
        Case("tests/device/test_piv.py::TestY::test_f", "failed", "assert"),
    ], 1.0, 1)
    problems = judge(run, known, Profile("5.7.1", (5, 7, 1), paths=(LIBRARY,)))
    assert any("TestX::test_bug passed but is listed" in p for p in problems)
    assert any("TestY::test_z skipped: why?" in p for p in problems)
    assert any("TestY::test_f failed" in p for p in problems)
    assert any("TestGone" in p and "matched nothing" in p for p in problems)
    assert not any("TestBioMpe" in p for p in problems)
    assert len(problems) == 4


def test_known_file_format_is_strict(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"known\.txt:1"):
        _known(tmp_path, "skip tests/device/test_piv.py::TestBioMpe::* no reason\n")


def test_the_shipped_known_file_parses_and_gives_reasons() -> None:
    known = load_known()
    assert known and all(k.reason for k in known)


def test_matrix_rendering() -> None:
    block = render_matrix([{"profile": "5.7.1", "version": "5.9.2", "rows": [
        {"suite": LIBRARY, "passed": 3, "failed": 0, "skipped": 1,
         "reasons": [["YubiKey Bio only", 1]]}]}])
    assert "| ykman library (yubikit.piv) | 5.9.2 | 5.7.1 | 3 | 0 | 1 | 1× YubiKey Bio only |" \
        in block
