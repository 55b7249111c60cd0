"""``pivtool inventory``, ``lost``, ``retire`` and ``db``: the key inventory in a database
(``--db URL`` or ``$PIVTOOL_DB``; opened, and card-changing commands recorded, by
``stores.py``)."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import click

from .context import CliContext, pass_ctx
from .graph import graph_options
from .options import json_option, yes_option
from .stores import NO_DB, open_escrow, open_store, passphrase_file_option

if TYPE_CHECKING:
    from ..workflows.lifecycle import LifecycleResult

DB_SCHEMA = "pivtool.db-status/1"
GRANTS_SCHEMA = "pivtool.db-grants/1"
# --------------------------------------------------------------------------------------------
# pivtool inventory


@click.group(short_help="The key inventory: which keys, certificates and PUKs each user has.")
def inventory() -> None:
    """The key inventory in a database: --db URL or $PIVTOOL_DB (sqlite:///PATH, or
    postgresql://... shared by many desks; see docs/fleet.md).

    \b
    pivtool inventory list                  keys, owners, status
    pivtool inventory show SERIAL|UPN       one key or one user, with the audit trail
    pivtool inventory export [--csv]        every key and certificate
    pivtool inventory register              read the inserted card into the inventory
    pivtool inventory import STATE|ESCROW   bring batch state or escrow files in

    Every card-changing command (enroll, recover, reset, certs import/delete, keys
    move/delete) records what it did when a database is configured."""


@inventory.command("list")
@click.option("--owner", metavar="UPN", help="Only the keys of UPN.")
@click.option("--status", type=click.Choice(["active", "lost", "retired", "reset"]),
              help="Only keys in this status.")
@json_option
@pass_ctx
def inventory_list(obj: CliContext, owner: str | None, status: str | None) -> None:
    """List the keys in the inventory."""
    from ..workflows.inventory import LIST_SCHEMA

    with open_store(obj) as store:
        keys = store.key_records(owner=owner, status=status)
        present: dict[int, int] = {}
        for c in store.certificates(status="present"):
            assert c.key_serial is not None
            present[c.key_serial] = present.get(c.key_serial, 0) + 1
    data = {"schema": LIST_SCHEMA, "keys": [{**k.to_json(), "certificates":
                                              present.get(k.serial, 0)} for k in keys]}
    lines = [f"{len(keys)} key(s)."] + [
        f"  {k.serial:>10}  {k.status:<8} {k.owner_upn or '-':<32} {k.firmware or '?':<7} "
        f"{present.get(k.serial, 0)} cert(s)  last seen {k.to_json()['last_seen']} at "
        f"{k.last_desk or '?'}" for k in keys]
    obj.emit(data, "\n".join(lines))


@inventory.command("show")
@click.argument("who", metavar="SERIAL|UPN")
@json_option
@pass_ctx
def inventory_show(obj: CliContext, who: str) -> None:
    """Show one key (by serial) or one user (by UPN): keys, certificates, escrow, audit."""
    from ..workflows.inventory import SHOW_SCHEMA, key_view, user_view

    with open_store(obj) as store:
        if who.isdigit():
            view = {"schema": SHOW_SCHEMA, "serial": int(who), **key_view(store, int(who))}
            keys = [view]
        else:
            view = {"schema": SHOW_SCHEMA, **user_view(store, who)}
            keys = view["keys"]
    lines = [f"user {view['upn']}"] if "upn" in view else []
    for v in keys:
        k = v["key"]
        lines.append(f"serial {k['serial']}: {k['status']}, owner {k['owner_upn'] or '-'}, "
                     f"{k['model'] or '?'} {k['firmware'] or ''} {k['form_factor'] or ''}"
                     .rstrip())
        for c in v["certificates"]:
            lines.append(f"  {c['slot']} {c['status']:<8} {c['subject']}  until "
                         f"{c['not_after']}  sha256 {c['fingerprint'][:16]}...")
        lines.append(f"  escrow: {', '.join(v['escrow']) or 'nothing'}")
    for e in view.get("audit", []):
        lines.append(f"  {e['time']} {e['desk']} {e['operator']}: {e['step']} {e['outcome']}"
                     + (f" — {e['detail']}" if e["detail"] else ""))
    obj.emit(view, "\n".join(lines))


@inventory.command("export")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of JSON.")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE (default: stdout).")
@json_option
@pass_ctx
def inventory_export(obj: CliContext, as_csv: bool, output: str | None) -> None:
    """Export every key and certificate: JSON (the default, or --json: schema
    pivtool.inventory-export/1, one row per certificate), or CSV with --csv."""
    from ..core.errors import UsageError
    from ..workflows.inventory import EXPORT_SCHEMA, export_csv, export_rows
    from .files import write_output

    if as_csv and obj.json:
        raise UsageError("choose one: --csv or --json")

    with open_store(obj) as store:
        rows = export_rows(store)
    text = export_csv(rows) if as_csv else json.dumps(
        {"schema": EXPORT_SCHEMA, "rows": rows}, indent=2) + "\n"
    if output:
        write_output(output, text.encode(), overwrite=True)
    else:
        click.echo(text, nl=False)


@inventory.command("register")
@click.option("--note", metavar="TEXT", help="A note for the key (e.g. where it was bought).")
@json_option
@pass_ctx
def inventory_register(obj: CliContext, note: str | None) -> None:
    """Read the inserted card (enrolled elsewhere, or before the inventory existed) into
    the inventory: serial, model, firmware, form factor, owner (9a UPN), certificates."""
    from ..workflows.inventory import REGISTER_SCHEMA, record_card

    with open_store(obj) as store, obj.session() as s:
        key = record_card(store, s, "register", "done", detail=note or "")
        view = store.certificates(key.serial, status="present")
    data = {"schema": REGISTER_SCHEMA, "key": key.to_json() | {"note": note},
            "certificates": [c.to_json() for c in view]}
    obj.emit(data, f"registered serial {key.serial} (owner {key.owner_upn or '-'}, "
                   f"{len(view)} certificate(s))")


@inventory.command("import")
@click.argument("file")
@click.option("--escrow", "is_escrow", is_flag=True,
              help="FILE is an escrow file: its entries are re-encrypted into the database "
                   "(passphrase: $PIVTOOL_ESCROW_PASSPHRASE or --escrow-passphrase-file, the "
                   "same for file and database).")
@passphrase_file_option
@json_option
@pass_ctx
def inventory_import(obj: CliContext, file: str, is_escrow: bool,
                     escrow_passphrase_file: str | None) -> None:
    """Import a batch state file (with its audit log beside it) or, with --escrow, an
    escrow file. Importing again updates, it does not duplicate users or keys."""
    from ..workflows.inventory import import_batch_state, import_escrow

    if is_escrow:
        from ..workflows.escrow import IN_DATABASE

        source = open_escrow(obj, file, escrow_passphrase_file)
        target = open_escrow(obj, IN_DATABASE, escrow_passphrase_file, create=True)
        try:
            result = import_escrow(target, source)  # type: ignore[arg-type]
        finally:
            target.store.close()  # type: ignore[attr-defined]
    else:
        with open_store(obj) as store:
            result = import_batch_state(store, file)
    obj.emit(result.to_json(), f"imported {file}: {result.users} user(s), {result.keys} "
                               f"key(s), {result.audit} audit row(s), {result.escrow} "
                               "escrow entr(ies)")


# --------------------------------------------------------------------------------------------
# pivtool lost / retire


def _lifecycle(status: str, verb: str) -> click.Command:
    @click.command(verb, short_help=f"Mark a key {status}, revoke its certificates, take "
                                    "its certificateUserIds off the owner.")
    @click.argument("serial", type=int)
    @click.option("--ca", "ca_dir", metavar="DIR",
                  help="Revoke with the lab CA in DIR (passphrase from "
                       "$PIVTOOL_CA_PASSPHRASE or a prompt).")
    @click.option("--revoke-cmd", metavar="CMD",
                  help="Revoke with CMD: certificate PEM on stdin, reason in "
                       "$PIVTOOL_REVOKE_REASON, exit 0 = revoked (run without a shell).")
    @click.option("--revoke-timeout", type=float, default=120.0, show_default=True,
                  help="Seconds to wait for --revoke-cmd.")
    @click.option("--no-revoke", is_flag=True,
                  help="Only mark the key (its certificates are revoked elsewhere).")
    @click.option("--graph-out", metavar="FILE",
                  help="Write the Graph PATCH request for the owner to FILE.")
    @click.option("--graph-unbind", is_flag=True,
                  help="Remove the key's certificateUserIds from the owner in Entra now, "
                       "through Microsoft Graph (read, remove, write, read back; every other "
                       "value stays). Checked before anything changes.")
    @graph_options
    @yes_option
    @json_option
    @pass_ctx
    def command(obj: CliContext, serial: int, ca_dir: str | None, revoke_cmd: str | None,
                revoke_timeout: float, no_revoke: bool, graph_out: str | None,
                graph_unbind: bool, tenant: str | None, client_id: str | None,
                client_secret_file: str | None, client_cert: str | None) -> None:
        from ..core.errors import PivToolError, UsageError
        from ..graph.bind import BIND_PERMISSIONS
        from ..workflows.lifecycle import (
            CommandRevoker,
            LabCARevoker,
            Revoker,
            check_entra,
            end_key,
            plan_end,
        )
        from .files import write_output
        from .graph import flag_client

        if sum(map(bool, (ca_dir, revoke_cmd, no_revoke))) != 1:
            raise UsageError("choose one: --ca DIR, --revoke-cmd CMD or --no-revoke")
        revoker: Revoker | None = None
        if ca_dir:
            from ..certs.ca import LabCA
            from .secrets import SecretSpec, get_secret

            passphrase = None
            if LabCA.is_encrypted(ca_dir):
                spec = SecretSpec("CA passphrase", "PIVTOOL_CA_PASSPHRASE",
                                  "--ca (no file option)")
                passphrase = get_secret(spec, None)
            LabCA.open(ca_dir, passphrase)  # a wrong passphrase stops here (exit 3)
            revoker = LabCARevoker(ca_dir, passphrase)
        elif revoke_cmd:
            revoker = CommandRevoker(revoke_cmd, revoke_timeout)
        # Signed in by check_entra's first read, so that an unreachable Graph is a refusal
        # before anything changed like every other pre-flight failure.
        client = flag_client("--graph-unbind", graph_unbind, tenant=tenant,
                             client_id=client_id, client_secret_file=client_secret_file,
                             client_cert=client_cert, permissions=BIND_PERMISSIONS,
                             sign_in=False)
        with contextlib.ExitStack() as stack:
            if client is not None:
                stack.enter_context(client)
            store = stack.enter_context(open_store(obj))
            plan = plan_end(store, serial, status)
            if client is not None:
                check_entra(client, plan)
            entra = (f" and remove {len(plan.remove_ids)} certificateUserIds value(s) from "
                     f"{plan.owner} in Entra" if client is not None else "")
            if not obj.prompter().confirm(f"Mark serial {serial} {status}, revoke its "
                                          f"certificates{entra}?"):
                raise click.exceptions.Exit(1)
            result = end_key(store, plan, revoker, client)
        graph = result.graph()
        if graph_out and graph is not None:
            write_output(graph_out, (json.dumps(graph, indent=2) + "\n").encode(), overwrite=True)
        obj.emit(result.to_json(), _lifecycle_text(result))
        if not result.ok:
            cause = f" ({result.unbind_error})" if result.unbind_error is not None else ""
            raise PivToolError(result.summary() + cause)

    command.help = (f"Mark the key SERIAL {status} in the inventory, revoke its present "
                    "certificates (--ca DIR or --revoke-cmd CMD), and take its "
                    "certificateUserIds off the owner in Entra: --graph-unbind does it "
                    "through Microsoft Graph (User.ReadWrite.All), otherwise they are "
                    "printed (--graph-out writes the Graph PATCH that keeps only the values "
                    "of the owner's other active keys). The key is marked first, each "
                    "certificate recorded as revoked as soon as it is; audited. Run the "
                    "same command again after any failure: it revokes and removes only what "
                    "is left.\n\n"
                    "Exit: 0 done; 1 a certificate could not be revoked or the Entra unbind "
                    "failed (the line says what was done); 2 bad input, the serial is not in "
                    "the inventory, or the --graph-unbind pre-flight failed (nothing "
                    "changed); 3 the Graph application's credential was refused.")
    return command


def _lifecycle_text(result: LifecycleResult) -> str:
    lines = [f"serial {result.serial}: {result.status}"
             + (f" (owner {result.owner})" if result.owner else "")]
    lines += [f"  {c['slot']} revoked: {c['note']}" for c in result.revoked]
    lines += [f"  {c['slot']} revoked before" for c in result.already_revoked]
    lines += [f"  {c['slot']} NOT revoked: {c['error']}" for c in result.failed]
    lines += [f"  {c['slot']} not revoked: {c['note']}" for c in result.skipped]
    if result.unbind is not None:
        lines.append(f"  removed from {result.owner} in Entra (read back and verified):"
                     if result.unbind.removed else
                     f"  none of the key's values left on {result.owner} in Entra")
        lines += [f"    - {v}" for v in result.unbind.removed]
    elif result.remove_ids:
        lines.append(f"  remove from {result.owner}'s certificateUserIds:")
        lines += [f"    {v}" for v in result.remove_ids]
    if result.unbind_error is not None:
        lines.append(f"  Entra unbind FAILED: {result.unbind_error}")
    lines.append(result.summary())
    return "\n".join(lines)


lost = _lifecycle("lost", "lost")
retire = _lifecycle("retired", "retire")


# --------------------------------------------------------------------------------------------
# pivtool db


@click.group(short_help="The inventory database's schema and permissions.")
def db() -> None:
    """The inventory database (--db URL or $PIVTOOL_DB): schema version, upgrade in place,
    and the PostgreSQL permissions of a desk (docs/fleet.md)."""


@db.command("upgrade")
@json_option
@pass_ctx
def db_upgrade(obj: CliContext) -> None:
    """Create the schema, or upgrade it in place to this pivtool's version (run it as the
    database owner; desks refuse a database at an older schema)."""
    from ..core.errors import UsageError
    from ..store.engine import create_engine, display_url, upgrade

    if not obj.db:
        raise UsageError(NO_DB)
    engine = create_engine(obj.db)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    obj.emit({"schema": DB_SCHEMA, "database": display_url(obj.db), "before": before,
              "revision": after},
             f"{display_url(obj.db)}: schema {before or 'none'} -> {after}"
             if before != after else f"{display_url(obj.db)}: schema {after} is current")


@db.command("status")
@json_option
@pass_ctx
def db_status(obj: CliContext) -> None:
    """Show the schema revision, this pivtool's, and the roster and inventory counts."""
    with open_store(obj, create=False) as store:
        from ..store.engine import head_revision

        counts = store.counts()
        keys = len(store.key_records())
        data: dict[str, Any] = {"schema": DB_SCHEMA, "database": store.display,
                                "revision": head_revision(), "users": counts, "keys": keys}
    obj.emit(data, f"{data['database']}: schema {data['revision']} (current), {keys} key(s), "
                   + ", ".join(f"{k} {v}" for k, v in counts.items()))


@db.command("grants")
@click.option("--role", default="pivtool_desk", show_default=True,
              help="The desk group role to create.")
@click.option("--database", default="pivtool", show_default=True,
              help="The database name.")
@json_option
@pass_ctx
def db_grants(obj: CliContext, role: str, database: str) -> None:
    """Print the PostgreSQL SQL that creates a desk role: claim users and record keys,
    certificates, escrow (ciphertext) and audit rows; never delete, never change an audit
    row, never change the schema. Run it as the owner after 'pivtool db upgrade'."""
    from ..core.errors import UsageError
    from ..store.roles import desk_grants

    try:
        sql = desk_grants(role, database)
    except ValueError as e:
        raise UsageError(str(e)) from None
    obj.emit({"schema": GRANTS_SCHEMA, "role": role, "database": database, "sql": sql},
             sql.rstrip("\n"))
