"""Shared option decorators, so every command spells the same option the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ..piv.constants import KeyType, PinPolicy, Slot, TouchPolicy

F = TypeVar("F", bound=Callable[..., Any])


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # A per-command --json is the same switch as the global one: either place works.
    if value:
        from .context import CliContext

        obj = ctx.find_object(CliContext)
        if obj is not None:
            obj.json = True


def json_option(f: F) -> F:
    """``--json`` on a command (same as the global ``pivtool --json``)."""
    return click.option("--json", "json_", is_flag=True, expose_value=False,
                        callback=_set_json, help="Machine-readable JSON output.")(f)


def secret_file_option(name: str, what: str) -> Callable[[F], F]:
    """``--pin-file FILE`` style option: read a secret from FILE (``-`` = stdin)."""
    return click.option(f"--{name}-file", metavar="FILE",
                        help=f"Read the {what} from FILE ('-' for stdin).")


def secret_options(*names: str) -> Callable[[F], F]:
    """Add ``--pin-file``-style options for *names* (``pin``, ``puk``, ``mgmt_key``,
    ``new_pin``...), collected into ``CliContext.secret_files``."""

    def deco(f: F) -> F:
        for name in reversed(names):
            from .secrets import SPECS

            spec = SPECS[name]
            opt = spec.file_option
            dest = f"_secret_{name}"

            def cb(ctx: click.Context, _p: click.Parameter, value: str | None,
                   _name: str = name) -> None:
                from .context import CliContext

                obj = ctx.find_object(CliContext)
                if obj is not None and value:
                    obj.secret_files[_name] = value

            f = click.option(opt, dest, metavar="FILE", expose_value=False, callback=cb,
                             help=f"Read the {spec.name} from FILE ('-' = stdin) instead of "
                                  f"${spec.env} or a prompt.")(f)
        return f

    return deco


def yes_option(f: F) -> F:
    """``--yes``: answer confirmations with yes (for scripts)."""
    def cb(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
        from .context import CliContext

        obj = ctx.find_object(CliContext)
        if obj is not None and value:
            obj.yes = True

    return click.option("--yes", "-y", is_flag=True, expose_value=False, callback=cb,
                        help="Do not ask for confirmation.")(f)


def force_option(help_text: str) -> Callable[[F], F]:
    """``--force`` with a command-specific meaning."""
    return click.option("--force", is_flag=True, help=help_text)


def allow_last_try_option(f: F) -> F:
    """``--allow-last-try``: lift the retry guard (spend the last PIN/PUK try). One name
    everywhere, kept apart from ``--force`` ("replace what is on the card") so that replacing
    a key can never also burn the last try."""
    return click.option("--allow-last-try", is_flag=True,
                        help="Spend the last PIN/PUK try if it comes to that (refused "
                             "otherwise).")(f)


# --- parameter types: slot, algorithm and policy names spelled one way everywhere ---


class ParsedType(click.ParamType):  # type: ignore[type-arg]
    """A click type backed by one of pivtool's ``parse`` functions (``ValueError`` = bad
    value), so slot and algorithm names are spelled the same everywhere. With *choices*
    (labels) only those values are accepted, and the help shows them like a
    ``click.Choice`` does — while the aliases ``parse`` knows (``p256``, ``rsa-2048``...)
    keep working."""

    def __init__(self, name: str, parse: Callable[[str], Any],
                 choices: Sequence[str] | None = None) -> None:
        self.name = name
        self._parse = parse
        self.choices = tuple(choices) if choices else None

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        """``[a|b|c]`` when restricted to *choices* (as ``click.Choice`` shows them)."""
        return f"[{'|'.join(self.choices)}]" if self.choices else None

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        """Parse *value* unless it already is one (defaults, programmatic calls)."""
        if not isinstance(value, str):
            return value
        try:
            parsed = self._parse(value)
        except ValueError as e:
            if self.choices:
                self.fail(f"{value!r} is not one of {', '.join(self.choices)}", param, ctx)
            self.fail(str(e), param, ctx)
        label = getattr(parsed, "label", None)
        if self.choices and label not in self.choices:
            self.fail(f"{value!r} is not one of {', '.join(self.choices)}", param, ctx)
        return parsed

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[Any]:
        """Complete the *choices*, if any."""
        from click.shell_completion import CompletionItem

        return [CompletionItem(c) for c in self.choices or () if c.startswith(incomplete)]


SLOT = ParsedType("slot", Slot.parse)
KEY_TYPE = ParsedType("algorithm", KeyType.parse)
PIN_POLICY = ParsedType("pin-policy", PinPolicy.parse)
TOUCH_POLICY = ParsedType("touch-policy", TouchPolicy.parse)

#: The algorithms a sign-in key can have (enroll, batch): no X25519 (it cannot sign).
SIGNING_ALGORITHMS = ("eccp256", "eccp384", "rsa2048", "rsa1024", "rsa3072", "rsa4096",
                      "ed25519")
SIGNING_KEY_TYPE = ParsedType("algorithm", KeyType.parse, SIGNING_ALGORITHMS)
#: The PIN and touch policies a key can be given (the match-* PIN policies are
#: biometric YubiKeys' and are only reported, never set).
SET_PIN_POLICY = ParsedType("pin-policy", PinPolicy.parse, ("default", "never", "once",
                                                             "always"))
SET_TOUCH_POLICY = ParsedType("touch-policy", TouchPolicy.parse, ("default", "never",
                                                                   "always", "cached"))

SLOT_HELP = ("SLOT is 9a|authentication, 9c|signature, 9d|key-management, "
             "9e|card-authentication or a retired slot 82..95.")


def keep_chuid_option(f: F) -> F:
    """``--keep-chuid``: do not renew the CHUID GUID after a certificate change."""
    return click.option("--keep-chuid", is_flag=True,
                        help="Do not renew the CHUID GUID. By default it is renewed after a "
                             "certificate change, because Windows caches certificates by "
                             "it.")(f)


def backup_dir_option(default: str = "the current directory") -> Callable[[F], F]:
    """``--backup-dir DIR``: where replaced or deleted certificates are saved (*default*
    says where they go without it)."""
    return click.option("--backup-dir", metavar="DIR", type=click.Path(file_okay=False),
                        help=f"Save replaced or deleted certificates in DIR (default: "
                             f"{default}).")


def slot_change_options(backup_default: str = "the current directory", *,
                        pfx_password: bool = False) -> Callable[[F], F]:
    """What every command that replaces or deletes a slot's certificate takes, in this
    order: ``--backup-dir`` (*backup_default* says where backups go without it),
    ``--keep-chuid``, ``--allow-last-try`` and the PIN and management key files (and the
    PFX password file with *pfx_password*)."""
    names = ("pin", "mgmt_key", "pfx_password") if pfx_password else ("pin", "mgmt_key")
    options = [backup_dir_option(backup_default), keep_chuid_option, allow_last_try_option,
               secret_options(*names)]

    def deco(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return deco


def new_key_options(roster: bool = False) -> Callable[[F], F]:
    """The new key's options, ``enroll``'s and ``batch enroll``'s: ``--algorithm``,
    ``--pin-policy``, ``--touch-policy``, ``--policy``, ``--macos``, ``--allow-non-ios``.
    With *roster* the help says the first four are defaults for roster rows without their
    own value."""
    note = " The default for roster rows without one." if roster else ""
    options = [
        click.option("--algorithm", "-a", type=SIGNING_KEY_TYPE, default="eccp256",
                     show_default=True,
                     help="Key algorithm (iOS takes RSA 1024/2048, P-256, P-384)." + note),
        click.option("--pin-policy", type=SET_PIN_POLICY, default="default",
                     show_default=True,
                     help="When the card asks for the PIN before the key signs." + note),
        click.option("--touch-policy", type=SET_TOUCH_POLICY, default="default",
                     show_default=True,
                     help="When the card asks for a touch before the key signs." + note),
        click.option("--policy", "policies", multiple=True, metavar="OID",
                     help="Certificate policy OID for the CSR (Entra authentication-strength "
                          "rules can match on it; repeatable)." + note),
        click.option("--macos", is_flag=True,
                     help="Also enroll 9d (macOS smart-card pairing needs 9a and 9d)."),
        click.option("--allow-non-ios", is_flag=True,
                     help="Allow algorithms iOS cannot use (RSA 3072/4096, Ed25519) in 9a."),
    ]

    def deco(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return deco


def output_option(what: str) -> Callable[[F], F]:
    """``-o/--output FILE`` (``-`` or absent = standard output)."""
    return click.option("-o", "--output", metavar="FILE",
                        help=f"Write the {what} to FILE (default: standard output).")


def format_option(f: F) -> F:
    """``--format pem|der``."""
    return click.option("--format", "fmt", type=click.Choice(["pem", "der"]), default="pem",
                        show_default=True, help="Output encoding.")(f)


