"""The PivSession-against-emulator tests again, this time through pcscd + vpcd + pyscard:
the same assertions on the real PC/SC path (pivtool.pcsc's PcscConnection)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pivtool.pcsc import open_reader
from pivtool.piv.session import PivSession
from tests.simcards import PCSC_CARDS, MakeSession

pytestmark = pytest.mark.pcsc

from tests.piv.test_session_sim import *  # noqa: E402, F403  (re-run every session test)


@pytest.fixture
def make_session(vcard_factory: Any) -> Iterator[MakeSession]:
    """Like the in-process factory, but the card is served through pcscd."""

    def make(firmware: tuple[int, int, int] | None = None, generic: bool = False,
             serial: int = 12345678, profile: str | None = None,
             **state: Any) -> PivSession:
        proc = vcard_factory(firmware=firmware, generic=generic, serial=serial,
                             profile=profile, **state)
        conn = open_reader(proc.substring)
        PCSC_CARDS[id(conn)] = (proc.substring, proc.state_path, conn)
        return PivSession(conn)

    yield make
    # Close every connection the test opened, reconnects included, before the reader is
    # reused for the next card.
    for _, _, conn in list(PCSC_CARDS.values()):
        conn.close()
    PCSC_CARDS.clear()


@pytest.fixture
def session(make_session: MakeSession) -> PivSession:
    """A PivSession on a factory-fresh virtual YubiKey 5.7.1 behind pcscd."""
    return make_session()
