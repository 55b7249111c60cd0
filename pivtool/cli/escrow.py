"""``pivtool escrow``: read the encrypted PUK escrow that ``enroll --escrow`` writes.

Also home of the escrow passphrase handling shared by ``enroll --escrow`` and
``recover --escrow``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from .context import CliContext, pass_ctx
from .options import F, json_option
from .secrets import SecretSpec

if TYPE_CHECKING:
    from ..workflows.escrow import EscrowFile

ESCROW_PASSPHRASE = SecretSpec("escrow passphrase", "PIVTOOL_ESCROW_PASSPHRASE",
                               "--escrow-passphrase-file")
LIST_SCHEMA = "pivtool.escrow-list/1"
ENTRY_SCHEMA = "pivtool.escrow-entry/1"
REVEAL = {"puk": "puk", "mgmt-key": "mgmt_key"}


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
        from .inventory import open_store

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


@click.group(short_help="Read the encrypted PUK escrow that 'enroll --escrow' writes.")
def escrow() -> None:
    """Read the encrypted PUK escrow written by 'pivtool enroll --escrow FILE'.

    \b
    The file (scrypt + AES-256-GCM, mode 0600) holds, per YubiKey serial, the PUK and a
    management key that is not stored PIN-protected on the card. Nothing secret is printed
    unless asked for by name with 'show --reveal'. Passphrase: $PIVTOOL_ESCROW_PASSPHRASE,
    --escrow-passphrase-file FILE, or a hidden prompt. A wrong passphrase exits with 3; a
    file that was altered or is corrupt exits with 2."""


@escrow.command("list")
@click.argument("file")
@passphrase_file_option
@json_option
@pass_ctx
def escrow_list(obj: CliContext, file: str, escrow_passphrase_file: str | None) -> None:
    """List the serials in FILE with UPN, dates and which secrets are present (never the
    values)."""
    ef = open_escrow(obj, file, escrow_passphrase_file)
    entries = sorted(ef.read(), key=lambda e: e.serial)
    data = {"schema": LIST_SCHEMA, "file": file,
            "entries": [e.to_public_json() for e in entries]}
    lines = [f"{len(entries)} key(s) in {file}:"] if entries else [f"{file} holds no keys."]
    for e in entries:
        held = [n for n, ok in (("PUK", e.puk), ("management key", e.mgmt_key)) if ok]
        lines.append(f"  {e.serial:>10}  {e.upn or '-':<32} updated {e.updated}  "
                     f"holds: {', '.join(held) or 'nothing'}")
    obj.emit(data, "\n".join(lines))


@escrow.command("show")
@click.argument("file")
@click.argument("serial", type=int)
@click.option("--reveal", "reveal", multiple=True, type=click.Choice(sorted(REVEAL)),
              help="Print this secret's value (repeatable). Without it no secret is "
                   "printed.")
@passphrase_file_option
@json_option
@pass_ctx
def escrow_show(obj: CliContext, file: str, serial: int, reveal: tuple[str, ...],
                escrow_passphrase_file: str | None) -> None:
    """Show the entry for SERIAL in FILE; --reveal puk / --reveal mgmt-key prints that
    secret."""
    from ..core.errors import UsageError

    ef = open_escrow(obj, file, escrow_passphrase_file)
    entry = ef.get(serial)
    if entry is None:
        raise UsageError(f"{file} holds no entry for serial {serial}")
    values = {"puk": entry.puk, "mgmt_key": entry.mgmt_key}
    revealed: dict[str, str] = {}
    for name in reveal:
        value = values[REVEAL[name]]
        if value is None:
            raise UsageError(f"{file} holds no {name} for serial {serial}")
        revealed[REVEAL[name]] = value
    data = {"schema": ENTRY_SCHEMA, **entry.to_public_json(), "revealed": revealed}
    lines = [f"serial {entry.serial}: UPN {entry.upn or '-'}",
             f"  created {entry.created}, updated {entry.updated}"]
    for label, key, opt in (("PUK", "puk", "puk"), ("management key", "mgmt_key", "mgmt-key")):
        if key in revealed:
            lines.append(f"  {label}: {revealed[key]}")
        elif values[key] is not None:
            lines.append(f"  {label}: escrowed (--reveal {opt} prints it)")
        else:
            lines.append(f"  {label}: not escrowed")
    if entry.mgmt_key_algorithm and (entry.mgmt_key is not None):
        lines.append(f"  management key algorithm: {entry.mgmt_key_algorithm}")
    obj.emit(data, "\n".join(lines))
