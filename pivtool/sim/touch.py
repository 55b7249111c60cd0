"""The virtual YubiKey's touch sensor.

A key whose touch policy asks for it (slot keys with touch policy ALWAYS, or CACHED when the
last touch is older than 15 s; a management key set with touch) blinks and waits for a
touch before it answers; without one within the timeout (a YubiKey waits about 15 s) the
command fails with 6982, security status not satisfied (yubico-piv-tool reports exactly
that, "Failed sign command with code 6982", when nobody touched the key).

Modes (``CardState.touch_mode``): ``auto`` — every touch is given at once (the default, so
scripts and suites need nobody at the desk); ``manual`` — a touch must really happen:
:meth:`TouchSensor.press` in-process (test hook), or ``pivtool sim touch STATE_FILE`` from
another process, which leaves a marker file beside the state file (``STATE_FILE.touch``)
that the waiting card takes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

TOUCH_MODES = ("auto", "manual")
DEFAULT_TIMEOUT_S = 15.0
#: A marker written this long before the card started waiting still counts (a person who
#: touches as the prompt appears); an older one is stale and is ignored.
_MARKER_GRACE_S = 2.0
_POLL_S = 0.05


def marker_path(state_path: str | os.PathLike[str]) -> Path:
    """Where ``pivtool sim touch`` leaves a touch for the card served from *state_path*."""
    return Path(f"{os.fspath(state_path)}.touch")


def press_marker(state_path: str | os.PathLike[str]) -> Path:
    """Touch the card served from *state_path* (from any process): write the marker."""
    path = marker_path(state_path)
    path.write_bytes(b"")
    os.utime(path)
    return path


class TouchSensor:
    """What the card asks when a touch is required."""

    def __init__(self, mode: str = "auto", timeout: float = DEFAULT_TIMEOUT_S,
                 marker: Path | None = None) -> None:
        if mode not in TOUCH_MODES:
            raise ValueError(f"touch mode must be one of {TOUCH_MODES}")
        self.mode = mode
        self.timeout = timeout
        self.marker = marker
        self.waiting = threading.Event()  # set while the key "blinks"
        self._pressed = threading.Event()

    def press(self) -> None:
        """Touch the key (in-process). Only a touch while it waits counts."""
        if self.waiting.is_set():
            self._pressed.set()

    def wait(self) -> bool:
        """Blink until touched (True) or until the timeout (False)."""
        if self.mode == "auto":
            return True
        start = time.time()
        deadline = time.monotonic() + self.timeout
        self._pressed.clear()
        self.waiting.set()
        try:
            while True:
                if self._pressed.is_set() or self._take_marker(start):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pressed.wait(min(_POLL_S, left))
        finally:
            self.waiting.clear()
            self._pressed.clear()

    def _take_marker(self, since: float) -> bool:
        if self.marker is None:
            return False
        try:
            fresh = self.marker.stat().st_mtime >= since - _MARKER_GRACE_S
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        return fresh
