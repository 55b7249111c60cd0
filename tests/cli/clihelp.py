"""Helpers for CLI tests: run pivtool in-process against a virtual card state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from pivtool.cli.main import cli
from pivtool.connect import open_sim_link
from pivtool.piv.session import PivSession
from pivtool.sim.state import new_card_state, save_state


def make_card(tmp: Path, name: str = "card.json", **kwargs: Any) -> Path:
    """A factory-fresh virtual card state file."""
    path = tmp / name
    save_state(new_card_state(**{"serial": 5550001, **kwargs}), path)
    return path


def run(card: Path | None, *args: str, env: dict[str, str] | None = None,
        input: str | None = None) -> Result:
    """Invoke pivtool (``--sim card`` first when given); secrets only through *env*."""
    argv = (["--sim", str(card)] if card is not None else []) + list(args)
    return CliRunner().invoke(cli, argv, env=env or {}, input=input,
                              catch_exceptions=False)


def run_json(card: Path | None, *args: str, env: dict[str, str] | None = None) -> Any:
    """Invoke with --json and parse stdout; asserts exit 0."""
    r = run(card, "--json", *args, env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def session(card: Path) -> PivSession:
    """A PivSession on the card file (close with ``s.connection.close()``)."""
    return PivSession(open_sim_link(card))
