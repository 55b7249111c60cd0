"""The batch's default state: a SQLite database beside the state file, nothing to install.

``pivtool batch enroll ROSTER.csv`` keeps its state in ``<roster>.state.db`` (the name of
``--state``, ``.json`` replaced by ``.db``: :attr:`BatchPaths.database`), the same store
``--db sqlite:///PATH`` opens, used by one desk. The state file's lock, audit log, reports
and Graph files keep their names, so a re-run finds everything where it was.

A batch begun by an older pivtool left a JSON state file at the state's name: the first run
imports it (users with their status, key and certificate; its audit log) into the database,
audits the import, and renames the file ``<name>.imported`` so it is never imported twice.
A user the old run left half-enrolled is ``incomplete`` in the database, bound to the same
key, and is finished on that key when it comes back — no second key or certificate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .dbstate import ROSTER_META
from .state import BatchPaths, _stamp

if TYPE_CHECKING:
    from ...store.api import Store
    from ..inventory import ImportResult

#: ``--state-format``: the database beside the state (default) or the JSON file.
SQLITE, JSON = "sqlite", "json"
STATE_FORMATS = (SQLITE, JSON)
#: Suffix of a JSON state file after its import into the database.
IMPORTED = ".imported"


def sqlite_url(path: Path) -> str:
    """The ``--db`` URL of the SQLite file *path*."""
    return f"sqlite:///{path}"


def open_local(paths: BatchPaths, desk: str | None = None, operator: str | None = None,
               create: bool = True) -> Store:
    """Open (with *create*, create 0600 with the newest schema) the state's database. A
    schema an older pivtool made is upgraded in place: the file is the batch's own, as a
    state file was (``--db`` databases are upgraded only by 'pivtool db upgrade')."""
    from ...store.api import Store

    return Store.open(sqlite_url(paths.database), desk=desk, operator=operator,
                      create=create, upgrade_older=True)


def imported_name(legacy: Path) -> Path:
    """Where an imported state file goes: ``<name>.imported`` (time-stamped if taken)."""
    target = legacy.with_name(legacy.name + IMPORTED)
    return target if not target.exists() else target.with_name(f"{target.name}-{_stamp()}")


def import_legacy(store: Store, paths: BatchPaths, command: str = "batch enroll"
                  ) -> tuple[ImportResult, Path] | None:
    """Import the JSON state file at the state's name, if there is one, and rename it
    (call under :func:`~pivtool.workflows.batch.state_lock`). Returns what was imported and
    where the file went. Importing is idempotent (users are updated, not duplicated), so a
    crash before the rename only imports again."""
    from ..inventory import import_batch_state

    legacy = paths.state
    if not legacy.is_file():
        return None
    target = imported_name(legacy)
    result = import_batch_state(store, legacy, command=command,
                                note=f"; into {paths.database}, file kept as {target.name}")
    store.meta_put(ROSTER_META, {"roster": result.roster,
                                 "invalid_rows": result.invalid_rows})
    os.replace(legacy, target)
    return result, target
