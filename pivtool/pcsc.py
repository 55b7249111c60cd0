"""PC/SC access: readers, card connections and card events (which card is in a reader is
the PIV layer's business: ``pivtool.connect`` asks a :class:`~pivtool.piv.session.PivSession`).

This is the only module that imports pyscard, and it does so inside functions: ``import
pivtool.pcsc`` must stay cheap for commands that never touch a reader (and for machines where
pyscard's C extension or the PC/SC library is missing, which then fail only when a reader is
actually needed, with :class:`~pivtool.core.errors.NoServiceError`).

We use pyscard's thin ``smartcard.scard`` layer rather than its object API: it hands back the
raw PC/SC result codes, which we translate into pivtool's :class:`TransportError` family with
one-line messages, and it offers ``SCardGetStatusChange``/``SCardCancel`` for event-driven
monitoring without pyscard's polling observer threads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from .core.errors import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    NoServiceError,
    SharingViolationError,
    TransportError,
)
from .core.events import CardEvent, EventKind

__all__ = [
    "CardEvent",
    "EventKind",
    "PcscCardSource",
    "PcscConnection",
    "ReaderMonitor",
    "list_readers",
    "open_reader",
    "watch_events",
]

#: pcsc-lite's pseudo reader whose state changes when readers are added or removed.
PNP_NOTIFICATION = "\\\\?PnP?\\Notification"


# --------------------------------------------------------------------------------------------
# pyscard loading and error translation


def _scard() -> ModuleType:
    """Import pyscard's low-level module on first use."""
    try:
        return _load_scard()
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise NoServiceError(f"pyscard (PC/SC bindings) is not usable: {e}") from e


def _load_scard() -> ModuleType:
    """``smartcard.scard`` without pyscard's package ``__init__``, which imports its object
    API (Session, System, the reader and observer classes: about twenty modules pivtool never
    uses, a measurable part of ``pivtool info``'s start-up). A bare stand-in package with the
    same search path lets the low-level module load alone; the stand-in is removed at once,
    so a later ``import smartcard`` (ykman in the same process) gets the real package."""
    loaded = sys.modules.get("smartcard.scard")
    if loaded is not None:
        return loaded
    if "smartcard" in sys.modules:
        return importlib.import_module("smartcard.scard")
    spec = importlib.util.find_spec("smartcard")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'smartcard'")
    stand_in = ModuleType("smartcard")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["smartcard"] = stand_in
    try:
        return importlib.import_module("smartcard.scard")
    finally:
        if sys.modules.get("smartcard") is stand_in:
            del sys.modules["smartcard"]


def _code(hresult: int) -> int:
    """PC/SC codes come back signed or unsigned depending on the platform; normalise."""
    return hresult & 0xFFFFFFFF


# Values from pcsclite.h / winscard.h; spelled out so the mapping needs no pyscard import.
_E_CANCELLED = 0x80100002
_E_SHARING_VIOLATION = 0x8010000B
_E_NO_SMARTCARD = 0x8010000C
_E_UNKNOWN_READER = 0x80100009
_E_TIMEOUT = 0x8010000A
_E_READER_UNAVAILABLE = 0x80100017
_E_NO_SERVICE = 0x8010001D
_E_SERVICE_STOPPED = 0x8010001E
_E_NO_READERS_AVAILABLE = 0x8010002E
_E_INVALID_HANDLE = 0x80100003
_W_UNRESPONSIVE_CARD = 0x80100066
_W_UNPOWERED_CARD = 0x80100067
_W_RESET_CARD = 0x80100068
_W_REMOVED_CARD = 0x80100069
_E_COMM_DATA_LOST = 0x8010002F
_E_NOT_TRANSACTED = 0x80100016
_E_PROTO_MISMATCH = 0x8010000F
_E_UNSUPPORTED_FEATURE = 0x8010001F


