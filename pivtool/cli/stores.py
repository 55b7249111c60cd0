"""Where commands keep things, opened one way for all of them: the inventory database
(global ``--db`` / ``$PIVTOOL_DB``), the encrypted PUK escrow (a file, or ``db`` for the
escrow in that database) with its passphrase option, and the hook that records
card-changing commands in the inventory (``CliContext.session``).

A helper module: ``enroll``, ``recover``, ``batch``, ``escrow`` and ``inventory`` use it;
command modules do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from .context import CliContext
from .options import F
from .secrets import SecretSpec

if TYPE_CHECKING:
    from ..piv.session import PivSession
    from ..store.api import Store
    from ..workflows.escrow import EscrowFile

ESCROW_PASSPHRASE = SecretSpec("escrow passphrase", "PIVTOOL_ESCROW_PASSPHRASE",
                               "--escrow-passphrase-file")

NO_DB = ("no inventory database: give --db URL (sqlite:///PATH or postgresql://...) or set "
         "PIVTOOL_DB")


def open_store(obj: CliContext, create: bool = True) -> Store:
    """The store the global ``--db`` / ``$PIVTOOL_DB`` names (exit 2 without one)."""
    from ..core.errors import UsageError
    from ..store.api import Store

    if not obj.db:
        raise UsageError(NO_DB)
    return Store.open(obj.db, desk=obj.desk, create=create)


def record_change(obj: CliContext, session: PivSession | None, error: BaseException | None
                  ) -> None:
    """After a card-changing command (``RECORDED_COMMANDS``) with a store configured: read
    the card back and record key, certificates and an audit row. The one hook point for
    every such command (called by ``CliContext.session``)."""
    from ..core.errors import PivToolError, TransportError
    from ..store.engine import StoreError
    from ..workflows.inventory import RECORDED_COMMANDS, record_card, record_failure

    ctx = click.get_current_context(silent=True)
    if not obj.db or ctx is None:
        return
    command = ctx.command_path.split(" ", 1)[1] if " " in ctx.command_path else ""
    if command not in RECORDED_COMMANDS:
        return
    if isinstance(error, click.exceptions.Exit):
        # ctx.exit(N) inside the command: its code says how it went.
        error = None if error.exit_code == 0 else RuntimeError(f"exit {error.exit_code}")
    outcome = "done" if error is None else "failed"
    detail = "" if error is None else (str(error).splitlines() or [type(error).__name__])[0][:300]
    try:
        with open_store(obj) as store:
            if session is None:
                record_failure(store, command, detail)
                return
            try:
                record_card(store, session, command, outcome, detail)
            except (TransportError, PivToolError) as e:
                if isinstance(e, StoreError):
                    raise
                # The card went away (or cannot be read) after the command: audit that.
                record_failure(store, command, f"{detail}; card not read back: {e}".lstrip("; "))
    except StoreError as e:
        if error is not None:
            return  # the command's own error is the one to report
        raise StoreError(f"the card was changed, but the inventory did not record it ({e}); "
                         "'pivtool inventory register' records the card later") from None


def open_escrow(obj: CliContext, path: str, passphrase_file: str | None,
                create: bool = False) -> EscrowFile:
    """Get the passphrase (file option > $PIVTOOL_ESCROW_PASSPHRASE > hidden prompt, typed
    twice for a new file) and check it against an existing file, so a wrong passphrase stops
    a command before it touches the card. *path* ``db`` is the escrow in the inventory
    database (--db / $PIVTOOL_DB)."""
    import os

    from ..core.errors import UsageError
    from ..workflows.escrow import IN_DATABASE, EscrowFile, StoreEscrow

    if path == IN_DATABASE:
        store = open_store(obj)
        try:
            return _unlock(obj, lambda p: StoreEscrow(store, p), passphrase_file, create,
                           f"the inventory database {store.display} holds no escrow yet")
        except BaseException:
            store.close()
            raise
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory, not an escrow file")
    escrow = _unlock(obj, lambda p: EscrowFile(path, p), passphrase_file, create,
                     f"escrow file {path} does not exist")
    if not escrow.exists():
        # The file is written after the card has changed: find an unwritable folder now.
        folder = os.path.dirname(os.path.abspath(path))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"cannot create {path}: folder {folder} missing or not writable")
    return escrow


def _unlock(obj: CliContext, make: Callable[[bytes], EscrowFile], passphrase_file: str | None,
            create: bool, missing: str) -> EscrowFile:
    """The passphrase for the escrow *make* opens: checked against an existing one, or
    long enough for a new one (asked twice)."""
    from ..core.errors import UsageError
    from ..workflows.escrow import check_new_passphrase
    from .secrets import get_secret

    exists = make(b"").exists()
    if not exists and not create:
        raise UsageError(missing)
    passphrase = get_secret(ESCROW_PASSPHRASE, passphrase_file, prompt=obj.interactive,
                            confirm=not exists)
    assert passphrase is not None
    escrow = make(passphrase)
    if exists:
        escrow.verify()
    else:
        check_new_passphrase(passphrase)
    return escrow


def passphrase_file_option(f: F) -> F:
    """``--escrow-passphrase-file FILE``."""
    return click.option("--escrow-passphrase-file", metavar="FILE",
                        help="Read the escrow passphrase from FILE ('-' = stdin) instead of "
                             "$PIVTOOL_ESCROW_PASSPHRASE or a prompt.")(f)
