"""Property test: the card's answers to every YubiKey extension (GET VERSION, GET SERIAL,
GET METADATA, ATTEST, the PIVMAN objects 5FFF00/5FC109) are mutated at random — other
status words, TLVs dropped, duplicated or added with unknown tags, values truncated or
garbled — by a wrapper around the emulator's connection (test code; the product and the
emulator are untouched). Then:

* every read-only command ends in exit 0 or one clean refusal with a documented exit code
  (no traceback, no bare SW, no ``None``);
* no write command changes anything on the card when it fails: the card's state after a
  failed write is the state before it.

``derandomize=True`` and a small ``max_examples`` keep it deterministic and a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import pivtool.connect as connect
from pivtool.connect import SimLink
from pivtool.sim.state import load_state, state_to_json
from pivtool.sim.tlv import TlvError, parse, tlv
from tests.cli.clihelp import run
from tests.diversity.cases import ADMIN, NEW_PIN, PIN, prepare, problems

#: Extension INS whose answers are mutated (GET DATA only for the PIVMAN objects).
INS_NAMES = {0xFD: "GET VERSION", 0xF8: "GET SERIAL", 0xF7: "GET METADATA", 0xF9: "ATTEST"}
PIVMAN_OBJECTS = (bytes.fromhex("5C035FFF00"), bytes.fromhex("5C035FC109"))
SWS = (0x9000, 0x6D00, 0x6A80, 0x6A82, 0x6A86, 0x6A88, 0x6982, 0x6985, 0x6F00, 0x0002,
       0x6300, 0x6B00, 0x6E00, 0x63C1)
KINDS = ("keep", "sw", "drop-tlv", "extra-tlv", "unknown-tag", "duplicate", "truncate",
         "garble", "empty")

#: One change to one answer: kind, status word, position, tag, value (what each kind uses).
Mutation = tuple[str, int, int, int, bytes]
MUTATION: st.SearchStrategy[Mutation] = st.tuples(
    st.sampled_from(KINDS), st.sampled_from(SWS) | st.integers(0, 0xFFFF),
    st.integers(0, 4096), st.sampled_from((0x07, 0x0F, 0x42, 0x99, 0xDF)),
    st.binary(max_size=6))
#: Changes for the extension answers of one run, in the order they come (then unchanged).
PLAN = st.lists(MUTATION, max_size=10)
KEEP: Mutation = ("keep", 0x9000, 0, 0, b"")


def sw_of(new_sw: int) -> Mutation:
    """Answer the next extension command with *new_sw* (for explicit examples)."""
    return ("sw", new_sw, 0, 0, b"")


def _extension(apdu: bytes) -> str | None:
    """Which extension answer *apdu* asks for (None: not one we mutate)."""
    if len(apdu) < 4:
        return None
    ins = apdu[1]
    if ins in INS_NAMES:
        return INS_NAMES[ins]
    if ins == 0xCB and any(obj in apdu for obj in PIVMAN_OBJECTS):
        return "PIVMAN"
    return None


def mutate(data: bytes, sw: int, m: Mutation) -> tuple[bytes, int, str]:
    """Apply one change to an answer; returns it and what was done."""
    kind, new_sw, pos, tag, value = m
    if kind == "keep":
        return data, sw, kind
    if kind == "sw":
        return (data if new_sw == 0x9000 else b""), new_sw, f"sw {new_sw:04X}"
    if kind == "empty":
        return b"", 0x9000, kind
    if kind == "truncate" and data:
        return data[:pos % len(data)], 0x9000, kind
    if kind == "garble" and data:
        i = pos % len(data)
        return data[:i] + bytes([data[i] ^ (tag | 1)]) + data[i + 1:], 0x9000, kind
    try:
        items = parse(data)
    except TlvError:
        items = []
    if kind == "drop-tlv" and items:
        i = pos % len(items)
        return b"".join(tlv(t, v) for j, (t, v) in enumerate(items) if j != i), 0x9000, kind
    if kind == "duplicate" and items:
        t, v = items[pos % len(items)]
        return data + tlv(t, v), 0x9000, kind
    if kind == "extra-tlv":
        return data + tlv(tag, value), 0x9000, kind
    if kind == "unknown-tag":
        return tlv(tag, value) + data, 0x9000, kind
    return data, sw, "keep"


class MutatingLink(SimLink):
    """A SimLink whose extension answers pass through :func:`mutate`. Long answers (61xx)
    are collected from the card first, so the mutation sees the whole answer."""

    def __init__(self, link: SimLink, plan: list[Mutation], log: list[str]) -> None:
        super().__init__(link.sim)
        self.plan = plan
        self.log = log

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        data, sw = super().transmit(apdu)
        what = _extension(bytes(apdu))
        if what is None:
            return data, sw
        while sw >> 8 == 0x61:
            more, sw = super().transmit(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
            data += more
        new_data, new_sw, how = mutate(data, sw, self.plan.pop(0) if self.plan else KEEP)
        if how != "keep":
            self.log.append(f"{what}: {how}")
        return new_data, new_sw


@contextmanager
def mutating(plan: list[Mutation]) -> Iterator[tuple[list[str], list[MutatingLink]]]:
    """Every virtual-card link the CLI opens mutates its extension answers (*plan* is
    shared: the changes go to the answers in the order they come)."""
    plan = list(plan)
    log: list[str] = []
    links: list[MutatingLink] = []
    original = connect.open_sim_link

    def opener(path: str | os.PathLike[str], faults: Any = None) -> SimLink:
        link = MutatingLink(original(path, faults), plan, log)
        links.append(link)
        return link

    connect.open_sim_link = opener  # type: ignore[assignment]
    try:
        yield log, links
    finally:
        connect.open_sim_link = original  # type: ignore[assignment]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mutated") / "prepared"
    prepare(d, "yubikey-5.7")
    return d


def _scratch(prepared: Path, tmp: Path, n: list[int]) -> Path:
    n[0] += 1
    d = tmp / f"run-{n[0]}"
    shutil.copytree(prepared, d)
    return d


def _card(path: Path) -> dict[str, Any]:
    return state_to_json(load_state(path))


READ_ONLY: tuple[tuple[str, ...], ...] = (
    ("info",), ("--json", "info"), ("keys", "info", "9a"), ("keys", "info", "9c"),
    ("certs", "export", "9a", "-o", "c.pem"), ("check", "--upn", "alice@contoso.com"),
    ("list",), ("entra", "ids", "--slot", "9a"), ("objects", "read", "5fc105", "-o", "o.bin"),
    ("keys", "attest", "9a", "--roots", "sim-root.pem", "-o", "a.pem"),
)
WRITES: tuple[tuple[tuple[str, ...], str, dict[str, str]], ...] = (
    (("keys", "generate", "9d", "-a", "eccp256"), "loaded", ADMIN),
    (("certs", "import", "9a", "cert9a-new.pem", "--force"), "loaded", ADMIN),
    (("mgmt-key", "change", "--generate", "--protect"), "fresh", ADMIN),
    (("pin", "change"), "fresh", {"PIVTOOL_PIN": PIN, "PIVTOOL_NEW_PIN": NEW_PIN}),
    (("objects", "chuid", "--generate"), "fresh", ADMIN),
    (("keys", "delete", "9c", "--yes"), "loaded", ADMIN),
)
SETTINGS = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _run_read_only(plan: list[Mutation], command: tuple[str, ...], prepared: Path,
                   tmp_path: Path) -> tuple[Any, list[str]]:
    work = _scratch(prepared, tmp_path, _COUNTER)
    old = os.getcwd()
    os.chdir(work)
    try:
        with mutating(plan) as (log, _):
            r = run(None, "--sim", "loaded.json", *command, env={"PIVTOOL_PIN": PIN})
    finally:
        os.chdir(old)
    event(f"exit {r.exit_code}, {'mutated' if log else 'unmutated'}")
    return r, log


def _run_write(plan: list[Mutation], write: tuple[tuple[str, ...], str, dict[str, str]],
               prepared: Path, tmp_path: Path) -> tuple[Any, list[str], list[str]]:
    """Run a write command with mutated answers; also return what changed on the card."""
    command, card, env = write
    work = _scratch(prepared, tmp_path, _COUNTER)
    before = _card(work / f"{card}.json")
    old = os.getcwd()
    os.chdir(work)
    try:
        with mutating(plan) as (log, _):
            r = run(None, "--sim", f"{card}.json", *command, env=env)
    finally:
        os.chdir(old)
    after = _card(work / f"{card}.json")
    event(f"exit {r.exit_code}, {'mutated' if log else 'unmutated'}")
    return r, log, sorted(k for k in before if before[k] != after[k])


def _crashed(r: Any) -> list[str]:
    """Problems that are crashes, not wording: an exception, a traceback, an odd exit."""
    return [p for p in problems(r, "yubikey-5.7")
            if p.startswith(("raised", "traceback", "undocumented"))]


@SETTINGS
@given(plan=PLAN, command=st.sampled_from(READ_ONLY))
def test_read_only_commands_do_not_crash(plan: list[Mutation], command: tuple[str, ...],
                                         prepared: Path, tmp_path: Path) -> None:
    r, log = _run_read_only(plan, command, prepared, tmp_path)
    assert not _crashed(r), f"{_crashed(r)} after {log}:\n{r.output[-1500:]}"


@SETTINGS
@given(plan=PLAN, command=st.sampled_from(READ_ONLY))
@example(plan=[KEEP, sw_of(0x6A80)], command=("info",))  # GET SERIAL refused oddly
@example(plan=[KEEP, KEEP, ("drop-tlv", 0x9000, 0, 0, b"")], command=("keys", "info", "9a"))
def test_read_only_commands_complete_with_mutated_answers(
        plan: list[Mutation], command: tuple[str, ...], prepared: Path, tmp_path: Path) -> None:
    """Read-only commands end in exit 0 (check: 1 with its report) or one clean refusal."""
    r, log = _run_read_only(plan, command, prepared, tmp_path)
    found = problems(r, "yubikey-5.7")
    assert not found, f"{found} after {log}:\n{r.output[-1500:]}"


@SETTINGS
@given(plan=PLAN, write=st.sampled_from(WRITES))
def test_failed_writes_change_nothing(plan: list[Mutation],
                                      write: tuple[tuple[str, ...], str, dict[str, str]],
                                      prepared: Path, tmp_path: Path) -> None:
    r, log, changed = _run_write(plan, write, prepared, tmp_path)
    assert not _crashed(r), f"{_crashed(r)} after {log}:\n{r.output[-1500:]}"
    if r.exit_code != 0:
        assert not changed, (f"failed with exit {r.exit_code} but changed {changed} after "
                             f"{log}:\n{r.output[-1500:]}")


@SETTINGS
@given(plan=PLAN, write=st.sampled_from(WRITES))
@example(plan=[KEEP, KEEP, sw_of(0x6D00)], write=WRITES[0])  # GET METADATA 6D00 mid-way
def test_write_refusals_after_mutated_answers_are_clean(
        plan: list[Mutation], write: tuple[tuple[str, ...], str, dict[str, str]],
        prepared: Path, tmp_path: Path) -> None:
    r, log, _ = _run_write(plan, write, prepared, tmp_path)
    found = problems(r, "yubikey-5.7")
    assert not found, f"{found} after {log}:\n{r.output[-1500:]}"


def test_the_wrapper_mutates(prepared: Path, tmp_path: Path) -> None:
    """The wrapper really changes answers: GET SERIAL answered 6D00 makes the serial
    unknown to 'info --json' (so the properties above are not vacuous)."""
    work = _scratch(prepared, tmp_path, _COUNTER)
    old = os.getcwd()
    os.chdir(work)
    try:
        with mutating([KEEP, sw_of(0x6D00)]) as (log, _):
            r = run(None, "--sim", "loaded.json", "--json", "info")
    finally:
        os.chdir(old)
    assert log == ["GET SERIAL: sw 6D00"], log
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["serial"] is None


_COUNTER = [0]
