"""Helpers for tests on in-process virtual cards (importable as ``tests.simcards``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pivtool.connect import SimLink
from pivtool.piv.session import PivSession
from pivtool.sim.attach import SimConnection
from pivtool.sim.card import VirtualCard
from pivtool.sim.consts import MgmtKeyType
from pivtool.sim.state import CardState, load_state, new_card_state

MakeSession = Callable[..., PivSession]


def new_session(firmware: tuple[int, int, int] | None = None, generic: bool = False,
                serial: int = 12345678, profile: str | None = None,
                **state: Any) -> PivSession:
    """A PivSession on a fresh in-process virtual card (a YubiKey 5.7.1 unless *profile*,
    *generic* or *firmware* say otherwise; see ``pivtool.sim.profiles``). *state*: more
    ``new_card_state`` arguments."""
    card = VirtualCard(new_card_state(firmware=firmware, serial=serial, generic=generic,
                                      profile=profile, **state))
    return PivSession(SimLink(SimConnection(card)))


#: PC/SC-backed sessions: id(connection) -> (reader substring, state file path, connection).
#: Filled by tests/pcsc/test_session_pcsc.py, which re-runs the session tests through pcscd
#: and closes every connection left here when a test ends.
PCSC_CARDS: dict[int, tuple[str, Path, Any]] = {}


def is_sim(session: PivSession) -> bool:
    """True for an in-process virtual card (False when the card is behind pcscd)."""
    return isinstance(session.connection, SimLink)


def card_of(session: PivSession) -> VirtualCard:
    """The in-process virtual card behind *session*."""
    link = session.connection
    assert isinstance(link, SimLink)
    return link.sim.card


def state_of(session: PivSession) -> CardState:
    """The virtual card's persistent state, in-process or from a pcscd card's state file."""
    if is_sim(session):
        return card_of(session).state
    _, path, _ = PCSC_CARDS[id(session.connection)]
    return load_state(path)


def reconnect(session: PivSession) -> PivSession:
    """A new connection to the same virtual card (security status cleared)."""
    if is_sim(session):
        card = card_of(session)
        session.connection.close()
        return PivSession(SimLink(SimConnection(card)))
    from pivtool.pcsc import open_reader

    substring, path, _ = PCSC_CARDS.pop(id(session.connection))
    session.connection.close()
    conn = open_reader(substring)
    PCSC_CARDS[id(conn)] = (substring, path, conn)
    return PivSession(conn)

#: For tests of a generic card whose 9B key is 3DES (many PIV cards in the field); the
#: ``generic`` profile's own factory key is AES-192 (tests/diversity covers that card).
TDES_9B = MgmtKeyType.TDES
