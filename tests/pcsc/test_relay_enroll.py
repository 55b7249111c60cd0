"""A fault injector that is not pivtool's own: a TCP relay between the virtual card (``sim
serve``) and pcscd's vpcd, which cuts the link at the N-th command APDU of ``enroll`` —
either before the card sees it, or after the card executed it (the answer is lost). The
card is then put back (the serve process reconnects) and the *same* enroll command is run
again: it must exit 0, the new PIN must verify, 9a must hold the user's certificate, and no
PIN or PUK try may have been spent."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pivtool.certs.ca import LabCA
from tests.cli.clihelp import run
from tests.pcsc_stack import VReader, vpcd_recv_frame, vpcd_send_frame, wait_reader

pytestmark = pytest.mark.pcsc

UPN = "relay@contoso.com"
NEW = {"PIVTOOL_NEW_PIN": "24681357", "PIVTOOL_NEW_PUK": "86427531"}


class Relay:
    """Listens for the card; for each card connection opens one to vpcd and forwards frames.
    Counts command APDUs (frames longer than one byte from vpcd) over its whole life; at
    ``cut_at`` it closes both links — ``after`` the card answered (answer dropped) or
    before the card saw the command. Fires once."""

    def __init__(self, vpcd_port: int) -> None:
        self.vpcd_port = vpcd_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.apdus = 0
        self.cut_at: int | None = None
        self.after = False
        self.fired = threading.Event()
        self._settled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                card, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            card.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                reader = socket.create_connection(("127.0.0.1", self.vpcd_port), timeout=5)
            except OSError:
                card.close()
                continue
            reader.settimeout(None)
            reader.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._pump(card, reader)
            except OSError:
                pass  # either side went away (a card process killed between cases)
            finally:
                card.close()
                reader.close()
            if self.fired.is_set() and not self._settled:
                # Let pcscd see the card leave (it polls every ~0.4 s) before the serve
                # process's reconnect is passed on: vpcd takes the next card only then.
                self._settled = True
                time.sleep(1.0)

    def _pump(self, card: socket.socket, reader: socket.socket) -> None:
        """vpcd talks, the card answers: strictly one frame each way at a time."""
        card.settimeout(10)
        while not self._stop.is_set():
            try:
                frame = vpcd_recv_frame(reader, quickack=True)
            except OSError:
                return
            if frame is None:
                return
            command = len(frame) > 1
            if command:
                self.apdus += 1
            cut = command and self.apdus == self.cut_at and not self.fired.is_set()
            if cut and not self.after:
                self.fired.set()
                return  # the card never sees it
            vpcd_send_frame(card, frame)
            if len(frame) == 1 and frame[0] != 4:
                continue  # power on/off/reset: no answer (only "get ATR" is answered)
            try:
                answer = vpcd_recv_frame(card, quickack=True)
            except OSError:
                return
            if answer is None:
                return
            if cut:
                self.fired.set()
                return  # executed on the card; the answer is lost
            vpcd_send_frame(reader, answer)

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(5)


@pytest.fixture
def relayed_card(vcard_factory: Any) -> Any:
    """A factory-fresh virtual YubiKey whose vpcd link runs through a :class:`Relay`."""
    card = vcard_factory(serial=7102001, start=False)
    relay = Relay(card.vreader.port)
    real = card.vreader
    card.vreader = VReader(real.name, relay.port)  # the serve process connects to the relay
    card.start()
    yield card, relay, real
    card.kill(wait_removed=False)
    card.vreader = real
    relay.close()


def _enroll(card: Any, ca: Path) -> Any:
    return run(None, "--reader", card.substring, "enroll", "--upn", UPN, "--ca", str(ca),
               env=NEW)


def test_relay_cut_before_and_after_the_nth_apdu(relayed_card: Any, tmp_path: Path) -> None:
    card, relay, _ = relayed_card
    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Relay CA")
    template = card.state_path.read_bytes()
    # One clean enrollment through the relay counts the APDUs; then the card is made
    # factory-fresh again (its serve process stopped, the state file restored).
    start = relay.apdus
    assert _enroll(card, ca).exit_code == 0
    total = relay.apdus - start
    assert total > 40
    # N spread over the whole enrollment (read, PIN/PUK, management key, generate, CSR,
    # import, CHUID, proof), each cut before and after the card executed it.
    ns = sorted({max(1, round(total * f)) for f in (0.05, 0.6, 0.68, 0.78, 0.86, 0.9, 0.97)})
    results = []
    for n in ns:
        for after in (False, True):
            card.kill()
            card.state_path.write_bytes(template)
            LabCA.init(ca.with_name(f"ca-{n}-{after}"), "CN=Relay CA")
            ca_n = ca.with_name(f"ca-{n}-{after}")
            card.start()
            relay.fired.clear()
            relay._settled = False
            relay.cut_at, relay.after = relay.apdus + n, after
            first = _enroll(card, ca_n)
            assert relay.fired.is_set()
            assert first.exit_code != 0, (n, after, first.output)
            # The serve process puts the card back by itself (pcscd first notices it left).
            wait_reader(card.reader, False, 3.0, fail=False)
            if not wait_reader(card.reader, True, 15.0, fail=False):
                pytest.fail(f"card not back after the cut at {n} (after={after}); relay "
                            f"saw {relay.apdus} APDUs; serve log:\n{card.log()}")
            again = _enroll(card, ca_n)
            assert again.exit_code == 0, (n, after, first.stderr, again.output)
            st = card.load_state()
            assert st.pin_retries_left == st.pin_retries_total, (n, after)
            assert st.puk_retries_left == st.puk_retries_total, (n, after)
            r = run(None, "--reader", card.substring, "pin", "verify",
                    env={"PIVTOOL_PIN": NEW["PIVTOOL_NEW_PIN"]})
            assert r.exit_code == 0, r.output
            r = run(None, "--reader", card.substring, "--json", "info")
            assert f'"{UPN}"' in r.stdout or UPN in r.stdout
            assert len(LabCA.open(ca_n).issued()) == 1, (n, after)  # no second certificate
            results.append((n, after, first.exit_code))
    assert len(results) == 2 * len(ns)
