"""Reader events: a card inserted into or removed from a reader.

Shared by every card source (PC/SC's reader monitor, the batch's pile of virtual cards), so
code that reacts to cards (``workflows.batch``) depends on neither of them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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
