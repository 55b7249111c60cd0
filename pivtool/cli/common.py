"""Output helpers shared by the key, certificate and object commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from ..core.errors import UsageError
from .context import CliContext


def check_output(path: str | None, overwrite: bool) -> None:
    """Refuse an existing output file before the card is touched (not after a key was
    generated or a PIN was spent)."""
    if path not in (None, "-") and os.path.exists(str(path)) and not overwrite:
        raise UsageError(f"{path} exists; use --force to overwrite it")


def deliver(obj: CliContext, output: str | None, data: bytes, json_data: dict[str, Any],
            text: str, overwrite: bool = False) -> None:
    """Hand a result over: *data* (a PEM, DER, raw object) to FILE or standard output, a
    status line for people, JSON for programs. When *data* goes to standard output the
    status goes to standard error, so ``pivtool ... > file`` captures only the data."""
    from .files import write_output

    to_file = output not in (None, "-")
    if to_file:
        write_output(output, data, overwrite)
        json_data = {**json_data, "file": output}
    if obj.json:
        obj.emit(json_data)
    elif to_file:
        click.echo(text)
    else:
        write_output(None, data)
        click.echo(text, err=True)


def pfx_password(obj: CliContext) -> Callable[[], bytes]:
    """The PKCS#12/key-file password, asked for only if the file turns out to need one."""
    return lambda: obj.prompter().secret("pfx_password")


def notifier() -> Callable[[str], None]:
    """Messages for the person at the key ("touch it") go to standard error."""
    return lambda message: click.echo(message, err=True)
