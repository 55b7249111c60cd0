"""In-process attachment of a virtual card: pivtool's connection protocol, no PC/SC.

:class:`SimConnection` has the shape of pivtool's connections (``transmit(apdu) ->
(data, sw)``, ``close()``, ``atr``, ``reader_name``), opens a fresh card connection
(security status cleared), and writes the card state back to its file after every command
that changed it. An optional :class:`Faults` plan injects transport failures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType

from .card import VirtualCard
from .state import CardState, load_state, save_state
from .touch import marker_path

READER_NAME = "pivtool virtual YubiKey (sim)"


class SimTransportError(Exception):
    """The in-process link failed (closed connection or an injected fault)."""


class SimCardRemovedError(SimTransportError):
    """Injected fault: the card went away during the command."""


class SimCardResetError(SimTransportError):
    """Injected fault: the card was reset by another party; security status is gone."""


class FaultKind(Enum):
    """What happens at the faulted command."""

    CARD_REMOVED = "card-removed"
    TRANSMISSION_ERROR = "transmission-error"
    RESET = "reset"
    GARBAGE = "garbage"
    ANSWER_LOST = "answer-lost"


@dataclass
class Faults:
    """Fault plan: at the ``at``-th command APDU (1-based) of the connection, fail.

    ``CARD_REMOVED`` raises :class:`SimCardRemovedError` and the connection stays dead;
    ``TRANSMISSION_ERROR`` raises :class:`SimTransportError` once; ``RESET`` power-cycles
    the card and raises :class:`SimCardResetError`; ``GARBAGE`` returns a response that
    is not what the card sent (the command is not executed); ``ANSWER_LOST``: the card
    executes the command (and keeps its effect), then the link dies before the answer
    arrives — raised as :class:`SimCardRemovedError`, the connection stays dead. ``count``
    faults in a row.
    """

    at: int
    kind: FaultKind = FaultKind.TRANSMISSION_ERROR
    count: int = 1
    fired: list[int] = field(default_factory=list)

    def check(self, n: int) -> FaultKind | None:
        """The fault to inject for command number ``n``, if any."""
        if self.at <= n < self.at + self.count:
            self.fired.append(n)
            return self.kind
        return None


GARBAGE_RESPONSE = (b"\x6f\x00\xde\xad\xbe", 0x9000)


class SimConnection:
    """A connection to a :class:`VirtualCard` inside this process.

    If ``state_path`` is given, the card state is saved there (atomically, mode 0600)
    after every state-changing command.
    """

    def __init__(
        self,
        card: VirtualCard,
        state_path: str | os.PathLike[str] | None = None,
        *,
        faults: Faults | None = None,
        reader_name: str = READER_NAME,
    ) -> None:
        self.card = card
        self.state_path = Path(state_path) if state_path is not None else None
        self.faults = faults
        self.reader_name = reader_name
        self.commands = 0
        self._closed = False
        self._removed = False
        # Which version of the state file self.card.state is (see _refresh).
        self._seen = _identity(self.state_path) if self.state_path is not None else None
        # Connecting is what resets a card's per-connection security status.
        card.reset_connection()

    @property
    def atr(self) -> bytes:
        """The card's ATR."""
        return self.card.atr

    @property
    def state(self) -> CardState:
        """The card's persistent state."""
        return self.card.state

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU; return response data and the SW as an int."""
        if self._closed:
            raise SimTransportError("connection closed")
        if self._removed:
            raise SimCardRemovedError("card removed")
        self.commands += 1
        fault = self.faults.check(self.commands) if self.faults is not None else None
        if fault is FaultKind.CARD_REMOVED:
            self._removed = True
            raise SimCardRemovedError("card removed")
        if fault is FaultKind.TRANSMISSION_ERROR:
            raise SimTransportError("transmission error")
        if fault is FaultKind.RESET:
            self.card.power_cycle()
            raise SimCardResetError("card was reset")
        if fault is FaultKind.GARBAGE:
            return GARBAGE_RESPONSE
        if self.state_path is None:
            response = self.card.execute(bytes(apdu))
        else:
            with _locked_dir(self.state_path):
                self._refresh()
                before = self.card.changed
                response = self.card.execute(bytes(apdu))
                if self.card.changed != before:
                    save_state(self.card.state, self.state_path)
                    self._seen = _identity(self.state_path)
        if fault is FaultKind.ANSWER_LOST:
            # The dangerous case for CHANGE REFERENCE DATA, SET MANAGEMENT KEY, PUT DATA and
            # GENERATE: the card did it, the host never learns so.
            self._removed = True
            raise SimCardRemovedError("card removed")
        return response[:-2], int.from_bytes(response[-2:], "big")

    def _refresh(self) -> None:
        # Another process (another pivtool --sim on the same file) changed the card since
        # we loaded or saved it: continue from its state, as a real card would. Without
        # this, parallel wrong-PIN runs each spent a try of their own copy of the counter.
        assert self.state_path is not None
        now = _identity(self.state_path)
        if now is not None and now != self._seen:
            self.card.state = load_state(self.state_path)
            self._seen = now

    def close(self) -> None:
        """End the connection (idempotent). The card keeps its state, not its session."""
        if not self._closed:
            self._closed = True
            self.card.reset_connection()

    def __enter__(self) -> SimConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def _locked_dir(state_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on the state file's directory for one command: the state
    file itself is replaced on every save, so it cannot carry the lock, and a lock file
    next to it would be one more file in the user's directory."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process per card file
        yield
        return
    fd = os.open(state_path.parent if str(state_path.parent) else ".", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_sim(path: str | os.PathLike[str], *, faults: Faults | None = None) -> SimConnection:
    """Load the card in the state file ``path`` and connect to it (saving back to it)."""
    card = VirtualCard(load_state(path))
    card.touch.marker = marker_path(path)  # `pivtool sim touch PATH` touches this card
    return SimConnection(card, path, faults=faults)
