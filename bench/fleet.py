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
of the roster (files cannot be shared), with the escrow file (``--state-format json``).
"default" is the same per-desk setup with the batch's default state: a SQLite file beside
each desk's state name, no ``--db`` (its audit log file as well as the database's).

Measured per configuration: enrollments per minute (all desks, from start to the last desk's
exit), database round trips per enrollment (statements plus BEGIN/COMMIT, counted in each
desk with SQLAlchemy events), the time each enrollment spends in the database, and the
coordination overhead: that time as a share of an enrollment's wall time (a desk's wall
time times its readers, over its keys). The database time is measured two ways:

* **desk clock**: wall time around each statement in the desk process. Its other reader
  thread runs the virtual card's cryptography, so a statement whose answer has arrived may
  still wait for Python's GIL (up to the 5 ms switch interval) before the clock stops:
  this counts GIL waits as database time, an upper bound;
* **on the connection** (PostgreSQL): the server's own time executing the desks'
  statements (``pg_stat_database.active_time`` of the configuration's database, which no
  one else uses) plus the CPU time the desk's threads spent inside the statement calls
  (``time.thread_time``: the driver's work, not time spent waiting for the GIL or the
  socket). What it leaves out is the Unix socket's transfer time (microseconds).
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
    spent = [0.0, 0.0]  # desk clock, desk threads' CPU
    started: dict[int, tuple[float, float]] = {}

    @sa.event.listens_for(Engine, "before_cursor_execute")
    def _t0(conn: Any, cursor: Any, *a: Any) -> None:
        started[id(cursor)] = (time.perf_counter(), time.thread_time())

    @sa.event.listens_for(Engine, "after_cursor_execute")
    def _t1(conn: Any, cursor: Any, *a: Any) -> None:
        wall0, cpu0 = started.pop(id(cursor), (time.perf_counter(), time.thread_time()))
        spent[0] += time.perf_counter() - wall0
        spent[1] += time.thread_time() - cpu0  # the same thread: no GIL wait in it

    t0 = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"statements": counter.statements,
                                     "transactions": counter.transactions,
                                     "db_seconds": spent[0], "db_cpu_seconds": spent[1],
                                     "wall": wall, "rc": rc}))
    return 0


def server_seconds(url: str) -> float:
    """PostgreSQL's own time executing statements in *url*'s database, once the desks'
    sessions have ended (their statistics are flushed when a backend exits)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        dbname = conn.info.dbname
        for _ in range(50):
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                "AND pid <> pg_backend_pid()", (dbname,)).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.1)
        conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(1.2)  # a backend's last statistics reach the shared ones asynchronously
        row = conn.execute("SELECT active_time FROM pg_stat_database WHERE datname = %s",
                           (dbname,)).fetchone()
    # Our own connection's statements are a few ms; they count against the goal, not for.
    return float(row[0] or 0.0) / 1000.0 if row else 0.0


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
        own = engine in ("file", "default")  # each desk its own state and roster part
        roster = work / f"roster{d}.csv" if own else work / "roster.csv"
        rows = upns[d * per:(d + 1) * per] if own else upns
        roster.write_text("upn\n" + "".join(f"{u}\n" for u in rows))
        args = ["batch", "enroll", roster.name, "--json", "--sim-pile", f"pile{d}",
                "--sim-readers", str(READERS), "--ca", "ca", "--yes",
                "--state", f"desk{d}.state.json"]
        desk_env = dict(env)
        if own:
            args += ["--escrow", f"escrow{d}.json"]
            if engine == "file":
                args += ["--state-format", "json"]
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
    # On the connection: the server's time plus the desks' CPU inside the calls.
    conn_s = (server_seconds(url) + sum(s["db_cpu_seconds"] for s in stats)
              if engine == "postgresql" and url else None)
    desk_wall = sum(s["wall"] for s in stats)
    # Each desk runs READERS enrollments at a time, one per reader thread: an enrollment's
    # wall time is the desk's wall time times READERS over its keys.
    enroll_s = desk_wall * READERS
    return {"engine": engine, "desks": desks, "users": users, "enrolled": done,
            "wall": wall, "per_min": 60 * done / wall if wall else 0.0,
            "trips": trips / done if done else 0.0,
            "db_ms": 1000 * db_s / done if done else 0.0,
            "overhead": db_s / enroll_s if enroll_s else 0.0,
            "conn_ms": None if conn_s is None or not done else 1000 * conn_s / done,
            "conn_overhead": None if conn_s is None or not enroll_s else conn_s / enroll_s,
            "enroll_s": enroll_s / done if done else 0.0}


def table(rows: list[dict[str, Any]], users: int) -> str:
    lines = [f"{users}-user roster, desks x 2 virtual readers (`--sim-pile`), lab CA, "
             f"ECC P-256. {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
             f"{platform.python_version()}.", "",
             "| state | desks | enrolled | wall s | enrollments/min | s / enrollment | "
             "DB round trips / enrollment | DB ms / enrollment: desk clock (incl. GIL "
             "waits) | share | DB ms / enrollment: on the connection | share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = (f"| {r['engine']} | {r['desks']} | {r['enrolled']} | {r['wall']:.1f} | "
                f"{r['per_min']:.0f} | {r['enroll_s']:.2f} | ")
        if r["engine"] == "file":
            lines.append(head + "— | — | — | — | — |")
            continue
        conn = ("— | — |" if r.get("conn_ms") is None else
                f"{r['conn_ms']:.1f} | {100 * r['conn_overhead']:.1f} % |")
        lines.append(head + f"{r['trips']:.1f} | {r['db_ms']:.1f} | "
                            f"{100 * r['overhead']:.1f} % | " + conn)
    return "\n".join(lines)


def main() -> int:
    if "--desk-worker" in sys.argv:
        i = sys.argv.index("--desk-worker")
        return desk_worker(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--desks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--engines", nargs="+", default=["postgresql", "sqlite", "file"],
                    help="postgresql, sqlite, file and/or default")
    ap.add_argument("--update-doc", action="store_true")
    ap.add_argument("--rows", nargs="+", type=Path, metavar="FILE",
                    help="run nothing: make the table from the JSON rows earlier runs "
                         "printed (one per line), e.g. engines run at different times")
    a = ap.parse_args()
    if a.rows:
        rows = [json.loads(line) for f in a.rows for line in f.read_text().splitlines()
                if line.startswith("{")]
        return report(rows, rows[0]["users"], a.update_doc)
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
    return report(rows, a.users, a.update_doc)


def report(rows: list[dict[str, Any]], users: int, update_doc: bool) -> int:
    """Print the table; with *update_doc* also put it into docs/performance.md."""
    text = table(rows, users)
    print(text)
    if update_doc:
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
