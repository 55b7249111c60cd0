"""Helpers for tests on in-process virtual cards (importable as ``tests.simcards``)."""

from __future__ import annotations

from collections.abc import Callable

from pivtool.connect import SimLink
from pivtool.piv.session import PivSession
from pivtool.sim.attach import SimConnection
from pivtool.sim.card import VirtualCard
from pivtool.sim.state import new_card_state

MakeSession = Callable[..., PivSession]


def new_session(firmware: tuple[int, int, int] = (5, 7, 1), generic: bool = False,
                serial: int = 12345678) -> PivSession:
    """A PivSession on a fresh in-process virtual card."""
    card = VirtualCard(new_card_state(firmware=firmware, serial=serial, generic=generic))
    return PivSession(SimLink(SimConnection(card)))


def card_of(session: PivSession) -> VirtualCard:
    """The virtual card behind *session*."""
    link = session.connection
    assert isinstance(link, SimLink)
    return link.sim.card


def reconnect(session: PivSession) -> PivSession:
    """A new connection to the same virtual card (security status cleared)."""
    card = card_of(session)
    session.connection.close()
    return PivSession(SimLink(SimConnection(card)))
