"""A private PostgreSQL server for tests, and the two-engine ``db_url`` fixture.

Like ``tests/pcsc_stack.py`` for pcscd: the suite starts its own server and stops exactly
what it started, by PID.

* The binaries come from Debian's ``postgresql`` package (``scripts/dev setup`` installs it);
  a missing ``initdb``/``postgres`` is a test *failure*, never a skip.
* PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
  package's ``postgres`` user (``Popen(user=...)``: the PID we hold is the postmaster's own,
  not a wrapper's), in a temporary directory that user owns.
* ``initdb --auth=trust``; ``listen_addresses=''`` — a Unix socket in that directory and no
  TCP port, so it cannot collide with another server on the machine, and nobody else can
  reach it. ``fsync=off``: a test database need not survive a power cut.

Fixtures
--------
``pg_server`` (session)
    The running :class:`PgServer` (``.url(dbname)``, ``.admin_url``, ``.createdb()``).
``pg_url`` (function)
    A fresh database on it: ``postgresql://postgres@/pivtool_N?host=<socket dir>``.
``db_url`` (function, parametrised ``sqlite`` / ``postgresql``)
    Every store test runs on both engines.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PG_USER = "postgres"


def find_bindir() -> str:
    """The newest Debian PostgreSQL ``bin`` directory; fail the test run without one."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return str(Path(found[-1]).parent)
    initdb = shutil.which("initdb")
    if initdb:
        return str(Path(initdb).resolve().parent)
    pytest.fail("PostgreSQL is not installed (Debian package 'postgresql'; run "
                "'scripts/dev setup'): the store tests need a real server", pytrace=False)


@dataclass
class PgServer:
    """One postmaster we started."""

    workdir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def socket_dir(self) -> str:
        """The Unix socket's directory (the URL's ``host``)."""
        return str(self.workdir / "run")

    def url(self, dbname: str, user: str = PG_USER, password: str | None = None) -> str:
        """A ``postgresql://`` URL over the socket."""
        cred = user if password is None else f"{user}:{password}"
        return f"postgresql://{cred}@/{dbname}?host={self.socket_dir}"

    @property
    def admin_url(self) -> str:
        """The superuser's URL to the ``postgres`` database."""
        return self.url("postgres")

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run *sql* as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(dbname=dbname, user=PG_USER, host=self.socket_dir,
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def createdb(self) -> str:
        """A new empty database; returns its name."""
        name = f"pivtool_{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def log_tail(self, lines: int = 20) -> str:
        """The server log's end (for failure messages)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _as_postgres() -> dict[str, object]:
    """``Popen`` arguments that run a child as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        pytest.fail(f"no '{PG_USER}' user: install Debian's postgresql package "
                    "(scripts/dev setup)", pytrace=False)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                    "HOME": pw.pw_dir}}


def start_server() -> PgServer:
    """initdb a temporary cluster and start its postmaster; wait until it accepts."""
    bindir = find_bindir()
    as_pg = _as_postgres()
    workdir = Path(tempfile.mkdtemp(prefix="pivtool-pg-"))
    (workdir / "run").mkdir()
    if as_pg:
        for p in (workdir, workdir / "run"):
            os.chown(p, as_pg["user"], as_pg["group"])  # type: ignore[arg-type]
    os.chmod(workdir, 0o700)
    data = workdir / "data"
    init = subprocess.run([f"{bindir}/initdb", "-D", str(data), "--auth=trust", "-U", PG_USER,
                           "--encoding=UTF8", "--locale=C", "--no-sync"],
                          capture_output=True, check=False, **as_pg)  # type: ignore[call-overload]
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.decode(errors='replace')[-500:]}",
                    pytrace=False)
    log = workdir / "server.log"
    out = open(log, "wb")  # noqa: SIM115 - the server writes to it until stopped
    proc = subprocess.Popen(
        [f"{bindir}/postgres", "-D", str(data), "-k", str(workdir / "run"),
         "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=100"],
        stdout=out, stderr=subprocess.STDOUT, **as_pg)  # type: ignore[call-overload]
    out.close()
    server = PgServer(workdir, proc, log)
    deadline = time.monotonic() + 30
    sock = workdir / "run" / ".s.PGSQL.5432"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log_tail()
            shutil.rmtree(workdir, ignore_errors=True)
            pytest.fail(f"postgres exited with {proc.returncode}:\n{tail}", pytrace=False)
        if sock.exists():
            try:
                server.execute("SELECT 1")
                return server
            except Exception:  # not accepting yet (starting up)
                pass
        time.sleep(0.05)
    stop_server(server)
    pytest.fail("postgres did not start within 30 s", pytrace=False)


def stop_server(server: PgServer) -> None:
    """Stop our postmaster by PID (SIGINT: PostgreSQL's fast shutdown) and remove its
    directory."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole test session."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.url(pg_server.createdb())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, once per engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inventory.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.url(server.createdb())
