"""A card that is not a YubiKey, for the second slot of the YubiKey-named vpcd reader.

vpcd always gives a reader.conf entry two slots, and pcscd names the second one after the
first (``NAME 00 00`` / ``NAME 00 01``: pcsc-lite's RFAddReader copies the name and
rewrites the last two digits; vpcd's slot count is compiled in). So the second slot of the
"Yubico YubiKey OTP+FIDO+CCID" entry is named like a YubiKey too. ykman treats every such
reader as a USB YubiKey and, when it is empty, retries opening it for 3 s (6 x 0.5 s,
``ScardYubiKeyDevice._open_smartcard_connection``) on every device scan — every ``ykman``
command of the CLI suite.

With this card inserted there, the open succeeds and ykman's device-info read fails at
once (every command is answered 6F00, "no precise diagnosis"), so ykman drops the reader
from the scan without waiting and still sees exactly one YubiKey.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

# A T=1 ATR whose historical bytes name no known card.
FILLER_ATR = bytes.fromhex("3B8180018080")
_NO_PRECISE_DIAGNOSIS = b"\x6f\x00"


def _recv(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n, socket.MSG_WAITALL) if n else b""
    if len(data) < n:
        raise ConnectionError
    return data


def _serve(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            stop.wait(0.05)
            continue
        sock.settimeout(0.5)
        try:
            while not stop.is_set():
                try:
                    length = int.from_bytes(_recv(sock, 2), "big")
                except TimeoutError:
                    continue
                frame = _recv(sock, length)
                if len(frame) == 1:
                    if frame[0] == 4:  # get ATR; power on/off/reset need no answer
                        sock.sendall(len(FILLER_ATR).to_bytes(2, "big") + FILLER_ATR)
                    continue
                sock.sendall(len(_NO_PRECISE_DIAGNOSIS).to_bytes(2, "big")
                             + _NO_PRECISE_DIAGNOSIS)
        except (ConnectionError, OSError):
            pass
        finally:
            sock.close()


@contextlib.contextmanager
def filler_card(port: int) -> Iterator[None]:
    """Keep a non-YubiKey card inserted in the vpcd slot on *port* while the block runs."""
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(port, stop), daemon=True,
                              name=f"filler-card-{port}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
