"""Reader events (a card inserted into or removed from a reader) and the card-source
protocol that delivers them.

Shared by every card source — :class:`~pivtool.pcsc.PcscCardSource` (the PC/SC readers,
beside the rest of the PC/SC code) and :class:`~pivtool.connect.SimPileSource` (a pile of
virtual YubiKeys, beside the code that opens virtual cards) — so code that reacts to cards
(``workflows.batch``) depends on neither of them: the CLI builds a source and injects it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .connection import Connection


class EventKind(Enum):
    """What happened in a reader."""

    INSERTED = "inserted"
    REMOVED = "removed"
    READER_ADDED = "reader_added"
    READER_REMOVED = "reader_removed"


@dataclass(frozen=True)
class CardEvent:
    """One reader event. ``atr`` is set for insertions (when the source knows it)."""

    kind: EventKind
    reader: str
    atr: bytes = b""


class CardSource(Protocol):
    """Readers and the cards in them, as unattended work on many cards (``batch enroll``)
    sees them. Called from several threads: :meth:`wait` from the runner's watcher,
    :meth:`connect` and :meth:`card_done` from the reader workers, :meth:`stop` from
    anywhere."""

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        ...

    @property
    def exhausted(self) -> bool:
        """No card will ever arrive again (a pile that ran out); False for real readers."""
        ...

    def wait(self, timeout: float | None = None) -> list[CardEvent]:
        """Block until something happens; return the events ([] after :meth:`stop`)."""
        ...

    def connect(self, reader: str) -> Connection:
        """Open the card in *reader*."""
        ...

    def card_done(self, reader: str) -> None:
        """The batch is done with the card in *reader* ("remove the key")."""
        ...

    def stop(self) -> None:
        """Make :meth:`wait` return; safe from any thread."""
        ...

    def close(self) -> None:
        """Release the source (after the waiting thread returned)."""
        ...
