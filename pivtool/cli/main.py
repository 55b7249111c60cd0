"""``pivtool`` command line: parse, call a workflow, render text or JSON, pick the exit code.

Subcommands are imported only when used, so ``pivtool --version`` stays fast (no
cryptography, no pyscard at start-up)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .. import __version__
from .context import CliContext
from .exitcodes import EXIT_HELP, Exit, blocked_hint, exit_code_for

#: command name -> "module:attribute" under pivtool.cli
COMMANDS: dict[str, str] = {
    "enroll": "enroll:enroll",
    "info": "info:info",
    "pin": "access:pin",
    "puk": "access:puk",
    "mgmt-key": "access:mgmt_key",
    "reset": "access:reset",
    "list": "info:list_cmd",
    "sim": "sim:sim",
    "recover": "recover:recover",
    "escrow": "escrow:escrow",
    "ca": "ca:ca",
    "entra": "entra:entra",
    "check": "check:check",
    "diagnose": "check:diagnose",
    "keys": "keys:keys",
    "certs": "certs:certs",
    "objects": "objects:objects",
    "batch": "batch:batch",
    "completion": "completion:completion",
    "inventory": "inventory:inventory",
    "lost": "inventory:lost",
    "retire": "inventory:retire",
    "db": "inventory:db",
}

#: ``pivtool --help`` lists the commands in these groups, in this order (every command in
#: :data:`COMMANDS` is in exactly one; ``tests/cli/test_review_ux_cli.py`` checks it).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Set up a key for Entra CBA", ("enroll", "check")),
    ("Step by step", ("pin", "puk", "mgmt-key", "keys", "certs", "objects")),
    ("A user locked the key", ("recover", "reset")),
    ("Look at a key", ("info", "list", "entra", "diagnose")),
    ("Helpdesk: many keys", ("batch", "escrow", "ca")),
    ("Inventory: keys across desks and years", ("inventory", "lost", "retire", "db")),
    ("Other", ("sim", "completion")),
)

#: Commands that never open a card: a global ``--sim`` (or ``--reader``/``--serial``) given
#: to them is refused, never silently ignored.
NO_CARD = frozenset({"ca", "escrow", "completion", "sim", "lost", "retire", "db"})

#: Commands whose own output already says what to do about a blocked PIN or PUK.
NO_HINT = frozenset({"recover", "reset", "batch"})


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; pivtool's own errors become one line on stderr and the
        documented exit code (the single place where that mapping happens)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:
            if not _is_known(e):
                raise
            from .render import untrusted

            # One line whatever the error quotes (a CN, a file's content...).
            message = f"Error: {untrusted(e)}"
            hint = blocked_hint(e) if ctx.invoked_subcommand not in NO_HINT else None
            if hint and hint not in message:
                message += f"; {hint}"
            click.echo(message, err=True)
            ctx.exit(exit_code_for(e))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands grouped by task (:data:`SECTIONS`), not alphabetically."""
        if self.lazy is not COMMANDS:
            return super().format_commands(ctx, formatter)
        name_width = max(len(n) for n in self.lazy)
        limit = max(formatter.width - formatter.current_indent - name_width - 6, 40)
        for title, names in SECTIONS:
            rows = []
            for name in names:
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name.ljust(name_width), cmd.get_short_help_str(limit=limit)))
            with formatter.section(title):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            mod = importlib.import_module(f"pivtool.cli.{module}")
            cmd = getattr(mod, attr)
            assert isinstance(cmd, click.Command)
            return cmd
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, epilog=EXIT_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--reader", "-r", metavar="NAME",
              help="Reader name (case-insensitive substring matching exactly one reader).")
@click.option("--serial", "-s", type=int, metavar="N", help="YubiKey serial number.")
@click.option("--sim", metavar="STATE_FILE",
              help="Use the virtual YubiKey stored in STATE_FILE (see 'pivtool sim create').")
@click.option("--json", "json_", is_flag=True,
              help="Machine-readable output: one JSON document on stdout (messages and "
                   "errors stay on stderr). Also accepted after the command.")
@click.option("--db", metavar="URL", envvar="PIVTOOL_DB",
              help="The key inventory database (sqlite:///PATH or postgresql://...; "
                   "$PIVTOOL_DB). Card-changing commands record what they did in it.")
@click.option("--desk", metavar="NAME", envvar="PIVTOOL_DESK",
              help="This desk's name in the inventory and its audit trail (default: the "
                   "host name; $PIVTOOL_DESK).")
@click.option("-v", "--verbose", count=True,
              help="Log to stderr; includes the APDU trace (secrets redacted).")
@click.version_option(__version__, prog_name="pivtool")
@click.pass_context
def cli(ctx: click.Context, reader: str | None, serial: int | None, sim: str | None,
        json_: bool, db: str | None, desk: str | None, verbose: int) -> None:
    """pivtool: make YubiKeys and PIV cards ready for Microsoft Entra certificate-based
    authentication.

    \b
    pivtool info                                     what is on the key
    pivtool enroll --upn alice@contoso.com --ca DIR  make it ready in one go
    pivtool check --upn alice@contoso.com            is it ready? (exit 1 if not)
    pivtool recover                                  the user locked the PIN
    pivtool --json info                              any command, for scripts

    Secrets (PIN, PUK, management key) come from a hidden prompt, an environment variable
    (PIVTOOL_PIN, PIVTOOL_NEW_PIN, PIVTOOL_PUK, PIVTOOL_MGMT_KEY, ...) or a --pin-file
    style option, never from the command line. Without a terminal a missing secret or
    confirmation is an error (exit 2) naming the variable or option to use. 'pivtool
    COMMAND -h' shows a command's options; docs/ has the guides."""
    if ctx.invoked_subcommand in NO_CARD and not ctx.resilient_parsing:
        given = [o for o, v in (("--sim", sim), ("--reader", reader), ("--serial", serial))
                 if v is not None]
        if given:
            from ..core.errors import UsageError

            hint = " (the state file is an argument: 'pivtool sim ... STATE_FILE')" \
                if ctx.invoked_subcommand == "sim" else ""
            raise UsageError(f"{ctx.invoked_subcommand} does not use a card: drop "
                             f"{', '.join(given)}{hint}")
    obj = CliContext(reader=reader, serial=serial, sim=sim, json=json_, verbose=verbose,
                     db=db or None, desk=desk)
    obj.setup_logging()
    ctx.obj = obj


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (see :data:`EXIT_HELP`)."""
    try:
        # In non-standalone mode click returns ctx.exit()'s code instead of raising.
        rv = cli.main(args=argv, prog_name="pivtool", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return Exit.FAILED
    except click.ClickException as e:
        e.show()
        return Exit.USAGE
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return rv if isinstance(rv, int) else Exit.OK


def _is_known(e: BaseException) -> bool:
    from ..certs.errors import CertError
    from ..core.errors import PivToolError

    if isinstance(e, PivToolError):
        return True

    try:
        from ..sim.state import SimStateError
    except ImportError:  # pragma: no cover
        return isinstance(e, CertError)
    return isinstance(e, (CertError, SimStateError))


def entry() -> None:
    """setuptools console-script wrapper."""
    code = main()
    # The process ends here. Everything still alive lives until the end anyway, so spare the
    # interpreter's last full garbage collection from walking it (every object of click,
    # cryptography and pivtool: ~20 ms of a ~130 ms `pivtool info`; bench/run.py). atexit
    # handlers, flushing and closing still run; only unreachable cycles among these objects
    # are left to the operating system.
    import gc

    gc.freeze()
    sys.exit(code)