def _pcsc_error(hresult: int, what: str, reader: str | None = None) -> TransportError:
    """Translate a PC/SC result code into the matching :class:`TransportError`.

    *what* says what we were doing ("connecting", "transmitting"); the message is one line and
    names the reader, never command data.
    """
    code = _code(hresult)
    where = f" ({reader})" if reader else ""
    if code == _E_NO_SERVICE:
        return NoServiceError("PC/SC service not available: is pcscd running?")
    if code == _E_SERVICE_STOPPED:
        return NoServiceError(f"PC/SC service stopped while {what}")
    if code in (_E_UNKNOWN_READER, _E_READER_UNAVAILABLE, _E_NO_READERS_AVAILABLE):
        return NoReaderError(f"reader not available while {what}{where}")
    if code == _E_SHARING_VIOLATION:
        return SharingViolationError(
            f"card is in use by another program{where}; close it (e.g. scdaemon, another "
            "pivtool) and retry"
        )
    if code == _W_REMOVED_CARD:
        return CardRemovedError(f"card was removed while {what}{where}")
    if code == _W_RESET_CARD:
        # Another program (or the reader) reset the card: PIN and management-key
        # authentication are gone, so continuing would fail confusingly later.
        return CardRemovedError(
            f"card was reset by another program while {what}{where}; authentication is lost"
        )
    if code == _E_NO_SMARTCARD:
        if what == "connecting":
            return NoCardError(f"no card in reader{where}")
        return CardRemovedError(f"card was removed while {what}{where}")
    if code in (_W_UNRESPONSIVE_CARD, _W_UNPOWERED_CARD):
        return NoCardError(f"card does not respond{where}")
    try:
        text = str(_scard().SCardGetErrorMessage(hresult)).strip().rstrip(".")
    except NoServiceError:  # pragma: no cover
        text = "unknown error"
    return TransportError(f"PC/SC error while {what}{where}: {text} (0x{code:08X})")


def _establish() -> Any:
    """Open a PC/SC context or raise :class:`NoServiceError`."""
    scard = _scard()
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise _pcsc_error(hresult, "connecting to the PC/SC service")
    return context


def _release(context: Any) -> None:
    scard = _scard()
    scard.SCardReleaseContext(context)


def _list(context: Any) -> list[str]:
    scard = _scard()
    hresult, readers = scard.SCardListReaders(context, [])
    code = _code(hresult)
    if code == _E_NO_READERS_AVAILABLE:
        return []
    if hresult != scard.SCARD_S_SUCCESS:
        raise _pcsc_error(hresult, "listing readers")
    return [str(r) for r in readers]


# --------------------------------------------------------------------------------------------
# Readers and connections


def list_readers() -> list[str]:
    """Return the names of all PC/SC readers (empty when there are none).

    Raises :class:`NoServiceError` when pcscd is not reachable.
    """
    context = _establish()
    try:
        return _list(context)
    finally:
        _release(context)


def select_reader(readers: list[str], name_substring: str | None) -> str:
    """Pick the one reader whose name contains *name_substring* (case-insensitive).

    ``None`` selects the only reader there is. Ambiguity is an error rather than a guess:
    with two keys plugged in, acting on the wrong one can wipe it.
    """
    if not readers:
        raise NoReaderError("no smart card readers found")
    if name_substring is None:
        candidates = readers
    else:
        needle = name_substring.casefold()
        candidates = [r for r in readers if needle in r.casefold()]
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(repr(r) for r in (candidates or readers))
    if not candidates:
        raise NoReaderError(f"no reader matches {name_substring!r}; readers: {listing}")
    if name_substring is None:
        raise NoReaderError(f"several readers present, choose one: {listing}")
    raise NoReaderError(f"{name_substring!r} matches several readers: {listing}")


