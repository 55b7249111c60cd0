"""Opening the inventory database: URLs, engines, schema versions, round-trip counting.

``--db URL`` / ``$PIVTOOL_DB`` takes ``sqlite:///PATH`` or ``postgresql://...``
(``postgresql+psycopg://`` is implied: psycopg 3 is the driver). A fresh, empty database is
created at the newest schema; one at an older schema is refused until ``pivtool db upgrade``
brings it up to date in place (a desk must never write rows an older schema cannot hold, and
an upgrade is the database owner's decision, not a side effect of an enrollment).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import PivToolError, UsageError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock key held while the schema is created or upgraded ("pivtool").
SCHEMA_LOCK = 0x70697674


class StoreError(PivToolError):
    """The database failed or went away (exit code 1; the card is left as it was or
    resumable, see docs/fleet.md)."""


class SchemaError(UsageError):
    """The database's schema is not the one this pivtool writes (exit code 2)."""


@dataclass
class RoundTrips:
    """Counts what the desk sends to the database: statements, BEGINs, COMMITs and
    ROLLBACKs (each a network round trip with PostgreSQL)."""

    statements: int = 0
    transactions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total(self) -> int:
        """Every round trip."""
        return self.statements + self.transactions

    def add(self, statements: int = 0, transactions: int = 0) -> None:
        """Count (thread-safe: a batch has one worker per reader)."""
        with self._lock:
            self.statements += statements
            self.transactions += transactions


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL for *url*: ``postgresql://`` gets the psycopg 3 driver; anything
    but SQLite and PostgreSQL is refused (exit 2)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("postgresql+psycopg://", "sqlite:///")):
        return url
    raise UsageError(f"unsupported database URL {display_url(url)!r}: use sqlite:///PATH or "
                     "postgresql://...")


