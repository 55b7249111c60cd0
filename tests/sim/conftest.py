"""Fixtures for the virtual YubiKey tests: yubikit (the independent judge) on the card."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from simhelpers import YubikitConnection
from yubikit.piv import DEFAULT_MANAGEMENT_KEY, PivSession

from pivtool.sim import CardState, VirtualCard, new_card_state

_TEMPLATES: dict[tuple[object, ...], CardState] = {}


def _fresh_state(**kwargs: object) -> CardState:
    # Creating the attestation PKI is cheap, but deep-copying a template is cheaper and
    # keeps serials stable within a run.
    key = tuple(sorted(kwargs.items()))
    if key not in _TEMPLATES:
        _TEMPLATES[key] = new_card_state(**kwargs)  # type: ignore[arg-type]
    return copy.deepcopy(_TEMPLATES[key])


@pytest.fixture
def make_card() -> Callable[..., VirtualCard]:
    def make(**kwargs: object) -> VirtualCard:
        return VirtualCard(_fresh_state(**kwargs))

    return make


@pytest.fixture
def card(make_card: Callable[..., VirtualCard]) -> VirtualCard:
    return make_card()


@pytest.fixture
def piv(card: VirtualCard) -> PivSession:
    return PivSession(YubikitConnection(card))


@pytest.fixture
def admin(piv: PivSession) -> PivSession:
    """A session authenticated with the default management key and the PIN verified."""
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.verify_pin("123456")
    return piv
