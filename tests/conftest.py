"""Shared fixtures: virtual cards in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pivtool.piv.session import PivSession
from tests.simcards import MakeSession, new_session


@pytest.fixture(autouse=True)
def journal_dir(tmp_path_factory: pytest.TempPathFactory,
                monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test has its own enrollment journal directory: the suite reuses serials and
    PINs, and a journal left by one test must never decide anything in another (also for
    subprocesses, which inherit the variable)."""
    from pivtool.workflows.journal import JOURNAL_ENV

    where = str(tmp_path_factory.mktemp("journal"))
    monkeypatch.setenv(JOURNAL_ENV, where)
    return where


@pytest.fixture
def make_session() -> Iterator[MakeSession]:
    """Factory: ``make_session(firmware=None, generic=False, profile=None)`` -> a PivSession
    on a fresh in-process virtual card (a YubiKey 5.7.1 by default)."""
    opened: list[PivSession] = []

    def make(firmware: tuple[int, int, int] | None = None, generic: bool = False,
             serial: int = 12345678, profile: str | None = None,
             **state: Any) -> PivSession:
        s = new_session(firmware, generic, serial, profile, **state)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.connection.close()


@pytest.fixture
def session(make_session: MakeSession) -> PivSession:
    """A PivSession on a factory-fresh virtual YubiKey 5.7.1."""
    return make_session()


@pytest.fixture(scope="session")
def openssl_cli() -> str:
    """The openssl command; its absence fails the tests that need it (never a skip)."""
    import shutil

    path = shutil.which("openssl")
    if path is None:
        pytest.fail("openssl is not installed: run scripts/dev setup")
    return path
