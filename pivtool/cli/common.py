"""Output helpers shared by the key, certificate and object commands (command modules do
not import each other: what two of them need lives here or in ``options.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from ..core.errors import UsageError
from .context import CliContext

if TYPE_CHECKING:
    from ..piv.constants import Slot


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
    # "file" is always there (null: the data is in the JSON document or on stdout), so a
    # script reads the same keys whether or not -o was given.
    json_data = {**json_data, "file": output if to_file else None}
    if to_file:
        write_output(output, data, overwrite)
    from .render import terminal_safe

    if obj.json:
        obj.emit(json_data)
    elif to_file:
        click.echo(terminal_safe(text))
    else:
        write_output(None, data)
        click.echo(terminal_safe(text), err=True)


def pfx_password(obj: CliContext) -> Callable[[], bytes]:
    """The PKCS#12/key-file password, asked for only if the file turns out to need one."""
    return lambda: obj.prompter().secret("pfx_password")


def notifier() -> Callable[[str], None]:
    """Messages for the person at the key ("touch it") go to standard error."""
    return lambda message: click.echo(message, err=True)


class StepPrinter:
    """Shows a workflow's steps (``enroll``, ``recover``) on standard error as they happen:
    ``[ok] name: detail``. Nothing under ``--json`` (the steps are in the JSON document).

    A failed step is held back: when the workflow then stops with that step's error, the
    one ``Error:`` line says it (with the step's extra hint, if any) instead of the same
    words twice. Use :meth:`running` around the workflow."""

    MARKS: ClassVar[dict[str, str]] = {"done": "ok", "plan": "->", "pending": "..", "skipped": "--"}

    def __init__(self, obj: CliContext) -> None:
        self.quiet = obj.json
        self._failed: Any = None

    def __call__(self, step: Any) -> None:
        self._flush()
        if step.status == "failed":
            self._failed = step
        else:
            self._print(step)

    def _print(self, step: Any) -> None:
        if not self.quiet:
            mark = self.MARKS.get(step.status, "!!")
            click.echo(f"[{mark}] {step.name}: {step.detail}", err=True)

    def _flush(self) -> None:
        if self._failed is not None:
            self._print(self._failed)
            self._failed = None

    def running(self) -> Any:
        """A context manager: on the held step's own error, fold the step's detail into the
        error (one line, no repetition); otherwise print what was held."""
        import contextlib

        from ..core.errors import StepFailedError

        @contextlib.contextmanager
        def cm() -> Any:
            try:
                yield self
            except StepFailedError as e:
                held, self._failed = self._failed, None
                cause = str(e.__cause__) if e.__cause__ is not None else ""
                if (held is not None and held.name == e.step and cause
                        and held.detail.startswith(cause)):
                    e.args = (f"{e.step}: {held.detail}",)
                elif held is not None:
                    self._print(held)
                raise
            self._flush()

        return cm()


def backup_target(slot: Slot, file: str | None, backup_dir: str | None) -> Path | None:
    """The file a replaced certificate is saved to: next to the input *file*
    (``<FILE>.old-slot-9a-<time>.pem``), unless *backup_dir* is given or the input is
    standard input (then the workflow picks a name in *backup_dir* or the current
    directory)."""
    from ..workflows.certs import old_cert_path

    if backup_dir or file in (None, "-"):
        return None
    return old_cert_path(slot, Path(str(file)), None, None)


def install_text(data: dict[str, Any]) -> str:
    """One line about a certificate install (``pivtool.cert-install/1``)."""
    cert = data["certificate"]
    if not data["written"]:
        return f"The certificate ({cert['subject']}) was already in the slot; nothing written."
    text = f"Certificate {cert['subject']} stored"
    if data["compressed"]:
        text += " (compressed)"
    text += "."
    if data["backup"]:
        text += f" The old certificate was saved to {data['backup']}."
    if data["chuid_guid"]:
        text += " CHUID GUID renewed."
    for note in data.get("notes", []):
        text += f"\nNote: {note}"
    return text
