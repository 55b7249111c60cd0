"""Shared option decorators, so every command spells the same option the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

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
