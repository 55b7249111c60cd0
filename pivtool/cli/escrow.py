"""``pivtool escrow``: read the encrypted PUK escrow that ``enroll --escrow`` writes (the
passphrase handling it shares with ``enroll``, ``recover``, ``batch`` and ``inventory`` is in
``stores.py``)."""

from __future__ import annotations

import click

from .context import CliContext, pass_ctx
from .options import json_option
from .stores import open_escrow, passphrase_file_option

LIST_SCHEMA = "pivtool.escrow-list/1"
ENTRY_SCHEMA = "pivtool.escrow-entry/1"
REVEAL = {"puk": "puk", "mgmt-key": "mgmt_key"}


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
