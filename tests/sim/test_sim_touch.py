"""Touch that must really happen (issue 20): the manual touch sensor of the virtual key.

A YubiKey blinks and waits (about 15 s) when a key's touch policy asks; without a touch the
command fails with 6982. In-process the test presses :meth:`TouchSensor.press`; across
processes ``pivtool sim touch STATE`` leaves a marker the waiting card takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from simhelpers import YubikitConnection
from yubikit.core.smartcard import ApduError
from yubikit.piv import (
    DEFAULT_MANAGEMENT_KEY,
    KEY_TYPE,
    PIN_POLICY,
    SLOT,
    TOUCH_POLICY,
    PivSession,
)

from pivtool.sim import VirtualCard
from pivtool.sim.state import new_card_state, save_state
from pivtool.sim.touch import TouchSensor, marker_path

REPO = Path(__file__).resolve().parents[2]


def _card_with_key(make_card: Callable[..., VirtualCard],
                   touch: TOUCH_POLICY) -> tuple[VirtualCard, PivSession]:
    card = make_card()
    piv = PivSession(YubikitConnection(card))
    piv.authenticate(DEFAULT_MANAGEMENT_KEY)
    piv.generate_key(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, PIN_POLICY.NEVER, touch)
    card.touch = TouchSensor("manual", timeout=0.3)
    return card, piv


def _sign(piv: PivSession) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return piv.sign(SLOT.AUTHENTICATION, KEY_TYPE.ECCP256, b"data",
                    hashes.SHA256(), ec.ECDSA(hashes.SHA256()))  # type: ignore[arg-type]


def _press_when_waiting(sensor: TouchSensor) -> threading.Thread:
    def run() -> None:
        assert sensor.waiting.wait(5)
        sensor.press()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_no_touch_times_out_6982(make_card: Callable[..., VirtualCard]) -> None:
    card, piv = _card_with_key(make_card, TOUCH_POLICY.ALWAYS)
    start = time.monotonic()
    with pytest.raises(ApduError) as e:
        _sign(piv)
    assert e.value.sw == 0x6982
    assert time.monotonic() - start >= 0.3  # it waited the whole timeout
    assert "no touch for slot 9a: timed out" in card.transcript


def test_touch_while_waiting_signs(make_card: Callable[..., VirtualCard]) -> None:
    card, piv = _card_with_key(make_card, TOUCH_POLICY.ALWAYS)
    card.touch.timeout = 5
    _press_when_waiting(card.touch)
    assert _sign(piv)
    card.touch.press()  # a touch while nothing waits is lost, as on the key
    card.touch.timeout = 0.2
    with pytest.raises(ApduError):
        _sign(piv)  # ALWAYS: every use wants its own touch


def test_cached_touch_lasts_within_the_session(make_card: Callable[..., VirtualCard]) -> None:
    card, piv = _card_with_key(make_card, TOUCH_POLICY.CACHED)
    card.touch.timeout = 5
    _press_when_waiting(card.touch)
    assert _sign(piv)
    assert _sign(piv)  # cached: no second touch needed
    card.power_cycle()  # a new session forgets it
    card.touch.timeout = 0.2
    piv = PivSession(YubikitConnection(card))
    with pytest.raises(ApduError):
        _sign(piv)


def test_auto_mode_needs_nobody(make_card: Callable[..., VirtualCard]) -> None:
    card, piv = _card_with_key(make_card, TOUCH_POLICY.ALWAYS)
    card.touch = TouchSensor("auto")
    assert _sign(piv)


def test_marker_from_another_process_is_a_touch(tmp_path: Path) -> None:
    """`pivtool sim touch` touches the card another pivtool is waiting on (--sim), and
    pivtool's own prompt comes first."""
    state = new_card_state(serial=5550001)
    state.touch_mode, state.touch_timeout = "manual", 20.0
    path = tmp_path / "card.json"
    save_state(state, path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
    pivtool = [sys.executable, "-m", "pivtool"]
    subprocess.run([*pivtool, "--sim", str(path), "keys", "generate", "9a", "-a", "eccp256",
                    "--touch-policy", "always", "-o", str(tmp_path / "pub.pem")],
                   env=env, cwd=REPO, check=True, capture_output=True)
    req = subprocess.Popen(
        [*pivtool, "--sim", str(path), "certs", "request", "9a", "--subject", "CN=Touch",
         "--upn", "alice@contoso.com", "-o", str(tmp_path / "req.csr")],
        env={**env, "PIVTOOL_PIN": "123456"}, cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert req.stderr is not None
    prompt = req.stderr.readline()
    assert "Touch the YubiKey" in prompt
    assert req.poll() is None  # waiting for the touch
    done = subprocess.run([*pivtool, "sim", "touch", str(path)], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert "Touched" in done.stdout
    assert req.wait(30) == 0, req.stderr.read()
    assert (tmp_path / "req.csr").exists()
    assert not marker_path(path).exists()  # the card took the touch


def test_pivtool_says_when_nobody_touched(tmp_path: Path) -> None:
    state = new_card_state(serial=5550001)
    state.touch_mode, state.touch_timeout = "manual", 0.5
    path = tmp_path / "card.json"
    save_state(state, path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIVTOOL_")}
    pivtool = [sys.executable, "-m", "pivtool", "--sim", str(path)]
    subprocess.run([*pivtool, "keys", "generate", "9a", "-a", "eccp256", "--touch-policy",
                    "cached", "-o", str(tmp_path / "pub.pem")],
                   env=env, cwd=REPO, check=True, capture_output=True)
    r = subprocess.run([*pivtool, "certs", "request", "9a", "--upn", "alice@contoso.com",
                        "-o", str(tmp_path / "req.csr")], env={**env, "PIVTOOL_PIN": "123456"},
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 3
    assert "Touch the YubiKey to sign with slot 9a" in r.stderr
    assert "was not touched in time" in r.stderr
    assert not (tmp_path / "req.csr").exists()
