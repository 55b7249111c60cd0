"""The vpcd bridge's framing, power handling, persistence and shutdown, against a fake vpcd
(a plain TCP server in the test); no pcscd needed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pivtool.sim import vpcd
from pivtool.sim.state import load_state, new_card_state, save_state

ATR = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")


class StubCard:
    atr = ATR

    def __init__(self) -> None:
        self.power_cycles = 0
        self.apdus: list[bytes] = []

    def execute(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return b"\x01\x02\x90\x00"

    def power_cycle(self) -> None:
        self.power_cycles += 1


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(2, "big") + payload


def _read_frame(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 2:
        head += sock.recv(2 - len(head))
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return body


def _listener() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    return server, port


def test_framing_and_power_control() -> None:
    server, port = _listener()
    server.listen(1)
    card = StubCard()
    stop = threading.Event()
    ready = threading.Event()
    t = threading.Thread(target=vpcd.serve_card, args=(card, port, "127.0.0.1", stop, ready.set))
    t.start()
    try:
        conn, _ = server.accept()
        with conn:
            conn.sendall(_frame(b"\x04"))
            assert _read_frame(conn) == ATR
            conn.sendall(_frame(b"\x00") + _frame(b"\x01") + _frame(b"\x02"))
            # vpcd writes length and payload separately; the bridge must cope.
            conn.sendall(b"\x00\x05")
            time.sleep(0.01)
            conn.sendall(b"\x00\xfd\x00\x00\x00")
            assert _read_frame(conn) == b"\x01\x02\x90\x00"
            assert card.apdus == [b"\x00\xfd\x00\x00\x00"]
            assert card.power_cycles == 3
            assert ready.is_set()
    finally:
        stop.set()
        t.join(2)
        server.close()
    assert not t.is_alive()


def test_waits_for_vpcd_then_reconnects_after_drop() -> None:
    server, port = _listener()  # bound but not listening yet: connection refused
    card = StubCard()
    stop = threading.Event()
    t = threading.Thread(target=vpcd.serve_card, args=(card, port, "127.0.0.1", stop),
                         kwargs={"connect_timeout": 5.0})
    t.start()
    try:
        time.sleep(0.3)
        server.listen(1)
        conn, _ = server.accept()
        conn.sendall(_frame(b"\x04"))
        assert _read_frame(conn) == ATR
        conn.close()  # pcscd went away: card pulled, then plugged in again
        conn, _ = server.accept()
        with conn:
            conn.sendall(_frame(b"\x04"))
            assert _read_frame(conn) == ATR
        assert card.power_cycles >= 1
    finally:
        stop.set()
        t.join(2)
        server.close()
    assert not t.is_alive()


def test_gives_up_when_vpcd_never_appears() -> None:
    server, port = _listener()
    server.close()
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="vpcd not reachable"):
        vpcd.serve_card(StubCard(), port, connect_timeout=0.5)
    assert time.monotonic() - t0 < 2


def test_serve_persists_before_answering(tmp_path: Path) -> None:
    """serve(): a state change is on disk by the time the response frame arrives."""
    path = tmp_path / "card.json"
    save_state(new_card_state(serial=123), path)
    server, port = _listener()
    server.listen(1)
    stop = threading.Event()
    t = threading.Thread(target=vpcd.serve, args=(path, port, "127.0.0.1", stop))
    t.start()
    try:
        conn, _ = server.accept()
        with conn:
            conn.sendall(_frame(bytes.fromhex("00A4040009A00000030800001000")))
            assert _read_frame(conn)[-2:] == b"\x90\x00"
            conn.sendall(_frame(bytes.fromhex("0020008008313131313131FFFF")))  # wrong PIN
            assert _read_frame(conn) == b"\x63\xc2"
            assert load_state(path).pin_retries_left == 2
    finally:
        stop.set()
        t.join(2)
        server.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_main_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    save_state(new_card_state(serial=123), path)
    server, port = _listener()
    server.listen(1)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pivtool.sim.vpcd", str(path), "--port", str(port)],
        stderr=subprocess.PIPE, env=env,
    )
    try:
        server.settimeout(10)
        conn, _ = server.accept()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        conn.settimeout(2)
        assert conn.recv(10) == b""  # socket closed == card removed
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert err.strip() == f"serving {path} on vpcd port {port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
