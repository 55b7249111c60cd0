"""The virtual YubiKey: a PIV card emulator with real cryptography.

Public API::

    VirtualCard(state=None)             card.execute(apdu) -> response, card.atr, ...
    CardState, new_card_state(...)      persistent card state
    save_state(state, path), load_state(path), SimStateError
    SimConnection(card, state_path=None, faults=None), open_sim(path)
    attestation_root_ca(state) -> x509.Certificate

Independent of pivtool's client code by design (see architecture.md): it is the judge.
"""

from .attach import (
    FaultKind,
    Faults,
    SimCardRemovedError,
    SimCardResetError,
    SimConnection,
    SimTransportError,
    open_sim,
)
from .attestation import attestation_root_ca
from .card import ATR_GENERIC_PIV, ATR_YUBIKEY5_NFC, ATR_YUBIKEY5_USB, VirtualCard
from .state import CardState, SimStateError, SlotKey, load_state, new_card_state, save_state

__all__ = [
    "ATR_GENERIC_PIV",
    "ATR_YUBIKEY5_NFC",
    "ATR_YUBIKEY5_USB",
    "CardState",
    "FaultKind",
    "Faults",
    "SimCardRemovedError",
    "SimCardResetError",
    "SimConnection",
    "SimStateError",
    "SimTransportError",
    "SlotKey",
    "VirtualCard",
    "attestation_root_ca",
    "load_state",
    "new_card_state",
    "open_sim",
    "save_state",
]
