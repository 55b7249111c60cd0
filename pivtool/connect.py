"""Open the card a user selected: a PC/SC reader (by name or YubiKey serial) or a virtual
YubiKey state file. The emulator knows nothing of pivtool's error classes (it is written
independently), so its transport failures are translated here, once.

Also the virtual card source of ``batch enroll --sim-pile`` (:class:`SimPileSource`): a desk's
pile of virtual YubiKeys (``*.json`` state files in a directory) and N virtual readers that
take keys from the pile in turn, as a person would — when a key is done it leaves its reader
and the next key from the pile goes in. In process, no pcscd: batch enrollment can be tried,
demonstrated and tested anywhere. (The PC/SC readers' source is
:class:`~pivtool.pcsc.PcscCardSource`; batch sees both through
:class:`~pivtool.core.events.CardSource`.)"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .core.errors import CardRemovedError, NoCardError, TransportError, UsageError
from .core.events import CardEvent, EventKind

if TYPE_CHECKING:
    from pathlib import Path

    from . import pcsc
    from .core.connection import Connection
    from .sim.attach import Faults, SimConnection


class SimLink:
    """A :class:`~pivtool.sim.attach.SimConnection` that raises pivtool's transport errors."""

    def __init__(self, conn: SimConnection) -> None:
        self.sim = conn

    @property
    def atr(self) -> bytes:
        """The virtual card's ATR."""
        return self.sim.atr

    @property
    def reader_name(self) -> str:
        """The virtual reader's name."""
        return self.sim.reader_name

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one APDU to the virtual card."""
        from .sim.attach import SimCardRemovedError, SimCardResetError, SimTransportError

        try:
            return self.sim.transmit(apdu)
        except SimCardRemovedError:
            raise CardRemovedError("the card was removed") from None
        except SimCardResetError:
            raise CardRemovedError("the card was reset by another program") from None
        except SimTransportError as e:
            # The emulator says what failed ("transmission error"); do not say it twice.
            raise TransportError(str(e) or "transmission error") from None

    def close(self) -> None:
        """Close the virtual connection."""
        self.sim.close()


def open_sim_link(path: str | os.PathLike[str], faults: Faults | None = None) -> SimLink:
    """Open the virtual YubiKey in *path*."""
    from .sim.attach import open_sim
    from .sim.state import SimStateError

    if not os.path.exists(path):
        raise UsageError(f"no virtual card at {path} (create one with 'pivtool sim create')")
    try:
        return SimLink(open_sim(path, faults=faults))
    except SimStateError as e:
        raise UsageError(f"cannot load virtual card {path}: {e}") from None


#: Test hook: ``PIVTOOL_SIM_FAULTS=AT:KIND[:COUNT]`` makes ``--sim`` inject a fault at the
#: AT-th command APDU of the connection (KIND: card-removed, transmission-error, reset,
#: garbage, answer-lost). Only the virtual card reads it, so a real key can never be affected.
SIM_FAULTS_ENV = "PIVTOOL_SIM_FAULTS"


def sim_faults_from_env() -> Faults | None:
    """The fault plan in :data:`SIM_FAULTS_ENV`, if set (a malformed value is a usage
    error rather than silently running without the fault the caller asked for)."""
    spec = os.environ.get(SIM_FAULTS_ENV, "").strip()
    if not spec:
        return None
    from .sim.attach import FaultKind, Faults

    parts = spec.split(":")
    kinds = {k.value: k for k in FaultKind}
    try:
        at = int(parts[0])
        kind = kinds[parts[1]] if len(parts) > 1 else FaultKind.CARD_REMOVED
        count = int(parts[2]) if len(parts) > 2 else 1
    except (ValueError, KeyError):
        at = count = 0
        kind = FaultKind.CARD_REMOVED
    if len(parts) > 3 or at < 1 or count < 1:
        raise UsageError(f"{SIM_FAULTS_ENV} must be AT:KIND[:COUNT] with AT, COUNT >= 1 and "
                         f"KIND one of {', '.join(kinds)}")
    return Faults(at=at, kind=kind, count=count)


def open_connection(reader: str | None = None, serial: int | None = None,
                    sim: str | None = None) -> Connection:
    """Open the one card the selection names (at most one of the three)."""
    if sum(x is not None for x in (reader, serial, sim)) > 1:
        raise UsageError("use only one of --reader, --serial and --sim")
    if sim is not None:
        return open_sim_link(sim, sim_faults_from_env())
    from . import pcsc

    if serial is not None:
        return find_by_serial(serial)
    return pcsc.open_reader(reader)


def card_serial(connection: Connection) -> int | None:
    """The YubiKey serial of the card on *connection* (None: no PIV application, a generic
    PIV card, firmware before 5, or an answer that makes no sense). Asked through
    :class:`~pivtool.piv.session.PivSession` (SELECT, GET VERSION, GET SERIAL), which leaves
    the PIV application selected."""
    from .core.errors import ApduError, BadResponseError
    from .piv.session import PivSession
    from .piv.version import has_serial_ins

    try:
        session = PivSession(connection)
        if session.version is None or not has_serial_ins(session.version):
            return None
        return session.get_serial()
    except (NoCardError, ApduError, BadResponseError):
        return None


def find_by_serial(serial: int, shared: bool = False) -> pcsc.PcscConnection:
    """Open the reader holding the YubiKey with *serial*.

    Every reader is tried in turn; busy readers and readers without a card are skipped (and
    named in the error when nothing matches). The returned connection has the PIV applet
    selected.
    """
    from . import pcsc
    from .core.errors import NoReaderError, SharingViolationError

    busy: list[str] = []
    for reader in pcsc.list_readers():
        try:
            conn = pcsc.PcscConnection(reader, shared=shared)
        except SharingViolationError:
            busy.append(reader)
            continue
        except (NoCardError, CardRemovedError, NoReaderError):
            continue
        try:
            if card_serial(conn) == serial:
                return conn
        except TransportError:
            pass
        except BaseException:
            conn.close()
            raise
        conn.close()
    hint = f" (busy readers not checked: {', '.join(busy)})" if busy else ""
    raise NoCardError(f"no YubiKey with serial {serial} found{hint}")


# --------------------------------------------------------------------------------------------
# The virtual card source of ``batch enroll --sim-pile``


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
        from pathlib import Path  # here: opening one card (info...) does not need it

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

    def connect(self, reader: str) -> SimLink:
        """Open the key in *reader* (its state is saved back after every change)."""
        path = self.holding(reader)
        if path is None:
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
