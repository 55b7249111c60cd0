"""Open the card a user selected: a PC/SC reader (by name or YubiKey serial) or a virtual
YubiKey state file. The emulator knows nothing of pivtool's error classes (it is written
independently), so its transport failures are translated here, once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .core.errors import CardRemovedError, TransportError, UsageError

if TYPE_CHECKING:
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
    from .core.errors import ApduError, BadResponseError, NoCardError
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
    from .core.errors import NoCardError, NoReaderError, SharingViolationError

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
