"""Card sources for unattended work on many cards (``pivtool batch enroll``).

A card source says when a card arrives in a reader or leaves it (:class:`CardEvent`), opens a
connection to the card in a reader, and learns when its user is done with a card. Two exist:

* :class:`PcscCardSource` — the machine's PC/SC readers (pcscd), watched without polling;
* :class:`SimPileSource` — a desk's pile of virtual YubiKeys (``*.json`` state files in a
  directory) and N virtual readers that take keys from the pile in turn, as a person would:
  when a key is done it leaves its reader and the next key from the pile goes in. In process,
  no pcscd: batch enrollment can be tried, demonstrated and tested anywhere.

The consumer (``workflows.batch``) sees only the :class:`~pivtool.workflows.batch.CardSource`
protocol, so the same worker, state, audit and report code runs on both.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .core.errors import UsageError
from .core.events import CardEvent, EventKind

if TYPE_CHECKING:
    from .core.connection import Connection
    from .pcsc import ReaderMonitor
    from .sim.attach import Faults


class PcscCardSource:
    """Every PC/SC reader: insertions and removals from one blocking
    ``SCardGetStatusChange`` monitor (cards already present count as inserted)."""

    def __init__(self) -> None:
        from .pcsc import ReaderMonitor

        self._monitor: ReaderMonitor = ReaderMonitor(None, report_present=True)

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        return self._monitor.stopped

    @property
    def exhausted(self) -> bool:
        """Never: a person may insert another key at any time."""
        return False

    def wait(self, timeout: float | None = None) -> list[CardEvent]:
        """Block until a reader changes (or *timeout*, or :meth:`stop`)."""
        return self._monitor.wait(timeout)

    def connect(self, reader: str) -> Connection:
        """Open the card in *reader* (exclusive)."""
        from .pcsc import PcscConnection

        return PcscConnection(reader)

    def card_done(self, reader: str) -> None:
        """Nothing to do: the person pulls the key (the monitor reports it)."""

    def stop(self) -> None:
        """Wake the waiting thread; safe from any thread."""
        self._monitor.stop()

    def close(self) -> None:
        """Release the PC/SC context."""
        self._monitor.close()


#: Names of the virtual readers of a pile (``--readers`` substrings match them).
SIM_READER = "pivtool virtual reader {n}"


class SimPileSource:
    """A pile of virtual YubiKeys (every ``*.json`` in *directory*, in name order) and
    *readers* virtual readers. At the start each reader takes a key from the top of the pile;
    when the batch is done with a key (:meth:`card_done`) it is removed and the reader takes
    the next one, *pace* seconds later (the operator's hands). Keys are taken once per run.
    *faults* (optional) gives each connection its fault plan (``PIVTOOL_SIM_FAULTS``), for
    the fault tests."""

    def __init__(self, directory: str | Path, readers: int = 2,
                 faults: Callable[[], Faults | None] | None = None,
                 pace: float = 0.0) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise UsageError(f"--sim-pile: {directory} is not a directory")
        if readers < 1:
            raise UsageError("--sim-readers must be at least 1")
        cards = sorted(p for p in directory.glob("*.json") if p.is_file())
        if not cards:
            raise UsageError(f"--sim-pile: no virtual cards (*.json) in {directory}; create "
                             "them with 'pivtool sim create'")
        self.directory = directory
        self._pile: deque[Path] = deque(cards)
        self._faults = faults
        self._pace = max(0.0, pace)
        self._cond = threading.Condition()
        self._events: deque[CardEvent] = deque()
        self._stopped = False
        self.readers = [SIM_READER.format(n=n) for n in range(1, readers + 1)]
        self._held: dict[str, Path | None] = dict.fromkeys(self.readers)
        with self._cond:
            for reader in self.readers:
                self._insert(reader)

    def _insert(self, reader: str, pace: float = 0.0) -> None:
        """Put the next key from the pile into *reader* (called under the lock), *pace*
        seconds from now. The key is the reader's from now on (so the pile is never seen
        empty while a key is on its way into a reader)."""
        if self._stopped or not self._pile:
            return
        self._held[reader] = self._pile.popleft()
        if pace > 0:
            timer = threading.Timer(pace, self._arrive, args=(reader,))
            timer.daemon = True
            timer.start()
            return
        self._arrive(reader)

    def _arrive(self, reader: str) -> None:
        with self._cond:
            if not self._stopped:
                self._events.append(CardEvent(EventKind.INSERTED, reader))
                self._cond.notify_all()

    def holding(self, reader: str) -> Path | None:
        """The state file of the key in *reader*, if any."""
        with self._cond:
            return self._held.get(reader)

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        return self._stopped

    @property
    def exhausted(self) -> bool:
        """The pile is empty and no reader holds a key: no card will ever come again."""
        with self._cond:
            return not self._pile and not any(self._held.values()) and not self._events

    def wait(self, timeout: float | None = None) -> list[CardEvent]:
        """The events since the last call; blocks until there is one (or *timeout*, or
        :meth:`stop`)."""
        with self._cond:
            self._cond.wait_for(lambda: self._events or self._stopped, timeout)
            if self._stopped:
                return []
            out = list(self._events)
            self._events.clear()
            return out

    def connect(self, reader: str) -> Connection:
        """Open the key in *reader* (its state is saved back after every change)."""
        from .connect import open_sim_link

        path = self.holding(reader)
        if path is None:
            from .core.errors import NoCardError

            raise NoCardError(f"no key in {reader}")
        return open_sim_link(path, self._faults() if self._faults is not None else None)

    def card_done(self, reader: str) -> None:
        """The key in *reader* is done: take it out and insert the next one from the pile."""
        with self._cond:
            if self._held.get(reader) is None:
                return
            self._held[reader] = None
            self._events.append(CardEvent(EventKind.REMOVED, reader))
            self._insert(reader, self._pace)
            self._cond.notify_all()

    def stop(self) -> None:
        """Insert no more keys and wake the waiting thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to release (connections are closed by whoever opened them)."""
        self.stop()
