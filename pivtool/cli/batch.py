"""``pivtool batch``: helpdesk batch enrollment (many keys, many users, unattended)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .context import CliContext, pass_ctx
from .graph import graph_options
from .issuer import build_issuer, issuer_options
from .options import (
    allow_last_try_option,
    json_option,
    new_key_options,
    secret_options,
    yes_option,
)
from .stores import passphrase_file_option

if TYPE_CHECKING:
    from ..piv.constants import KeyType, PinPolicy, TouchPolicy
    from ..store.api import Store
    from ..workflows.batch import (
        BatchEvent,
        BatchPaths,
        BatchRunner,
        BatchState,
        CardSource,
        SecretPolicy,
    )
    from ..workflows.batch.graphbind import GraphBinder

SUMMARY_SCHEMA = "pivtool.batch-summary/1"
STATUS_SCHEMA = "pivtool.batch-status/1"
REPORT_SCHEMA = "pivtool.batch-report-files/1"
RELEASE_SCHEMA = "pivtool.batch-release/1"


@click.group(short_help="Enroll a roster of users onto many keys, readers in parallel.")
@click.pass_context
def batch(ctx: click.Context) -> None:
    """Helpdesk batch enrollment: a roster of users, many keys, several readers at once.

    \b
    pivtool batch enroll ROSTER.csv --ca DIR --pin-letters DIR --escrow FILE --yes
    pivtool batch status --state FILE     (progress per user)
    pivtool batch report --state FILE     (rewrite the report and Graph $batch files)
    pivtool batch release --state FILE UPN  (unbind a user whose key is lost)

    See docs/batch.md."""
    obj = ctx.find_object(CliContext)
    if obj is not None and obj.sim is not None:
        from ..core.errors import UsageError

        # --sim names one card; batch works on many. Never ignore it silently (the batch
        # would otherwise take whatever keys the machine's readers hold).
        if ctx.invoked_subcommand == "enroll":
            raise UsageError("--sim names one virtual card; batch enroll takes a pile of "
                             "them: use 'batch enroll --sim-pile DIR' (every *.json card "
                             "in DIR) instead of --sim")
        raise UsageError(f"batch {ctx.invoked_subcommand} reads the state file, not a card: "
                         "drop --sim")


def _default_state(roster: str) -> str:
    return f"{Path(roster).stem}.state.json"


def _readers(values: tuple[str, ...]) -> list[str]:
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return [] if any(r.casefold() == "all" for r in out) else out


class _Renderer:
    """Prints events: JSON lines on stdout (``--json``), or text with per-reader progress on
    stderr."""

    def __init__(self, as_json: bool, state: BatchState) -> None:
        self.json = as_json
        self.state = state
        self.lock = threading.Lock()

    def __call__(self, event: BatchEvent) -> None:
        with self.lock:
            if self.json:
                sys.stdout.write(json.dumps(event.to_json()) + "\n")
                sys.stdout.flush()
                return
            self._text(event)

    def _text(self, e: BatchEvent) -> None:
        where = f"[{e.reader}]" if e.reader else "[batch]"
        key = f" serial {e.serial}" if e.serial is not None else ""
        d = e.data
        line: str | None = None
        if e.kind == "inserted":
            line = f"{where} key inserted:{key}"
        elif e.kind == "enrolling":
            how = "finishing the enrollment of" if d.get("resume") else "enrolling"
            line = f"{where}{key}: {how} {e.upn} (attempt {d.get('attempt')})"
        elif e.kind == "step":
            mark = {"done": "ok", "pending": "..", "skipped": "--"}.get(d["status"], "!!")
            line = f"{where}   [{mark}] {d['step']}: {d['detail']}"
        elif e.kind == "wiped":
            line = f"{where}{key}: wiped (--reassign)"
        elif e.kind == "done":
            line = f"{where}{key}: ENROLLED {e.upn}"
        elif e.kind == "failed":
            step = f" at '{d['step']}'" if d.get("step") else ""
            line = f"{where}{key}: FAILED{step}: {d.get('error')}"
        elif e.kind == "refused":
            line = f"{where}{key}: not enrolled: {d.get('reason')}"
        elif e.kind == "graph-bound":
            what = (f"{len(d['added'])} value(s) added" if d.get("patched")
                    else "already bound")
            line = f"{where}{key}: Entra certificateUserIds of {e.upn}: {what}"
        elif e.kind == "graph-failed":
            line = (f"{where}{key}: Entra binding of {e.upn} FAILED (enrollment kept; a "
                    f"re-run binds it): {d.get('error')}")
        elif e.kind == "remove-card":
            counts = self.state.counts()
            line = (f"{where}{key}: remove the key.   Progress: {counts['done']} done, "
                    f"{counts['pending'] + counts['incomplete']} to do, "
                    f"{counts['failed']} failed, {counts['invalid']} bad rows")
        elif e.kind == "stopped":
            line = f"[batch] stopped ({d['reason']})"
            for reader, row in sorted(d["per_reader"].items()):
                line += (f"\n  {reader}: {row['done']} done, {row['failed']} failed, "
                         f"{row['refused']} refused")
        if line is not None:
            click.echo(line, err=True)


def _collect_secrets(obj: CliContext, pin_letters: str | None, escrow: bool,
                     prompt: bool) -> SecretPolicy:
    """The batch's secrets (which ones it needs is :meth:`SecretPolicy.gather`'s rule):
    file option, then environment; what must be asked is typed twice on a terminal."""
    from ..workflows.batch import SecretPolicy
    from .secrets import SPECS, get_secret

    files = obj.secret_files

    def optional(name: str) -> bytes | None:
        return get_secret(SPECS[name], files.get(name), prompt=False, required=False)

    def ask(name: str) -> bytes | None:
        return get_secret(SPECS[name], files.get(name), prompt=prompt, confirm=True)

    return SecretPolicy.gather(Path(pin_letters) if pin_letters else None, escrow,
                               optional, ask)


# The outputs batch enroll writes and batch report rewrites: one spelling for both.
REPORT_OPTION = click.option(
    "--report", "report_path", metavar="FILE",
    help="Report base name: writes FILE.json and FILE.csv (default: <state>.report.*).")
GRAPH_OUT_OPTION = click.option(
    "--graph-out", "graph_path", metavar="PREFIX",
    help="Microsoft Graph $batch bodies, 20 PATCH requests per file: PREFIX-001.json... "
         "(default: <state>.graph-NNN.json).")


@batch.command("enroll")
@click.argument("roster", metavar="ROSTER.csv")
@issuer_options(csr_out=False, cmd_note=" Runs once per key, in parallel across readers.")
@click.option("--readers", "readers", multiple=True, metavar="all|NAME",
              help="Readers to watch: 'all' (default) or a name substring; repeatable or "
                   "comma-separated. One worker per reader, in parallel.")
@click.option("--state", "state_path", metavar="FILE",
              help="The batch's state (default: <roster>.state.json in the current "
                   "directory): kept in the SQLite database beside it, FILE with .json "
                   "replaced by .db (a JSON state file an older pivtool left there is "
                   "imported once). Re-run with the same --state to resume.")
@click.option("--state-format", type=click.Choice(["sqlite", "json"]), default=None,
              help="Where the state lives: 'sqlite' (default: the database beside "
                   "--state) or 'json' (the state file itself, rewritten atomically after "
                   "every step, as before pivtool kept it in SQLite). Not with --db.")
@click.option("--audit", "audit_path", metavar="FILE",
              help="Audit log, JSON lines (default: <state>.audit.jsonl).")
@REPORT_OPTION
@GRAPH_OUT_OPTION
@click.option("--pin-letters", metavar="DIR",
              help="A random 8-digit PIN per user, written to a 0600 PIN letter in DIR "
                   "(created 0700) before it is set. Without it, one PIN for all: "
                   "$PIVTOOL_NEW_PIN or --new-pin-file.")
@click.option("--escrow", "escrow_path", metavar="FILE",
              help="A random PUK per key (unless $PIVTOOL_NEW_PUK is set), written to the "
                   "encrypted escrow FILE before it is set, with any management key not "
                   "stored PIN-protected. Without it, one PUK for all: $PIVTOOL_NEW_PUK.")
@passphrase_file_option
@new_key_options(roster=True)
@click.option("--operator", metavar="NAME",
              help="Who runs the batch, for the audit log (default: $USER).")
@click.option("--reassign", is_flag=True,
              help="Wipe (PIV reset, certificates backed up first) a key enrolled for someone "
                   "else and enroll it for the next pending user. Without it such keys are "
                   "refused.")
@click.option("--sim-pile", metavar="DIR",
              help="Use the virtual YubiKeys in DIR (every *.json from 'pivtool sim create') "
                   "instead of PC/SC readers: virtual readers take them from the pile in "
                   "turn. No pcscd needed (demos, tests, training).")
@click.option("--sim-readers", type=click.IntRange(min=1, max=16), default=2,
              show_default=True, metavar="N", help="Virtual readers for --sim-pile.")
@click.option("--sim-pace", type=click.FloatRange(min=0, max=60), default=0.0,
              show_default=True, metavar="S",
              help="Seconds the virtual operator takes to swap a key (--sim-pile).")
@click.option("--graph-bind", is_flag=True,
              help="Bind each user's certificateUserIds (high-affinity values) in Entra "
                   "through Microsoft Graph right after their enrollment, retried with "
                   "backoff; a failed bind never undoes the enrollment and a re-run binds "
                   "what is missing. Needs the app's secret ($PIVTOOL_CLIENT_SECRET or "
                   "--client-secret-file) or --client-cert (see 'pivtool entra bind').")
@graph_options
@click.option("--max-cards", type=click.IntRange(min=1), metavar="N",
              help="Stop after N keys were enrolled.")
@click.option("--timeout", "idle_timeout", type=click.FloatRange(min=0), metavar="S",
              help="Stop after S seconds without a card event or enrollment.")
@allow_last_try_option
@secret_options("new_pin", "new_puk", "pin", "puk", "mgmt_key")
@yes_option
@json_option
@pass_ctx
def batch_enroll(obj: CliContext, roster: str, ca_dir: str | None, issuer_cmd: str | None,
                 issuer_timeout: float, ca_bundle: str | None, days: int,
                 readers: tuple[str, ...], state_path: str | None,
                 state_format: str | None, audit_path: str | None,
                 report_path: str | None, graph_path: str | None, pin_letters: str | None,
                 escrow_path: str | None, escrow_passphrase_file: str | None,
                 algorithm: KeyType, pin_policy: PinPolicy, touch_policy: TouchPolicy,
                 policies: tuple[str, ...], macos: bool, allow_non_ios: bool,
                 operator: str | None, reassign: bool, sim_pile: str | None,
                 sim_readers: int, sim_pace: float, graph_bind: bool, tenant: str | None,
                 client_id: str | None, client_secret_file: str | None,
                 client_cert: str | None, max_cards: int | None,
                 idle_timeout: float | None, allow_last_try: bool) -> None:
    """Enroll the users of ROSTER.csv onto the YubiKeys inserted into the readers.

    \b
    ROSTER.csv: a header row, then one user per row. Columns: upn (required), email,
    display name, serial (pin the user to that key), algorithm, policies, pin policy,
    touch policy. A bad row is reported and skipped; the others proceed.

    \b
    Insert a key: the next pending user is enrolled onto it (pivtool enroll's steps),
    then remove it and insert the next. Readers work in parallel. Kill the batch or
    pull a key at any moment: re-run with the same --state and it continues; a key
    already enrolled for someone is refused (unless --reassign), a half-enrolled key
    is finished for the same user. The state is a SQLite file beside --state
    (<roster>.state.db), or the database of --db, or with --state-format json the
    state file itself.

    \b
    Stops when every user is done (or failed), after --max-cards N keys, after
    --timeout S idle seconds, when a --sim-pile is used up, or on Ctrl-C (keys in
    progress finish first; a second Ctrl-C aborts, the state is saved after every
    step). Outputs: state, audit log (JSON lines), report (JSON + CSV) with
    certificateUserIds, Graph $batch files, PIN letters, escrow. With --json,
    progress events are printed as JSON lines.

    \b
    Exit: 0 every user enrolled (or --max-cards reached) with nothing failed; 1 a user
    failed, a roster row is bad, or users are left when --timeout (or an empty
    --sim-pile) stopped the batch; 2 bad options/roster or the state file is in
    use; 5 no PC/SC service; 130 Ctrl-C."""
    from ..core.errors import UsageError
    from ..workflows.batch import (
        BatchOptions,
        BatchPaths,
        BatchRunner,
        BatchState,
        prepare_letter_dir,
        state_lock,
        write_reports,
    )
    from ..workflows.roster import RosterDefaults, load_roster

    if bool(ca_dir) == bool(issuer_cmd):
        raise UsageError("choose exactly one issuer: --ca DIR or --issuer-cmd CMD")
    for opt in ("sim_readers", "sim_pace"):
        if sim_pile is None and click.get_current_context().get_parameter_source(
                opt) is click.core.ParameterSource.COMMANDLINE:
            raise UsageError(f"--{opt.replace('_', '-')} needs --sim-pile DIR")
    interactive = obj.interactive and not obj.yes
    defaults = RosterDefaults(
        algorithm=algorithm, pin_policy=pin_policy, touch_policy=touch_policy,
        policies=list(policies), allow_non_ios=allow_non_ios)
    rows = load_roster(roster, defaults)
    issuer = build_issuer(ca_dir, issuer_cmd, issuer_timeout, ca_bundle, days)
    assert issuer is not None
    issuer.preflight()  # the CA opens (passphrase), the command exists: before any key
    paths = BatchPaths.derive(state_path or _default_state(roster), audit_path, report_path,
                              graph_path, pin_letters)
    fmt = _enroll_format(obj, state_format)
    escrow = None
    if escrow_path:
        from .stores import open_escrow

        escrow = open_escrow(obj, escrow_path, escrow_passphrase_file, create=True)
    secrets_policy = _collect_secrets(obj, pin_letters, escrow is not None, interactive)
    secrets_policy.check(escrow)
    if paths.pin_letters is not None:
        prepare_letter_dir(paths.pin_letters)
    binder = _graph_binder(graph_bind, tenant, client_id, client_secret_file, client_cert)
    options = BatchOptions(
        issuer=issuer, secrets=secrets_policy, readers=_readers(readers), escrow=escrow,
        reassign=reassign, max_cards=max_cards, idle_timeout=idle_timeout,
        operator=operator or os.environ.get("USER") or "unknown",
        allow_last_try=allow_last_try, macos=macos, allow_non_ios=allow_non_ios,
        graph=binder)
    store = _open_db(obj, operator)  # a stale schema is refused here, before any card
    source = _card_source(sim_pile, sim_readers, sim_pace)
    with state_lock(paths), contextlib.ExitStack() as stack:
        if store is not None:
            stack.callback(store.close)
        if fmt == "sqlite":
            store = _open_local(obj, paths, operator, stack)
        if store is not None:
            from ..workflows.batch.dbstate import DbBatchState

            state: BatchState = DbBatchState.open(
                store, path=paths.database if fmt == "sqlite" else None,
                audit_file=paths.audit if fmt == "sqlite" else None)
            stack.callback(state.close)  # type: ignore[attr-defined]
        else:
            state = BatchState.load(paths.state)
        state.merge_roster(str(roster), rows)
        counts = state.counts()
        if not obj.json:
            click.echo(f"Roster {roster}: {counts['pending']} to enroll, "
                       f"{counts['incomplete']} to finish, {counts['done']} done, "
                       f"{counts['invalid']} bad row(s).", err=True)
            for bad in state.doc["invalid_rows"]:
                click.echo(f"  skipped: {bad['error']}", err=True)
        if not obj.yes:
            what = "Enroll them" + (" (keys enrolled for others will be WIPED)"
                                    if reassign else "")
            if not obj.prompter().confirm(f"{what}?"):
                raise click.exceptions.Exit(1)
        renderer = _Renderer(obj.json, state)
        runner = BatchRunner(state, paths, options, source, renderer,
                             audit=getattr(state, "audit", None))
        if not obj.json:
            click.echo("Taking keys from the pile (Ctrl-C stops)..." if sim_pile else
                       "Waiting for keys (Ctrl-C stops)...", err=True)
        with _GracefulSignals(runner):
            summary = runner.run()
        written = write_reports(state, paths)
    data = {"schema": SUMMARY_SCHEMA, "event": "summary", **summary.to_json(),
            "state": state.name,
            "audit": str(paths.audit), "outputs": [str(p) for p in written]}
    if obj.json:
        click.echo(json.dumps(data))
    else:
        click.echo(f"Done: {summary.counts['done']} enrolled, {summary.counts['pending']} "
                   f"pending, {summary.counts['incomplete']} incomplete, "
                   f"{summary.counts['failed']} failed, {summary.counts['invalid']} bad "
                   f"row(s)."
                   + (f" Entra: {summary.graph['bound']} bound, {summary.graph['failed']} "
                      "bind(s) failed." if summary.graph is not None else "")
                   + f"\nReports: {', '.join(str(p) for p in written)}", err=True)
    ctx = click.get_current_context()
    if summary.reason == "interrupted":
        ctx.exit(130)
    if not summary.ok or (summary.reason in ("timeout", "pile-empty")
                          and state.open_users()):
        ctx.exit(1)


def _enroll_format(obj: CliContext, state_format: str | None) -> str:
    """Where ``batch enroll`` keeps its state: ``db`` (--db), ``sqlite`` (the default
    database beside --state) or ``json`` (the state file)."""
    from ..core.errors import UsageError

    if obj.db:
        if state_format is not None:
            raise UsageError("--state-format is for a state beside --state; with --db the "
                             "state is in that database")
        return "db"
    return state_format or "sqlite"


def _open_local(obj: CliContext, paths: BatchPaths, operator: str | None,
                stack: contextlib.ExitStack) -> Store:
    """Open the default state's database (under the state lock) and import a JSON state
    file an older pivtool left at the state's name."""
    from ..workflows.batch.local import import_legacy, open_local

    store = open_local(paths, obj.desk, operator)
    stack.callback(store.close)
    done = import_legacy(store, paths)
    if done is not None and not obj.json:
        result, kept = done
        click.echo(f"Imported the state file {paths.state} ({result.users} user(s)) into "
                   f"{paths.database}; the file is kept as {kept}.", err=True)
    return store


def _graph_binder(graph_bind: bool, tenant: str | None, client_id: str | None,
                  client_secret_file: str | None, client_cert: str | None) -> GraphBinder | None:
    """``--graph-bind``: the Graph client, signed in before the first key is touched (a
    wrong secret or tenant ends the batch here, exit 3 or 2)."""
    from ..graph.bind import BIND_PERMISSIONS
    from ..workflows.batch.graphbind import ClientBinder
    from .graph import flag_client

    client = flag_client("--graph-bind", graph_bind, tenant=tenant, client_id=client_id,
                         client_secret_file=client_secret_file, client_cert=client_cert,
                         permissions=BIND_PERMISSIONS, unattended=True)
    return None if client is None else ClientBinder(client)


def _card_source(sim_pile: str | None, sim_readers: int, sim_pace: float) -> CardSource:
    """The PC/SC readers, or the virtual pile of ``--sim-pile``."""
    from ..connect import SimPileSource, sim_faults_from_env

    if sim_pile is None:
        from ..pcsc import PcscCardSource

        return PcscCardSource()
    sim_faults_from_env()  # a malformed fault plan is bad input before any card is touched
    return SimPileSource(sim_pile, sim_readers, faults=sim_faults_from_env, pace=sim_pace)


class _GracefulSignals:
    """First Ctrl-C (or SIGTERM): stop taking keys, let keys in progress finish. Second:
    abort at once (the state file is already consistent)."""

    def __init__(self, runner: BatchRunner) -> None:
        self.runner = runner
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.runner._stop_requested.is_set():
            raise KeyboardInterrupt
        self.runner.request_stop()
        click.echo("\nStopping: keys in progress finish first (Ctrl-C again to abort).",
                   err=True)

    def __enter__(self) -> _GracefulSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


def _open_db(obj: CliContext, operator: str | None = None) -> Any:
    """The inventory database's store when --db / $PIVTOOL_DB is given (the batch state
    then lives there, shared by every desk), else None."""
    if not obj.db:
        return None
    from .stores import open_store

    store = open_store(obj)
    if operator:
        store.operator = operator
    return store


def _state_kind(obj: CliContext, state_path: str | None, state_format: str | None
                ) -> tuple[str, BatchPaths | None]:
    """Which state ``batch status|report|release`` read: ``db`` (--db), ``sqlite`` (the
    database beside --state) or ``json`` (the state file); without --state-format, the
    database when it exists, else the state file (a batch of an older pivtool)."""
    from ..core.errors import UsageError
    from ..workflows.batch import BatchPaths

    if obj.db:
        if state_format is not None:
            raise UsageError("--state-format is for a state beside --state; with --db the "
                             "state is in that database")
        return "db", None
    if state_path is None:
        raise UsageError("give --state FILE (the batch's --state), or --db URL for a batch "
                         "in the inventory database")
    paths = BatchPaths.derive(state_path)
    db, file = paths.database.exists(), paths.state.is_file()
    if state_format == "sqlite" or (state_format is None and db):
        if not db:
            raise UsageError(f"no batch state at {paths.database}")
        return "sqlite", paths
    if not file:
        where = paths.state if state_format == "json" else f"{paths.database} or {paths.state}"
        raise UsageError(f"no batch state at {where}")
    return "json", paths


def _load_state(obj: CliContext, state_path: str | None, state_format: str | None,
                stack: contextlib.ExitStack) -> BatchState:
    from ..workflows.batch import BatchState
    from ..workflows.batch.dbstate import DbBatchState

    kind, paths = _state_kind(obj, state_path, state_format)
    if kind == "json":
        assert paths is not None
        return BatchState.load(paths.state)
    if kind == "db":
        store = _open_db(obj)
    else:
        from ..workflows.batch.local import open_local

        assert paths is not None
        store = open_local(paths, obj.desk, create=False)
    stack.callback(store.close)
    return DbBatchState(store, path=paths.database if paths is not None else None)


STATE_HELP = ("The batch's --state: its SQLite database beside it (X.state.db for "
              "X.state.json) or, before the first run of this pivtool, the state file; not "
              "with --db, where the whole roster of every desk is in the database.")
FORMAT_OPTION = click.option(
    "--state-format", type=click.Choice(["sqlite", "json"]), default=None,
    help="Read the database beside --state, or the JSON state file (default: the "
         "database if there is one).")


@batch.command("status")
@click.option("--state", "state_path", metavar="FILE", help=STATE_HELP)
@FORMAT_OPTION
@json_option
@pass_ctx
def batch_status(obj: CliContext, state_path: str | None, state_format: str | None) -> None:
    """Show each user's progress from the batch's state or the database (safe while a
    batch runs)."""
    with contextlib.ExitStack() as stack:
        state = _load_state(obj, state_path, state_format, stack)
        _status(obj, state)


def _status(obj: CliContext, state: BatchState) -> None:
    records, counts = list(state.users.values()), state.counts()  # one read each
    users = [{"upn": u.upn, "status": u.status, "serial": u.serial,
              "reader": u.reader, "attempts": u.attempts, "last_step": u.last_step,
              "error": u.error, "graph": (u.graph or {}).get("status")}
             for u in records]
    data = {"schema": STATUS_SCHEMA, "state": state.name, "counts": counts,
            "users": users, "invalid_rows": state.doc["invalid_rows"]}
    lines = [", ".join(f"{k}: {v}" for k, v in counts.items())]
    for u in records:
        extra = f" last step '{u.last_step}'" if u.last_step else ""
        err = f" — {u.error}" if u.error else ""
        serial = f" serial {u.serial}" if u.serial else ""
        lines.append(f"  {u.status:<10} {u.upn}{serial}{extra}{err}")
    for bad in state.doc["invalid_rows"]:
        lines.append(f"  {'invalid':<10} {bad['error']}")
    obj.emit(data, "\n".join(lines))


@batch.command("report")
@click.option("--state", "state_path", metavar="FILE", help=STATE_HELP)
@REPORT_OPTION
@GRAPH_OUT_OPTION
@FORMAT_OPTION
@json_option
@pass_ctx
def batch_report(obj: CliContext, state_path: str | None, report_path: str | None,
                 graph_path: str | None, state_format: str | None) -> None:
    """(Re)write the report and the Graph $batch files from the batch's state — e.g. after
    a batch was killed — or, with --db, for the whole roster of every desk."""
    from ..workflows.batch import BatchPaths, write_reports

    paths = BatchPaths.derive(state_path or "batch", report=report_path, graph=graph_path)
    with contextlib.ExitStack() as stack:
        state = _load_state(obj, state_path, state_format, stack)
        written = write_reports(state, paths)
    obj.emit({"schema": REPORT_SCHEMA, "state": state.name,
              "outputs": [str(p) for p in written]}, "\n".join(str(p) for p in written))


@batch.command("release")
@click.option("--state", "state_path", metavar="FILE", help=STATE_HELP)
@FORMAT_OPTION
@click.argument("upn")
@yes_option
@json_option
@pass_ctx
def batch_release(obj: CliContext, state_path: str | None, state_format: str | None,
                  upn: str) -> None:
    """Unbind UPN from a key that holds part of their enrollment (lost, broken, or
    failed), so the next run enrolls them on another key. The old key stays as it is:
    wipe it with 'pivtool reset', or let a batch with --reassign take it. With --db any
    desk may take the user next (a user another desk holds under a live lease is
    refused)."""
    from ..core.errors import UsageError
    from ..workflows.batch import DONE, PENDING, AuditLog, BatchState, state_lock

    operator = os.environ.get("USER") or "unknown"
    kind, paths = _state_kind(obj, state_path, state_format)
    if kind != "json":
        with contextlib.ExitStack() as stack:
            from ..workflows.batch.dbstate import DbBatchState

            state = _load_state(obj, state_path, state_format, stack)
            assert isinstance(state, DbBatchState)
            where = "for any desk" if kind == "db" else f"in {state.name}"
            if not obj.prompter().confirm(f"Release {upn} {where}?"):
                raise click.exceptions.Exit(1)
            was = state.release(upn, operator)
        if paths is not None:  # the default state keeps the audit file too
            AuditLog(paths.audit, operator).write("release", "done", serial=was.serial,
                                                  upn=was.upn)
        obj.emit({"schema": RELEASE_SCHEMA, "upn": was.upn, "released_serial": was.serial,
                  "status": PENDING}, f"{upn} released from serial {was.serial}; pending again.")
        return
    assert paths is not None
    with state_lock(paths):
        file_state = BatchState.load(paths.state)
        user = file_state.find(upn)
        if user is None:
            raise UsageError(f"{upn} is not in {paths.state}")
        if user.status in (PENDING, DONE):
            raise UsageError(f"{upn} is {user.status}; only incomplete or failed users "
                             "can be released")
        if not obj.prompter().confirm(f"Release {upn} from serial {user.serial}?"):
            raise click.exceptions.Exit(1)
        old = user.serial
        user.status, user.serial, user.attempts, user.error = PENDING, None, 0, None
        file_state.save()
        AuditLog(paths.audit, operator).write("release", "done", serial=old, upn=user.upn)
    obj.emit({"schema": RELEASE_SCHEMA, "upn": user.upn, "released_serial": old,
              "status": PENDING}, f"{upn} released from serial {old}; pending again.")