class PcscConnection:
    """A :class:`~pivtool.core.connection.Connection` to the card in one PC/SC reader.

    Exclusive by default: PIV state (PIN verified, management key authenticated) belongs to
    the card, not to a connection, so a second program talking to the card in between could
    act with our authentication. ``shared=True`` is for read-only use next to other programs.

    On close an exclusive connection resets the card, so that no verified PIN outlives this
    program; a shared connection leaves the card as it is, not to disturb the other users.
    """

    def __init__(self, reader: str, shared: bool = False) -> None:
        scard = _scard()
        self._reader = reader
        self.shared = shared
        self._context = _establish()
        self._card: Any = None
        try:
            mode = scard.SCARD_SHARE_SHARED if shared else scard.SCARD_SHARE_EXCLUSIVE
            protocols = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
            hresult, card, protocol = scard.SCardConnect(
                self._context, reader, mode, protocols
            )
            if hresult != scard.SCARD_S_SUCCESS:
                raise _pcsc_error(hresult, "connecting", reader)
            self._card = card
            self._protocol = protocol
            hresult, _name, _state, _proto, atr = scard.SCardStatus(card)
            if hresult != scard.SCARD_S_SUCCESS:
                raise _pcsc_error(hresult, "reading the ATR", reader)
            self._atr = bytes(atr)
        except BaseException:
            self.close()
            raise

    @property
    def atr(self) -> bytes:
        """The card's answer-to-reset, as reported when we connected."""
        return self._atr

    @property
    def reader_name(self) -> str:
        """The PC/SC reader name."""
        return self._reader

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._card is None

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU; return (response data, SW)."""
        if self._card is None:
            raise TransportError(f"connection to {self._reader} is closed")
        scard = _scard()
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            raise _pcsc_error(hresult, "transmitting", self._reader)
        raw = bytes(response)
        if len(raw) < 2:
            # A reader that returns fewer than two bytes lost the card mid-response.
            raise CardRemovedError(f"truncated response from {self._reader}")
        return raw[:-2], int.from_bytes(raw[-2:], "big")

    def close(self) -> None:
        """Disconnect and release the PC/SC context. Safe to call twice."""
        scard = _scard()
        if self._card is not None:
            disposition = scard.SCARD_LEAVE_CARD if self.shared else scard.SCARD_RESET_CARD
            # Errors here mean the card or service is already gone; nothing left to release.
            scard.SCardDisconnect(self._card, disposition)
            self._card = None
        if self._context is not None:
            _release(self._context)
            self._context = None

    def __enter__(self) -> PcscConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("shared" if self.shared else "exclusive")
        return f"PcscConnection({self._reader!r}, {state})"


def open_reader(name_substring: str | None = None, shared: bool = False) -> PcscConnection:
    """Connect to the card in the reader whose name contains *name_substring*.

    The match is case-insensitive and must be unique (``None``: the only reader present);
    otherwise :class:`NoReaderError` lists the candidates. An empty reader raises
    :class:`NoCardError`, a card held by another program :class:`SharingViolationError`.
    """
    reader = select_reader(list_readers(), name_substring)
    return PcscConnection(reader, shared=shared)


# --------------------------------------------------------------------------------------------
# Card events


_STATE_PRESENT = 0x20
_STATE_UNAWARE = 0x00
_STATE_CHANGED = 0x02
_STATE_UNAVAILABLE = 0x08
#: pcsc-lite keeps a per-reader event counter in the upper 16 bits of the event state; a
#: changed counter with "present" both times means the card was swapped between two waits.
_COUNTER_SHIFT = 16
#: Longest single blocking wait. Events still arrive the moment pcscd sees them; the bound
#: is a safety net behind stop()'s repeated SCardCancel (a cancel that reaches pcscd before
#: the wait is registered is lost), so a missed cancel costs at most this long.
_GUARD_MS = 2000


class ReaderMonitor:
    """Card insertion/removal events from PC/SC, without polling.

    Blocks in ``SCardGetStatusChange`` (which also watches pcsc-lite's PnP pseudo reader, so
    readers that appear later are picked up). Meant for one worker thread; :meth:`stop` may be
    called from any thread and wakes the waiting one with ``SCardCancel``.

    *reader_filter* is a case-insensitive substring; ``None`` watches every reader. With
    *report_present*, cards already present at the first wait are reported as insertions.
    """

    def __init__(self, reader_filter: str | None = None, report_present: bool = True) -> None:
        self._filter = reader_filter.casefold() if reader_filter else None
        self._report_present = report_present
        self._context: Any = _establish()
        self._states: dict[str, int] = {}
        self._pnp_state = _STATE_UNAWARE
        self._first = True
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._waiting = False

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        return self._stopped.is_set()

    def _wanted(self, reader: str) -> bool:
        return self._filter is None or self._filter in reader.casefold()

    def _sync_readers(self, events: list[CardEvent]) -> None:
        """Bring the watched reader set up to date, emitting added/removed readers."""
        current = [r for r in _list(self._context) if self._wanted(r)]
        for reader in current:
            if reader not in self._states:
                self._states[reader] = _STATE_UNAWARE
                if not self._first:
                    events.append(CardEvent(EventKind.READER_ADDED, reader))
        for reader in list(self._states):
            if reader not in current:
                if self._states[reader] & _STATE_PRESENT:
                    events.append(CardEvent(EventKind.REMOVED, reader))
                del self._states[reader]
                events.append(CardEvent(EventKind.READER_REMOVED, reader))

    def wait(self, timeout: float | None = None) -> list[CardEvent]:
        """Block until something happens (or *timeout* seconds pass); return the events.

        Returns an empty list on timeout and after :meth:`stop`.
        """
        scard = _scard()
        if self.stopped:
            return []
        events: list[CardEvent] = []
        self._sync_readers(events)
        if events and not self._first:
            return events
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        request = [(r, self._states[r]) for r in self._states]
        request.append((PNP_NOTIFICATION, self._pnp_state))
        while True:
            if self._first:
                ms = 0  # UNAWARE states return at once with every reader's current state
            elif deadline is None:
                ms = _GUARD_MS
            else:
                ms = min(_GUARD_MS, max(0, int((deadline - time.monotonic()) * 1000)))
            with self._lock:
                # Checked under the lock that stop() takes, so a stop either sees us
                # waiting (and cancels) or we see it here (and do not start waiting).
                if self.stopped:
                    return []
                self._waiting = True
            try:
                hresult, answers = scard.SCardGetStatusChange(self._context, ms, request)
            finally:
                with self._lock:
                    self._waiting = False
            code = _code(hresult)
            if code == _E_CANCELLED or self.stopped:
                return []
            if code != _E_TIMEOUT:
                break
            if self._first:  # nothing to report, but the initial sweep is done
                self._first = False
                return []
            if deadline is not None and time.monotonic() >= deadline:
                return []
        if code in (_E_UNKNOWN_READER, _E_READER_UNAVAILABLE):
            # A reader vanished between listing and waiting; re-list next time.
            return self._drop_missing(events)
        if hresult != scard.SCARD_S_SUCCESS:
            raise _pcsc_error(hresult, "waiting for card events")
        for name, event_state, atr in answers:
            if name == PNP_NOTIFICATION:
                self._pnp_state = event_state & ~_STATE_CHANGED
                continue
            old = self._states.get(name, _STATE_UNAWARE)
            new = event_state & ~_STATE_CHANGED
            self._states[name] = new
            was = bool(old & _STATE_PRESENT) and not self._first
            now = bool(new & _STATE_PRESENT) and not new & _STATE_UNAVAILABLE
            swapped = (
                was and now and old != _STATE_UNAWARE
                and (old >> _COUNTER_SHIFT) != (new >> _COUNTER_SHIFT)
                and old & 0xFFFF == new & 0xFFFF
            )
            if self._first:
                if now and self._report_present:
                    events.append(CardEvent(EventKind.INSERTED, name, bytes(atr)))
            elif swapped:
                events.append(CardEvent(EventKind.REMOVED, name))
                events.append(CardEvent(EventKind.INSERTED, name, bytes(atr)))
            elif was and not now:
                events.append(CardEvent(EventKind.REMOVED, name))
            elif now and not was:
                events.append(CardEvent(EventKind.INSERTED, name, bytes(atr)))
        self._first = False
        return events

    def _drop_missing(self, events: list[CardEvent]) -> list[CardEvent]:
        self._sync_readers(events)
        return events

    def __iter__(self) -> Iterator[CardEvent]:
        """Yield events until :meth:`stop` is called."""
        while not self.stopped:
            yield from self.wait()

    def stop(self) -> None:
        """Make the waiting thread return; safe from any thread (and from a callback)."""
        self._stopped.set()
        deadline = time.monotonic() + 1.0
        while True:
            with self._lock:
                if self._context is None or not self._waiting:
                    return
                # A cancel that arrives between our flag and pcscd registering the wait
                # is lost, so repeat it until the waiter is out.
                _scard().SCardCancel(self._context)
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def close(self) -> None:
        """Stop and release the PC/SC context. Call from the thread that waits (or after it
        has returned)."""
        self.stop()
        with self._lock:
            if self._context is not None:
                _release(self._context)
                self._context = None

    def __enter__(self) -> ReaderMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def watch_events(
    callback: Callable[[CardEvent], object],
    stop_event: threading.Event,
    reader_filter: str | None = None,
    report_present: bool = True,
) -> None:
    """Call *callback* for every card event until *stop_event* is set.

    Blocking; run it in a worker thread. Setting *stop_event* (also from inside the callback)
    ends it promptly: a small helper thread turns the event into ``SCardCancel``.
    """
    with ReaderMonitor(reader_filter, report_present) as monitor:
        done = threading.Event()

        def canceller() -> None:
            # Waiting on two things at once is not possible with threading.Event, so wake up
            # now and then to notice that the watch ended for another reason.
            while not done.is_set():
                if stop_event.wait(0.5):
                    monitor.stop()
                    return

        helper = threading.Thread(target=canceller, name="pivtool-pcsc-cancel", daemon=True)
        helper.start()
        try:
            while not stop_event.is_set() and not monitor.stopped:
                for event in monitor.wait():
                    callback(event)
                    if stop_event.is_set():
                        break
        finally:
            done.set()
            helper.join()


# --------------------------------------------------------------------------------------------
# The card source of unattended work (``batch enroll``)


class PcscCardSource:
    """The :class:`~pivtool.core.events.CardSource` of ``batch enroll``: every PC/SC
    reader, insertions and removals from one blocking ``SCardGetStatusChange`` monitor (cards
    already present count as inserted)."""

    def __init__(self) -> None:
        self._monitor = ReaderMonitor(None, report_present=True)

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

    def connect(self, reader: str) -> PcscConnection:
        """Open the card in *reader* (exclusive)."""
        return PcscConnection(reader)

    def card_done(self, reader: str) -> None:
        """Nothing to do: the person pulls the key (the monitor reports it)."""

    def stop(self) -> None:
        """Wake the waiting thread; safe from any thread."""
        self._monitor.stop()

    def close(self) -> None:
        """Release the PC/SC context."""
        self._monitor.close()
