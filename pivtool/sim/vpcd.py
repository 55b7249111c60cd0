"""Attach the virtual YubiKey to pcscd through vsmartcard's vpcd reader driver.

vpcd listens on a TCP port per reader slot; a card is "inserted" while a client is connected
to it and "removed" when that connection closes. Frames go both ways as a 2-byte big-endian
length followed by that many bytes. From vpcd, a 1-byte frame is a control code (0 power off,
1 power on, 2 reset, 4 get ATR — only 4 is answered, with the ATR); longer frames are command
APDUs, answered with response data + SW1 SW2.

Durability: the card state is saved (atomically, see :func:`pivtool.sim.state.save_state`)
after every command that changed it and *before* the response is sent. Killing this process
at any moment is therefore the same as pulling a real card: a command whose answer the host
saw is on "flash"; one it did not see may or may not be.

Run ``python -m pivtool.sim.vpcd STATE_FILE --port N``; ``pivtool sim serve`` calls
:func:`serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Protocol

from .attach import GARBAGE_RESPONSE, FaultKind, Faults
from .state import CardState, load_state, save_state
from .touch import marker_path

DEFAULT_PORT = 35963  # Debian's /etc/reader.conf.d/vpcd: "Virtual PCD 00 00"
DEFAULT_HOST = "127.0.0.1"

CTRL_POWER_OFF = 0
CTRL_POWER_ON = 1
CTRL_RESET = 2
CTRL_GET_ATR = 4

#: How often a blocked receive looks at the stop flag. Does not delay APDUs: data wakes
#: ``select`` immediately.
_STOP_POLL_S = 0.2
#: Reconnect backoff: start small (pcscd may be a few ms from listening), cap per attempt.
_BACKOFF_START_S = 0.02
_BACKOFF_MAX_S = 0.5


class VpcdCard(Protocol):
    """What the bridge needs from a card (``pivtool.sim.card.VirtualCard`` provides it)."""

    @property
    def atr(self) -> bytes: ...

    def execute(self, apdu: bytes) -> bytes: ...

    def power_cycle(self) -> None: ...


class _Stopped(Exception):
    """The stop flag was raised while waiting for vpcd."""


class _Disconnected(Exception):
    """vpcd closed the connection (pcscd stopped or restarted)."""


def _quickack(sock: socket.socket) -> None:
    """Ask for an immediate ACK of the next segment.

    vpcd sends the length and the payload of a frame in two writes; with delayed ACKs
    (Nagle on vpcd's side waiting for our ACK) every APDU would cost ~40-50 ms. Linux clears
    QUICKACK after use, hence before *every* receive.
    """
    opt = getattr(socket, "TCP_QUICKACK", None)
    if opt is not None:
        with contextlib.suppress(OSError):  # non-Linux kernels
            sock.setsockopt(socket.IPPROTO_TCP, opt, 1)


def _recv_exact(sock: socket.socket, size: int, stop: threading.Event) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        _quickack(sock)
        readable, _, _ = select.select([sock], [], [], _STOP_POLL_S)
        if stop.is_set():
            raise _Stopped
        if not readable:
            continue
        try:
            chunk = sock.recv(size - len(buf))
        except (ConnectionResetError, TimeoutError) as e:
            raise _Disconnected from e
        if not chunk:
            raise _Disconnected
        buf += chunk
    return bytes(buf)


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    try:
        # One write for length + payload, so the peer never waits on a lone 2-byte segment.
        sock.sendall(len(payload).to_bytes(2, "big") + payload)
    except (BrokenPipeError, ConnectionResetError) as e:
        raise _Disconnected from e


def _connect(host: str, port: int, timeout: float, stop: threading.Event) -> socket.socket:
    """Connect to vpcd, retrying with backoff until *timeout* seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = _BACKOFF_START_S
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            sock = socket.create_connection((host, port), timeout=max(0.1, timeout))
        except OSError as e:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"vpcd not reachable on {host}:{port} ({e.strerror or e}); is pcscd "
                    "running with the vpcd driver?"
                ) from e
            stop.wait(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def serve_card(
    card: VpcdCard,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    stop_event: threading.Event | None = None,
    ready_callback: Callable[[], None] | None = None,
    after_command: Callable[[], None] | None = None,
    connect_timeout: float = 10.0,
    reconnect: bool = True,
    faults: Faults | None = None,
) -> None:
    """Plug *card* into vpcd and answer until stopped.

    *after_command* runs after every command APDU, before its response is sent (persistence
    hook). *ready_callback* runs each time the connection to vpcd is up (card inserted). When
    vpcd drops the connection, the card is power-cycled and, with *reconnect*, plugged in
    again (bounded by *connect_timeout*). Returns when *stop_event* is set; raises
    :class:`ConnectionError` when vpcd cannot be reached. *faults* (see :func:`_fault`)
    counts command APDUs over the whole run, so a fault fires once even across
    re-insertions.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    counter = [0]
    while not stop.is_set():
        try:
            sock = _connect(host, port, connect_timeout, stop)
        except _Stopped:
            return
        try:
            if ready_callback is not None:
                ready_callback()
            _answer(sock, card, stop, after_command, faults, counter)
        except _Stopped:
            return
        except _Disconnected:
            # Like a card pulled out and put back: the security status does not survive.
            card.power_cycle()
            if not reconnect:
                return
        finally:
            # Closing the socket is what tells vpcd the card was removed.
            sock.close()


def _fault(card: VpcdCard, kind: FaultKind) -> bytes | None:
    """Inject *kind* instead of answering normally. Returns the response to send, or
    ``None`` to execute the command (on a card that was just reset).

    ``card-removed``: the card leaves the reader before executing the command (the vpcd
    connection closes, then the card is inserted again). ``transmission-error``: a 1-byte
    answer, which PC/SC clients see as a broken response. ``reset``: another program reset
    the card; the command then runs without the verified PIN, the authenticated management
    key or the selected application. ``garbage``: a 9000 answer that is not what the card
    would send (the command is not executed). ``answer-lost`` is handled in :func:`_answer`:
    the command runs, then the card leaves before its answer is sent."""
    if kind is FaultKind.CARD_REMOVED:
        raise _Disconnected
    if kind is FaultKind.TRANSMISSION_ERROR:
        return b"\x6f"
    if kind is FaultKind.RESET:
        card.power_cycle()
        return None
    data, sw = GARBAGE_RESPONSE
    return data + sw.to_bytes(2, "big")


def _answer(
    sock: socket.socket,
    card: VpcdCard,
    stop: threading.Event,
    after_command: Callable[[], None] | None,
    faults: Faults | None = None,
    counter: list[int] | None = None,
) -> None:
    counter = counter if counter is not None else [0]
    while True:
        length = int.from_bytes(_recv_exact(sock, 2, stop), "big")
        frame = _recv_exact(sock, length, stop) if length else b""
        if len(frame) == 1:
            code = frame[0]
            if code == CTRL_GET_ATR:
                _send_frame(sock, card.atr)
            elif code in (CTRL_POWER_OFF, CTRL_POWER_ON, CTRL_RESET):
                # Every power transition forgets the verified PIN and the authenticated
                # management key, as on a real card.
                card.power_cycle()
            # Unknown control codes get no answer: vpcd expects none for them.
            continue
        if not frame:
            continue
        counter[0] += 1
        kind = faults.check(counter[0]) if faults is not None else None
        lost = kind is FaultKind.ANSWER_LOST
        injected = _fault(card, kind) if kind is not None and not lost else None
        if injected is not None:
            _send_frame(sock, injected)
            continue
        response = card.execute(frame)
        if after_command is not None:
            after_command()
        if lost:
            # Executed and saved; the answer never leaves: the card is pulled (and put back).
            raise _Disconnected
        _send_frame(sock, response)


@contextlib.contextmanager
def _signals_stop(stop: threading.Event) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into *stop* while serving (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old_term = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def serve(
    state_path: str | os.PathLike[str],
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    stop_event: threading.Event | None = None,
    ready_callback: Callable[[], None] | None = None,
    connect_timeout: float = 10.0,
    faults: Faults | None = None,
    interface: str | None = None,
) -> None:
    """Serve the virtual card stored in *state_path* on vpcd port *port* until stopped.

    *interface* ("usb" or "nfc") overrides which ATR the card presents for this session.

    Stops on SIGTERM/SIGINT (when called from the main thread) or when *stop_event* is set;
    raises :class:`ConnectionError` if vpcd is not reachable within *connect_timeout*
    seconds. The state file is always current: the card calls back after each command
    that changed persistent state, and we save before the response goes out. Writes one
    line "serving <state> on vpcd port N" to stderr when connected (nothing secret).
    """
    from .card import VirtualCard

    path = Path(state_path)
    state = load_state(path)
    if interface is not None:
        state.interface = interface
    card = VirtualCard(state)
    card.touch.marker = marker_path(path)  # `pivtool sim touch PATH` touches this card

    def persist(changed: CardState) -> None:
        # Runs inside execute(), i.e. before _answer sends the response: a SIGKILL after
        # the host saw a success can never lose that change.
        save_state(changed, path)

    card.on_change = persist
    stop = stop_event if stop_event is not None else threading.Event()

    def ready() -> None:
        print(f"serving {path} on vpcd port {port}", file=sys.stderr, flush=True)
        if ready_callback is not None:
            ready_callback()

    with _signals_stop(stop):
        serve_card(card, port, host, stop, ready, None, connect_timeout, faults=faults)


def main(argv: list[str] | None = None) -> int:
    """``python -m pivtool.sim.vpcd STATE_FILE [--port N] [--host H]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pivtool.sim.vpcd",
        description="Serve a virtual YubiKey state file through pcscd's vpcd driver.",
    )
    parser.add_argument("state", help="state file (create one with pivtool sim new)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="vpcd port")
    parser.add_argument("--host", default=DEFAULT_HOST, help="vpcd host")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to keep retrying while vpcd is not listening",
    )
    args = parser.parse_args(argv)
    try:
        serve(args.state, port=args.port, host=args.host, connect_timeout=args.connect_timeout)
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        # Exception text from the state loader never contains field values.
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
