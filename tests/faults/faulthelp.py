"""Helpers for fault-injection tests: run the CLI with a fault plan, count APDUs, check
what the user still knows, and record rows for the generated docs.

Faults reach the CLI through the ``PIVTOOL_SIM_FAULTS`` hook in :mod:`pivtool.connect`
(``AT:KIND``), i.e. the same code path a user's ``--sim`` takes; APDUs are counted by
wrapping :func:`pivtool.connect.open_sim_link`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import Result

import pivtool.connect as connect
from pivtool.connect import SIM_FAULTS_ENV, SimLink
from pivtool.core.errors import PivToolError
from pivtool.piv.constants import DEFAULT_MGMT_KEY
from pivtool.sim.state import load_state
from pivtool.workflows.auth import StaticPrompter, authenticate
from tests.cli.clihelp import run, session

#: Where tests append rows for the generated docs (set by tests/faults/conftest.py).
ROWS_ENV = "PIVTOOL_TEST_ROWS_DIR"


def run_faulted(card: Path, args: tuple[str, ...], env: dict[str, str],
                at: int | None = None, kind: str = "card-removed") -> Result:
    """Run ``pivtool --sim card ARGS`` with the card pulled (or reset, ...) at APDU *at*."""
    env = dict(env)
    if at is not None:
        env[SIM_FAULTS_ENV] = f"{at}:{kind}"
    return run(card, *args, env=env)


@contextmanager
def counting_links() -> Iterator[list[SimLink]]:
    """Record every virtual-card link the CLI opens (``link.sim.commands`` = APDUs)."""
    links: list[SimLink] = []
    original = connect.open_sim_link

    def recording(path: str | os.PathLike[str], faults: Any = None) -> SimLink:
        link = original(path, faults)
        links.append(link)
        return link

    connect.open_sim_link = recording  # type: ignore[assignment]
    try:
        yield links
    finally:
        connect.open_sim_link = original  # type: ignore[assignment]


def count_apdus(card: Path, args: tuple[str, ...], env: dict[str, str]) -> int:
    """Run once without faults (must succeed) and return the APDUs of its connection."""
    with counting_links() as links:
        r = run(card, *args, env=env)
    assert r.exit_code == 0, r.output
    assert len(links) == 1, "one connection per command expected"
    return links[0].sim.commands


def error_line(r: Result) -> str:
    """The one ``Error:`` line on stderr (asserts there is exactly one, and no traceback)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    assert r.stderr.rstrip().endswith(lines[0]), "the error must be the last thing said"
    return lines[0]


def mgmt_key_opens(card: Path, pins: set[str], keys: set[bytes]) -> str:
    """pivtool can still get management-key access with what the user knows (a PIN of
    *pins* and any key of *keys*, or the PIN-protected copy). Returns how."""
    state = load_state(card)
    pin = state.pin.decode()
    assert pin in pins, "the card's PIN is one the user does not know"
    tried: list[str] = []
    for key in [None, *sorted(keys)]:
        secrets: dict[str, bytes] = {"pin": pin.encode()}
        if key is not None:
            secrets["mgmt_key"] = key.hex().encode()
        s = session(card)
        try:
            auth = authenticate(s, StaticPrompter(secrets))
            return auth.source
        except PivToolError as e:
            tried.append(str(e))
        finally:
            s.connection.close()
    raise AssertionError(f"management key unknown after the fault: {tried}")


def default_key() -> bytes:
    """The factory management key (what a fresh card's user 'knows')."""
    return DEFAULT_MGMT_KEY


def record(kind: str, row: dict[str, Any]) -> None:
    """Append *row* to ``<rows dir>/<kind>.jsonl`` for the doc generators (no-op outside
    the faults suite)."""
    where = os.environ.get(ROWS_ENV)
    if not where:
        return
    with open(Path(where) / f"{kind}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def read_rows(kind: str) -> list[dict[str, Any]]:
    """Rows recorded so far in this session."""
    where = os.environ.get(ROWS_ENV)
    path = Path(where or ".") / f"{kind}.jsonl"
    if not where or not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln]
