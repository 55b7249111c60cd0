"""How many keys per minute ``pivtool batch enroll`` gets through with 1, 2 and 4 readers.

Run from the repository root (after ``scripts/dev setup``)::

    .venv/bin/python bench/batch_rate.py              # 4 keys per reader, ~1 minute
    .venv/bin/python bench/batch_rate.py --keys 8 --readers 1 2 4

A benchmark, not a test. It starts a private pcscd with vpcd readers (the tests' machinery in
``tests/pcsc_stack.py``: it refuses to run next to a pcscd it did not start and stops its
own by PID), starts one batch per configuration (lab CA issuer, ECC P-256, one PIN and PUK
for all), and plays a perfect operator on each reader: insert a factory-fresh virtual
YubiKey, wait for the batch's ``remove-card`` event, pull it, insert the next. The clock
runs from the first insertion to the last enrolled key, so it includes pcscd's insertion and
removal detection (~0.4 s each), which a human at a desk would not beat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # pcsc_stack (the tests' pcscd machinery)
sys.path.insert(0, str(REPO))

import pcsc_stack  # noqa: E402
import pytest  # noqa: E402, F401  (pcsc_stack reports problems with pytest.fail)

PIN, PUK = "24681357", "86427531"


class Batch:
    """A ``pivtool batch enroll --json`` process and its events by serial."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
        env.update(PIVTOOL_NEW_PIN=PIN, PIVTOOL_NEW_PUK=PUK)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pivtool", "batch", "enroll", "--json", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env)
        self.cond = threading.Condition()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            event["_received"] = time.monotonic()
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def wait(self, kind: str, serial: int, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if e.get("event") == kind and e.get("serial") == serial:
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"no {kind} event for serial {serial}")
                self.cond.wait(left)


def operate(stack: Any, reader: Any, batch: Batch, directory: Path, serials: list[int],
            errors: list[str]) -> None:
    """Insert each key in turn, pull it when the batch says so."""
    from pivtool.sim.state import new_card_state, save_state

    try:
        for serial in serials:
            path = directory / f"card-{serial}.json"
            if not path.exists():
                save_state(new_card_state(serial=serial), path)
            card = pcsc_stack.VirtualCardProcess(stack, reader, path, serial)
            card.start()
            event = batch.wait("remove-card", serial)
            done = [e for e in batch.events if e.get("event") == "done"
                    and e.get("serial") == serial]
            if not done:
                errors.append(f"serial {serial} not enrolled: {event}")
            card.kill(signal.SIGKILL, wait_removed=True)
    except Exception as e:  # reported by the main thread
        errors.append(f"{reader.name}: {e}")


def measure(stack: Any, n_readers: int, keys: int, work: Path, ca: Path) -> dict[str, Any]:
    from pivtool.sim.state import new_card_state, save_state

    run = work / f"r{n_readers}"
    run.mkdir()
    total = n_readers * keys
    serials = [[90_000_000 + n_readers * 1000 + r * 100 + k for k in range(keys)]
               for r in range(n_readers)]
    for group in serials:  # card creation (attestation keys) is not part of the rate
        for serial in group:
            save_state(new_card_state(serial=serial), run / f"card-{serial}.json")
    (run / "roster.csv").write_text(
        "upn\n" + "".join(f"user{i}@contoso.com\n" for i in range(total)))
    readers = [r for r in stack.readers if not r.yubico][:n_readers]
    batch = Batch(["roster.csv", "--ca", str(ca), "--readers", "pivtool-test", "--yes",
                   "--timeout", "30"], run)
    errors: list[str] = []
    threads = [threading.Thread(target=operate, args=(stack, reader, batch, run, group,
                                                      errors))
               for reader, group in zip(readers, serials, strict=True)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done_times = [e["_received"] for e in batch.events if e.get("event") == "done"]
    batch.proc.wait(60)
    if errors:
        raise RuntimeError("; ".join(errors))
    if len(done_times) != total:
        raise RuntimeError(f"{len(done_times)} of {total} keys enrolled")
    elapsed = max(done_times) - start
    return {"readers": n_readers, "keys": total, "seconds": round(elapsed, 2),
            "keys_per_minute": round(total / elapsed * 60, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=4, help="keys per reader (default 4)")
    ap.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    from pivtool.certs.ca import LabCA

    stack = pcsc_stack.start_stack()
    work = Path(tempfile.mkdtemp(prefix="pivtool-batch-bench-"))
    try:
        ca = work / "ca"
        LabCA.init(ca, "CN=Bench CA", crl_url="http://ca.bench.test/b.crl")
        usable = len([r for r in stack.readers if not r.yubico])
        results = []
        for n in args.readers:
            if n > usable:
                raise SystemExit(f"only {usable} vpcd readers available")
            results.append(measure(stack, n, args.keys, work, ca))
    finally:
        pcsc_stack.stop_stack(stack)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"host": platform.node(), "cpus": os.cpu_count(),
                          "results": results}, indent=2))
        return 0
    print(f"pivtool batch enroll, ECC P-256, lab CA, virtual YubiKeys behind pcscd "
          f"({os.cpu_count()} CPUs)")
    print(f"{'readers':>8} {'keys':>5} {'seconds':>8} {'keys/min':>9}")
    for r in results:
        print(f"{r['readers']:>8} {r['keys']:>5} {r['seconds']:>8} {r['keys_per_minute']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
