"""The CLI's shared state (global options) and how it opens a card."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from ..core.connection import TRACE, Connection

if TYPE_CHECKING:
    from ..piv.session import PivSession
    from ..workflows.auth import Prompter
    from .secrets import CliPrompter


@dataclass
class CliContext:
    """Global options, resolved once per invocation."""

    reader: str | None = None
    serial: int | None = None
    sim: str | None = None
    json: bool = False
    verbose: int = 0
    interactive: bool = field(default_factory=lambda: sys.stdin.isatty())
    yes: bool = False
    secret_files: dict[str, str | None] = field(default_factory=dict)
    db: str | None = None  # --db / $PIVTOOL_DB: the inventory database
    desk: str | None = None
    _prompter: CliPrompter | None = None

    def prompter(self) -> Prompter:
        """The invocation's :class:`~pivtool.cli.secrets.CliPrompter` (one, so each secret
        is asked for once), as the workflows see it: a
        :class:`~pivtool.workflows.auth.Prompter`."""
        if self._prompter is None:
            from .secrets import CliPrompter

            self._prompter = CliPrompter(self.secret_files, self.yes, self.interactive)
        return self._prompter

    def setup_logging(self) -> None:
        """``-v`` shows pivtool's debug log and the APDU trace (secrets redacted)."""
        if not self.verbose:
            return
        import logging  # only here: an ordinary run never loads the logging package

        root = logging.getLogger("pivtool")
        # One handler per process: a second invocation in the same process (tests, batch)
        # replaces the first instead of doubling every line.
        for old in [h for h in root.handlers if getattr(h, "_pivtool_cli", False)]:
            root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler._pivtool_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(TRACE)

    def open_connection(self) -> Connection:
        """Open the card the global options select."""
        from ..connect import open_connection

        return open_connection(self.reader, self.serial, self.sim)

    @contextlib.contextmanager
    def session(self) -> Iterator[PivSession]:
        """Open the card and a :class:`~pivtool.piv.session.PivSession` on it; close after."""
        from ..piv.session import PivSession

        conn = self.open_connection()
        try:
            session = PivSession(conn)
            try:
                yield session
            except BaseException as e:
                self._record(session, e)
                raise
            self._record(session, None)
        finally:
            conn.close()

    def _record(self, session: PivSession, error: BaseException | None) -> None:
        """With an inventory database, card-changing commands record what they did (the
        one hook point; read-only commands return at once without importing it)."""
        if self.db and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            from .stores import record_change

            record_change(self, session, error)

    def emit(self, data: Mapping[str, object], text: str | None = None) -> None:
        """Print *data* as JSON under ``--json``, else *text* (or nothing)."""
        if self.json:
            import json

            click.echo(json.dumps(data, indent=2, sort_keys=False))
        elif text is not None:
            from .render import terminal_safe

            click.echo(terminal_safe(text))


pass_ctx = click.make_pass_decorator(CliContext)
