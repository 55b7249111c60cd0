"""Bench-only vpcd bridge: the virtual YubiKey of ``pivtool sim serve``, plus an APDU log and
state snapshots, driven over a Unix-socket side channel.

Run ``python bench/counting_serve.py STATE --port N --control SOCKET``. The card is the same
:class:`pivtool.sim.card.VirtualCard` behind the same :func:`pivtool.sim.vpcd.serve_card` loop
that ``pivtool sim serve`` uses; what differs is only around it:

* every command APDU is recorded (CLA INS P1 P2, and for GET DATA the object tag) *before*
  the card answers it, so once a client process has exited the log holds all its commands.
  Command data is never recorded: VERIFY, CHANGE REFERENCE, SET MANAGEMENT KEY and friends
  carry secrets (even bench-only ones should not land in files);
* the state is not saved to disk after each change (``sim serve`` does that for
  durability). Saving costs every tool the same, and leaving it out keeps the card's share of
  the wall time small, which is what makes the *tools'* costs visible;
* the bench restores a prepared card state between runs (``restore``), so a state-changing
  operation (PIN change, key generation) starts from the same card for every tool and round
  without pulling the card out of the reader (pcscd would take ~0.4 s to notice).

The side channel takes one JSON object per line and answers one per line:

``{"op": "take"}``
    -> ``{"apdus": ["00 A4 04 00", "00 CB 3F FF 5FC102", ...], "card_seconds": 0.0012}``
    (the commands, and the time spent inside the card, since the last take); clears both.
``{"op": "restore", "path": FILE}``
    -> ``{"ok": true}``: the card now holds the state saved in FILE, as if freshly inserted.
``{"op": "summary"}``
    -> what the card holds (slots with keys, objects, PIN/PUK default flags, management key
    type), so the bench can check that every tool reached the same result.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pivtool.sim.card import VirtualCard
from pivtool.sim.consts import DEFAULT_PIN, DEFAULT_PUK
from pivtool.sim.state import CardState, load_state
from pivtool.sim.vpcd import serve_card

INS_GET_DATA = 0xCB


def describe(apdu: bytes) -> str:
    """A log line for one command APDU: header bytes, and the object tag of a GET DATA.

    Nothing else from the command data: it may be a PIN, PUK or key."""
    if len(apdu) < 4:
        return "short " + apdu.hex()
    head = " ".join(f"{b:02X}" for b in apdu[:4])
    if apdu[1] == INS_GET_DATA and len(apdu) > 5:
        # Short APDU: Lc at [4]; extended: 00 Lc1 Lc2 at [4:7].
        data = apdu[7:] if apdu[4] == 0 and len(apdu) > 7 else apdu[5:]
        if len(data) >= 2 and data[0] == 0x5C:
            head += " " + data[2:2 + data[1]].hex().upper()
    return head


class CountingCard:
    """A :class:`VirtualCard` whose commands are logged and whose state can be swapped.

    One lock around everything: vpcd traffic runs on the main thread and the side channel
    on another, and a swap must never land in the middle of a command."""

    def __init__(self, state: CardState) -> None:
        self._card = VirtualCard(state)
        self._lock = threading.Lock()
        self._log: list[str] = []
        self._busy = 0.0  # seconds spent inside VirtualCard.execute since the last take
        self._cache: dict[str, CardState] = {}

    # --- what serve_card needs (pivtool.sim.vpcd.VpcdCard) ---------------------------

    @property
    def atr(self) -> bytes:
        with self._lock:
            return self._card.atr

    def execute(self, apdu: bytes) -> bytes:
        with self._lock:
            self._log.append(describe(apdu))
            t0 = time.perf_counter()
            try:
                return self._card.execute(apdu)
            finally:
                # The card's own share of a tool's wall time (RSA key generation is the
                # big, and randomly long, one), so the bench can tell it from the tool's.
                self._busy += time.perf_counter() - t0

    def power_cycle(self) -> None:
        with self._lock:
            self._card.power_cycle()

    # --- side channel -----------------------------------------------------------------

    def take(self) -> tuple[list[str], float]:
        with self._lock:
            log, self._log = self._log, []
            busy, self._busy = self._busy, 0.0
        return log, busy

    def restore(self, path: str) -> None:
        state = self._cache.get(path)
        if state is None:
            # Parsing the JSON and its PEM keys is the slow part; do it once per file.
            state = self._cache[path] = load_state(Path(path))
        with self._lock:
            # A fresh VirtualCard: no PIN verified, nothing selected, as after insertion.
            self._card = VirtualCard(copy.deepcopy(state))

    def summary(self) -> dict[str, Any]:
        with self._lock:
            st = self._card.state
            return {
                "keys": {f"{slot:02x}": key.algorithm for slot, key in sorted(st.keys.items())},
                "objects": sorted(f"{tag:X}" for tag in st.objects),
                "pin_default": st.pin == DEFAULT_PIN,
                "puk_default": st.puk == DEFAULT_PUK,
                "mgmt_key_type": st.mgmt_key_type,
            }


def _handle(card: CountingCard, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "take":
        apdus, busy = card.take()
        return {"apdus": apdus, "card_seconds": busy}
    if op == "restore":
        card.restore(str(request["path"]))
        return {"ok": True}
    if op == "summary":
        return card.summary()
    return {"error": f"unknown op {op!r}"}


def _control_loop(card: CountingCard, server: socket.socket, stop: threading.Event) -> None:
    server.settimeout(0.2)  # look at the stop flag now and then
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    answer = _handle(card, json.loads(line))
                except Exception as e:  # report to the bench instead of dying silently
                    answer = {"error": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(answer).encode() + b"\n")
                f.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="counting_serve.py", description=__doc__)
    parser.add_argument("state", help="initial state file")
    parser.add_argument("--port", type=int, required=True, help="vpcd port")
    parser.add_argument("--control", required=True, help="Unix socket for the side channel")
    args = parser.parse_args(argv)

    card = CountingCard(load_state(Path(args.state)))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(args.control)
    server.listen(4)
    control = threading.Thread(target=_control_loop, args=(card, server, stop), daemon=True)
    control.start()
    try:
        serve_card(card, port=args.port, stop_event=stop,
                   ready_callback=lambda: print("card inserted", file=sys.stderr, flush=True))
    except ConnectionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
