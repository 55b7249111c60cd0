"""Many desks on one roster: ``pivtool batch enroll`` with the batch state in PostgreSQL, in
SQLite, or in today's state file, for 1, 2 and 4 desks of 2 virtual readers each.

Run from the repository root (after ``scripts/dev setup``)::

    .venv/bin/python bench/fleet.py                  # 400 users (~several minutes)
    .venv/bin/python bench/fleet.py --users 40       # a quick run
    .venv/bin/python bench/fleet.py --users 40 --update-doc

A benchmark, not a test. Each desk is its own process with its own ``--sim-pile`` of
factory-fresh virtual YubiKeys (in process: no pcscd), the lab CA as issuer, one PIN and an
escrowed PUK per key. PostgreSQL is a private server started like the tests'
(``tests/pg_stack.py``: as the ``postgres`` user, Unix socket, stopped by PID); SQLite is one
file all desks share. "file" is today's way: each desk its own state file and its own part
of the roster (files cannot be shared), with the escrow file.

Measured per configuration: enrollments per minute (all desks, from start to the last desk's
exit), database round trips per enrollment (statements plus BEGIN/COMMIT, counted in each
desk with SQLAlchemy events), the seconds each enrollment spends inside database calls, and
the coordination overhead: that time as a share of an enrollment's wall time (a desk's
wall time times its readers, over its keys). Cursor time is measured in the desk process,
whose reader threads also run the virtual cards' cryptography: time waiting for the GIL
counts as database time here, so the share is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PIN = "24681357"
READERS = 2
PASS = "bench-escrow-pass"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- fleet:begin (written by bench/fleet.py --update-doc) -->", \
    "<!-- fleet:end -->"


def desk_worker(out: str, argv: list[str]) -> int:
    """Run one desk in this process, counting its database round trips and time."""
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    from pivtool.cli.main import main
    from pivtool.store.engine import RoundTrips, count_round_trips

    counter = RoundTrips()
    count_round_trips(Engine, counter)
    spent = [0.0]
    started: dict[int, float] = {}

    @sa.event.listens_for(Engine, "before_cursor_execute")
    def _t0(conn: Any, cursor: Any, *a: Any) -> None:
        started[id(cursor)] = time.perf_counter()

    @sa.event.listens_for(Engine, "after_cursor_execute")
    def _t1(conn: Any, cursor: Any, *a: Any) -> None:
        spent[0] += time.perf_counter() - started.pop(id(cursor), time.perf_counter())

    t0 = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"statements": counter.statements,
                                     "transactions": counter.transactions,
                                     "db_seconds": spent[0], "wall": wall, "rc": rc}))
    return 0


def make_pile(directory: Path, n: int, first: int) -> None:
    from pivtool.sim.state import new_card_state, save_state

    directory.mkdir(parents=True)
    for i in range(n):
        save_state(new_card_state(serial=first + i), directory / f"key-{i:04d}.json")


def run_config(engine: str, desks: int, users: int, url: str | None, work: Path
               ) -> dict[str, Any]:
    """One configuration: *desks* processes over *users* users; returns the row."""
    work.mkdir(parents=True)
    from pivtool.certs.ca import LabCA

    LabCA.init(work / "ca", "CN=Bench CA", crl_url="http://ca.bench.test/c.crl")
    upns = [f"user{i:04d}@contoso.com" for i in range(users)]
    per = users // desks
    procs = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
    env.update(PIVTOOL_ESCROW_PASSPHRASE=PASS, PIVTOOL_NEW_PIN=PIN)
    t0 = time.monotonic()
    for d in range(desks):
        make_pile(work / f"pile{d}", per, 10_000_000 * (d + 1))
        roster = work / f"roster{d}.csv" if engine == "file" else work / "roster.csv"
        rows = upns[d * per:(d + 1) * per] if engine == "file" else upns
        roster.write_text("upn\n" + "".join(f"{u}\n" for u in rows))
        args = ["batch", "enroll", roster.name, "--json", "--sim-pile", f"pile{d}",
                "--sim-readers", str(READERS), "--ca", "ca", "--yes",
                "--state", f"desk{d}.state.json"]
        desk_env = dict(env)
        if engine == "file":
            args += ["--escrow", f"escrow{d}.json"]
        else:
            args += ["--escrow", "db"]
            desk_env.update(PIVTOOL_DB=url or "", PIVTOOL_DESK=f"desk-{d}")
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--desk-worker", str(work / f"desk{d}.rt.json"), "--",
             *args], cwd=work, env=desk_env, stdout=subprocess.PIPE,
            stderr=open(work / f"desk{d}.stderr", "wb"),  # noqa: SIM115 - the child's
            stdin=subprocess.DEVNULL))
    outs = [p.communicate()[0].decode() for p in procs]
    wall = time.monotonic() - t0
    done = sum(1 for o in outs for line in o.splitlines() if '"event": "done"' in line)
    for d in range(desks):
        if not (work / f"desk{d}.rt.json").exists():
            raise SystemExit(f"desk {d} ({engine}) failed:\n"
                             + (work / f"desk{d}.stderr").read_text()[-2000:])
    stats = [json.loads((work / f"desk{d}.rt.json").read_text()) for d in range(desks)]
    trips = sum(s["statements"] + s["transactions"] for s in stats)
    db_s = sum(s["db_seconds"] for s in stats)
    desk_wall = sum(s["wall"] for s in stats)
    return {"engine": engine, "desks": desks, "users": users, "enrolled": done,
            "wall": wall, "per_min": 60 * done / wall if wall else 0.0,
            "trips": trips / done if done else 0.0,
            "db_ms": 1000 * db_s / done if done else 0.0,
            # Each desk runs READERS enrollments at a time, one per reader thread: an
            # enrollment's wall time is the desk's wall time times READERS over its keys.
            "overhead": db_s / (desk_wall * READERS) if desk_wall else 0.0}


def table(rows: list[dict[str, Any]], users: int) -> str:
    lines = [f"{users}-user roster, desks x 2 virtual readers (`--sim-pile`), lab CA, "
             f"ECC P-256. {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
             f"{platform.python_version()}.", "",
             "| state | desks | enrolled | wall s | enrollments/min | DB round trips / "
             "enrollment | DB ms / enrollment | DB share of enrollment time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        db = r["engine"] != "file"
        lines.append(f"| {r['engine']} | {r['desks']} | {r['enrolled']} | {r['wall']:.1f} | "
                     f"{r['per_min']:.0f} | {r['trips']:.1f} | "
                     f"{r['db_ms']:.1f} | {100 * r['overhead']:.1f} % |" if db else
                     f"| {r['engine']} | {r['desks']} | {r['enrolled']} | {r['wall']:.1f} | "
                     f"{r['per_min']:.0f} | — | — | — |")
    return "\n".join(lines)


def main() -> int:
    if "--desk-worker" in sys.argv:
        i = sys.argv.index("--desk-worker")
        return desk_worker(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--desks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--engines", nargs="+", default=["postgresql", "sqlite", "file"])
    ap.add_argument("--update-doc", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import pg_stack

    server = pg_stack.start_server() if "postgresql" in a.engines else None
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="pivtool-fleet-") as tmp:
            for engine in a.engines:
                for desks in a.desks:
                    url = None
                    if engine == "postgresql":
                        assert server is not None
                        url = server.url(server.createdb())
                    elif engine == "sqlite":
                        url = f"sqlite:///{tmp}/{engine}-{desks}/inventory.db"
                    row = run_config(engine, desks, a.users, url,
                                     Path(tmp) / f"{engine}-{desks}")
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        if server is not None:
            pg_stack.stop_server(server)
    text = table(rows, a.users)
    print(text)
    if a.update_doc:
        doc = DOC.read_text()
        new = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in doc:
            doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda m: new, doc,
                         flags=re.S)
        else:
            doc = doc.rstrip("\n") + "\n\n## Many desks: the inventory database\n\n" + new + "\n"
        DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