def display_url(url: str) -> str:
    """*url* with any password hidden (for messages and the audit trail)."""
    if "://" not in url or "@" not in url.split("://", 1)[1].split("/", 1)[0]:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.split("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def create_engine(url: str, counter: RoundTrips | None = None) -> Engine:
    """An engine for *url* (see :func:`normalise_url`). SQLite: WAL journal, a 30 s busy
    timeout, and ``BEGIN IMMEDIATE`` for every transaction, so two desks on one file
    serialise their writes instead of failing half-way; ``synchronous=NORMAL``, with the
    commits a re-run depends on made durable by :func:`durable`. *counter* counts round
    trips."""
    import sqlalchemy as sa

    real = normalise_url(url)
    if real.startswith("sqlite"):
        path = real[len("sqlite:///"):]
        if path and path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise UsageError(f"cannot create the database {path}: folder {folder} "
                                 "does not exist")
            # 0600 from the start: it names who holds which key (SQLite gives its -wal and
            # -shm files the database file's mode).
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # The stdlib driver's own transaction handling is off (isolation_level=None): the
        # BEGIN below is ours, so reads and writes of one transaction are really atomic.
        engine = sa.create_engine(real, connect_args={"isolation_level": None,
                                                      "timeout": 30,
                                                      "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi: Any, record: Any) -> None:
            cur = dbapi.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode a NORMAL commit survives a crash of pivtool (SIGKILL included)
            # but may not survive a power cut; it costs no fsync. The write-ahead records
            # (claims, status changes, escrow) ask for FULL (durable() below).
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            if not _autocommit(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        # No pool_pre_ping: it would cost a round trip per statement. A connection the
        # server dropped fails its next statement (StoreError: the desk stops, resumable).
        engine = sa.create_engine(real, pool_size=8)
    if counter is not None:
        _count(engine, counter)
    return engine


@contextlib.contextmanager
def durable(conn: Connection) -> Iterator[None]:
    """Make the commits of *conn* in this block reach the disk before they return.

    SQLite only (PostgreSQL commits are durable): ``synchronous=FULL`` fsyncs the WAL at
    each commit, which also makes every earlier commit on the file durable. Used for the
    records a re-run relies on after a power cut — a claim before the card changes, a
    user's status, an escrowed PUK; per-step progress, the inventory rows and buffered audit
    rows skip the fsync (a power cut may lose the last of them, never a claim). Call it
    outside a transaction (SQLite refuses the change inside one); the PRAGMAs go to the
    driver directly (not round trips, not counted)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        raw.execute("PRAGMA synchronous=NORMAL")


def _autocommit(conn: Connection) -> bool:
    return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def count_round_trips(target: Any, counter: RoundTrips) -> None:
    """Count *target*'s round trips into *counter*: an engine, or the ``Engine`` class for
    every engine of the process (bench/fleet.py counts a desk's that way)."""
    _count(target, counter)


def _count(engine: Any, counter: RoundTrips) -> None:
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _stmt(conn: Connection, *args: Any) -> None:
        # SQLite's BEGIN IMMEDIATE is counted below, as the BEGIN it is.
        if not args[1].startswith("BEGIN"):
            counter.add(statements=1)

    def _tx(conn: Connection, *args: Any) -> None:
        # In autocommit SQLAlchemy still reports begin/commit, but nothing is sent.
        if not _autocommit(conn):
            counter.add(transactions=1)

    for name in ("begin", "commit", "rollback"):
        sa.event.listen(engine, name, _tx)


# --------------------------------------------------------------------------------------------
# Schema versions


def _alembic_config(conn: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def _scripts() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    """The newest schema revision this pivtool ships."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The database's schema revision (None: no pivtool schema)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head", *, fresh: bool = False
            ) -> tuple[str | None, str]:
    """Bring the schema up to *revision* in place; return (before, after). With *fresh*
    (creating a schema in what looked like an empty database) a database that, once the
    lock is held, has tables but no pivtool version is refused instead."""
    from alembic import command

    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Desks started together on a fresh database: one creates the schema, the
                # others wait here and then find it current (SQLite: BEGIN IMMEDIATE).
                import sqlalchemy as sa

                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
            before = current_revision(conn)
            if fresh and before is None and _has_tables(conn):
                raise SchemaError(FOREIGN_DATABASE)
            command.upgrade(_alembic_config(conn), revision)
            after = current_revision(conn)
    except PivToolError:
        raise
    except Exception as e:
        raise translate(e, "upgrading the schema") from None
    assert after is not None
    return before, after


FOREIGN_DATABASE = ("the database holds tables but no pivtool schema version; "
                    "give pivtool a database of its own")


def _has_tables(conn: Connection) -> bool:
    import sqlalchemy as sa

    return bool(sa.inspect(conn).get_table_names())


def check_schema(engine: Engine, create: bool = True, upgrade_older: bool = False) -> str:
    """Refuse a database whose schema is not this pivtool's newest; create the schema in an
    empty one when *create*; bring an older one up to date when *upgrade_older* (a
    database of pivtool's own, like a batch's default state). Returns the revision."""
    import sqlalchemy as sa

    head = head_revision()
    try:
        with engine.connect() as conn:
            rev = current_revision(conn)
            empty = rev is None and not sa.inspect(conn).get_table_names()
    except PivToolError:
        raise
    except Exception as e:
        raise translate(e, "opening the database") from None
    if rev == head:
        return rev
    if rev is None:
        if not create:
            raise SchemaError(FOREIGN_DATABASE if not empty else
                              "the database has no pivtool schema yet: run 'pivtool db "
                              "upgrade' first")
        # Decided again under the schema lock: the version and the table list were read
        # in two queries, and a desk started at the same moment may have created the
        # schema between them (it then looks "foreign" here, though it is current).
        upgrade(engine, fresh=True)
        return head
    from alembic.util import CommandError

    try:
        known = _scripts().get_revision(rev) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaError(f"the database schema is at revision {rev}, newer than this "
                          f"pivtool knows ({head}): upgrade pivtool on this desk")
    if upgrade_older:
        upgrade(engine)
        return head
    raise SchemaError(f"the database schema is at revision {rev}, this pivtool needs {head}: "
                      "run 'pivtool db upgrade' (as the database owner) first")


def translate(e: BaseException, doing: str) -> PivToolError:
    """A driver or SQLAlchemy error as one line without connection secrets: a
    :class:`StoreError` (the database failed) or, for a refused login or missing
    permission, the same with what to check."""
    import sqlalchemy.exc as sx

    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if isinstance(e, sx.OperationalError | sx.InterfaceError):
        return StoreError(f"database unavailable while {doing}: {text}")
    if isinstance(e, sx.ProgrammingError) and "permission denied" in text:
        return StoreError(f"the database refused {doing}: {text} (check the role's GRANTs, "
                          "docs/fleet.md)")
    return StoreError(f"database error while {doing}: {text}")


def db_call(doing: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Turn driver and SQLAlchemy errors into one-line pivtool errors naming *doing*."""

    def deco(f: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            import sqlalchemy.exc as sx

            try:
                return f(*args, **kwargs)
            except PivToolError:
                raise
            except sx.SQLAlchemyError as e:
                raise translate(e, doing) from None

        return wrapper

    return deco
