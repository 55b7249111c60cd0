"""Helpers for the batch tests: a lab CA, rosters, ``pivtool batch enroll`` as a subprocess
with its ``--json`` events, and reading the virtual cards' final state."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GATED_ISSUER = Path(__file__).with_name("gated_issuer.py")
#: Bounds every wait in these tests: a hang fails, never blocks the suite.
WAIT = 30.0


def make_ca(tmp: Path) -> Path:
    from pivtool.certs.ca import LabCA

    ca = tmp / "ca"
    LabCA.init(ca, "CN=Contoso Batch CA,O=Contoso", crl_url="http://ca.contoso.test/b.crl")
    return ca


def gated_issuer_cmd(ca: Path, gate: Path) -> str:
    return f"{sys.executable} {GATED_ISSUER} {ca} {gate}"


def write_roster(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


class BatchProc:
    """``pivtool batch enroll --json ...`` running in the background; its stdout events are
    collected by a thread so the test can wait for one."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PIVTOOL_") or k == "PIVTOOL_JOURNAL_DIR"}
        full_env.update(env)
        self.stderr_path = cwd / f"batch-stderr-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pivtool", "batch", "enroll", "--json", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=cwd, env=full_env)
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode()
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            self._q.put(event)
        self._q.put(None)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = WAIT,
                 count: int = 1, since: int = 0) -> list[dict[str, Any]]:
        """Wait until *count* events from index *since* on (seen so far or to come) match
        *pred*."""
        deadline = time.monotonic() + timeout
        seen = since
        matched: list[dict[str, Any]] = []
        while True:
            while seen < len(self.events):
                ev = self.events[seen]
                seen += 1
                if pred(ev):
                    matched.append(ev)
                    if len(matched) >= count:
                        return matched
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for events; got:\n{self.transcript()}")
            try:
                if self._q.get(timeout=left) is None and seen >= len(self.events):
                    raise AssertionError(f"batch exited before the event:\n{self.transcript()}")
            except queue.Empty:
                pass

    def finish(self, timeout: float = WAIT) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._reader.join(5)
            self._stderr.close()
        return rc

    def kill(self) -> None:
        """SIGKILL exactly the batch process."""
        self.proc.send_signal(signal.SIGKILL)
        self.finish()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def transcript(self) -> str:
        return "".join(self.lines)[-4000:] + "\n--- stderr ---\n" + self.stderr[-3000:]


def run_batch(args: list[str], env: dict[str, str], cwd: Path, timeout: float = WAIT
              ) -> tuple[int, BatchProc]:
    p = BatchProc(args, env, cwd)
    rc = p.finish(timeout)
    return rc, p


def card_state(card: Any, tmp: Path) -> Any:
    """The card's PIV state as pivtool reads it, from a copy of its state file (the serve
    process keeps running; the copy is never written back)."""
    from pivtool.connect import open_sim_link
    from pivtool.piv.session import PivSession
    from pivtool.workflows.state import read_card_state

    copy = tmp / f"copy-{card.state_path.name}"
    shutil.copyfile(card.state_path, copy)
    link = open_sim_link(copy)
    try:
        return read_card_state(PivSession(link))
    finally:
        link.close()


def cert_upns(card_st: Any) -> list[str]:
    from pivtool.certs.inspect import get_upns
    from pivtool.piv.constants import Slot

    slot = card_st.slot(Slot.AUTHENTICATION)
    return get_upns(slot.certificate) if slot and slot.certificate is not None else []


def read_batch_state(work: Path, name: str = "roster.state.db") -> dict[str, Any]:
    """The batch's default state (the SQLite database beside ``roster.state.json``) in the
    form of a JSON state file: ``{"invalid_rows": [...], "users": {upn: record}}``. Safe
    while the batch runs (WAL: readers never block the writer)."""
    from pivtool.store.api import Store
    from pivtool.workflows.batch.dbstate import DbBatchState

    db = work / name
    assert db.is_file(), f"no database {db}"
    with Store.open(f"sqlite:///{db}", create=False) as store:
        state = DbBatchState(store)
        return {"invalid_rows": state.doc["invalid_rows"],
                "users": {upn: u.to_json() for upn, u in state.users.items()}}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_secret(texts: list[str], secrets_: list[str]) -> None:
    for s in secrets_:
        for t in texts:
            assert s not in t, f"secret {s[:2]}... leaked"


def output_texts(directory: Path, *extra: str) -> list[str]:
    """Every file the batch wrote in *directory* (not the cards, not the letters, not the
    escrow, which hold the secrets by design), plus *extra* strings."""
    skip_dirs = {"letters"}
    out = list(extra)
    for p in directory.rglob("*"):
        if p.is_file() and not (skip_dirs & set(p.parts)) and p.suffix in (
                ".json", ".jsonl", ".csv", ".txt", ".lock") and not p.name.startswith(
                ("card-", "copy-", "escrow")):
            out.append(p.read_text(errors="replace"))
    return out
