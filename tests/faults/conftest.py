"""Fault-injection, fuzz and bad-input tests: a per-session directory for the rows the
doc generators read (tools/gen_bad_input.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.faulthelp import ROWS_ENV


@pytest.fixture(scope="session", autouse=True)
def rows_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tests append (input, message, exit code) rows here; the staleness tests render
    them. Session-scoped so every module's rows end up in one place."""
    old = os.environ.get(ROWS_ENV)
    # tools/gen_bad_input.py sets the directory itself, to read the rows afterwards.
    where = old or str(tmp_path_factory.mktemp("rows"))
    os.environ[ROWS_ENV] = where
    yield where
    if old is None:
        os.environ.pop(ROWS_ENV, None)
    else:
        os.environ[ROWS_ENV] = old


@pytest.fixture(scope="session", autouse=True)
def canary_guard() -> Iterator[None]:
    """For the whole faults session: record pivtool's log records and the argv and
    environment of every subprocess started, and fail at the end if a canary secret is in
    any of them."""
    import logging
    import subprocess

    from tests.faults.canaries import SUBPROCESS_ARGV as argvs
    from tests.faults.canaries import SUBPROCESS_ENV as envs
    from tests.faults.canaries import leaks

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect(level=1)
    logging.getLogger("pivtool").addHandler(handler)
    original = subprocess.Popen.__init__

    def recording(self: subprocess.Popen[bytes], args: object, *a: object,
                  **kw: object) -> None:
        argvs.append(repr(args) + repr(kw.get("env") and sorted(kw["env"])))  # type: ignore[union-attr]
        # env=None inherits ours: what the child really sees.
        env = kw.get("env")
        envs.append(repr(sorted((os.environ if env is None else env).items())))  # type: ignore[attr-defined]
        original(self, args, *a, **kw)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "__init__", recording)
        yield
    logging.getLogger("pivtool").removeHandler(handler)
    found = leaks("\n".join(argvs)) + leaks("\n".join(records)) + leaks("\n".join(envs))
    assert not found, ("a canary secret leaked into a log record or a subprocess's argv or "
                       f"environment: {found}")
