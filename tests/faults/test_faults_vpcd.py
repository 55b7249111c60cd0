"""``pivtool sim serve --fail-at N --fail-kind K``: the faults the vpcd bridge injects,
against a fake vpcd (a TCP server in the test; no pcscd needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from pivtool.cli.main import cli
from pivtool.sim import vpcd
from pivtool.sim.attach import FaultKind, Faults
from tests.pcsc_stack import vpcd_recv_frame as _recv
from tests.pcsc_stack import vpcd_send_frame as _send


class StubCard:
    atr = bytes.fromhex("3B8C8001")

    def __init__(self) -> None:
        self.power_cycles = 0
        self.apdus: list[bytes] = []

    def execute(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        return b"\x01\x02\x90\x00"

    def power_cycle(self) -> None:
        self.power_cycles += 1


@contextmanager
def bridge(card: StubCard, faults: Faults) -> Iterator[socket.socket]:
    """The bridge serving *card* with *faults*; yields the listening fake-vpcd socket."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(2)
    server.settimeout(10)
    stop = threading.Event()
    t = threading.Thread(target=vpcd.serve_card, args=(card, server.getsockname()[1]),
                         kwargs={"stop_event": stop, "faults": faults}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        stop.set()
        t.join(5)
        server.close()
        assert not t.is_alive()


APDU = b"\x00\xcb\x3f\xff\x05\x5c\x03\x5f\xc1\x02\x00"


def test_card_removed_closes_then_reinserts() -> None:
    card = StubCard()
    with bridge(card, Faults(at=2, kind=FaultKind.CARD_REMOVED)) as server:
        conn, _ = server.accept()
        _send(conn, APDU)
        assert _recv(conn) == b"\x01\x02\x90\x00"
        _send(conn, APDU)
        assert _recv(conn) is None  # pulled: vpcd sees the connection close
        conn.close()
        again, _ = server.accept()  # and the card is put back
        _send(again, APDU)
        assert _recv(again) == b"\x01\x02\x90\x00"  # the fault fires once
        again.close()
    assert len(card.apdus) == 2  # the pulled command was never executed
    assert card.power_cycles >= 1


@pytest.mark.parametrize(("kind", "answer", "executed", "cycles"), [
    (FaultKind.TRANSMISSION_ERROR, b"\x6f", 1, 0),
    (FaultKind.GARBAGE, b"\x6f\x00\xde\xad\xbe\x90\x00", 1, 0),
    (FaultKind.RESET, b"\x01\x02\x90\x00", 2, 1),
])
def test_answer_faults(kind: FaultKind, answer: bytes, executed: int, cycles: int) -> None:
    card = StubCard()
    with bridge(card, Faults(at=2, kind=kind)) as server:
        conn, _ = server.accept()
        _send(conn, APDU)
        assert _recv(conn) == b"\x01\x02\x90\x00"
        _send(conn, APDU)
        assert _recv(conn) == answer
        conn.close()
    assert len(card.apdus) == executed
    assert card.power_cycles >= cycles


def test_serve_options(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    seen: dict[str, object] = {}

    def fake_serve(state: str, **kwargs: object) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(vpcd, "serve", fake_serve)
    from pathlib import Path

    card = Path(str(tmp_path)) / "card.json"
    card.write_text("{}")
    r = CliRunner().invoke(cli, ["sim", "serve", str(card), "--fail-at", "7",
                                 "--fail-kind", "garbage"])
    assert r.exit_code == 0, r.output
    faults = seen["faults"]
    assert isinstance(faults, Faults) and faults.at == 7 and faults.kind is FaultKind.GARBAGE
    r = CliRunner().invoke(cli, ["sim", "serve", str(card)])
    assert r.exit_code == 0 and seen["faults"] is None
    r = CliRunner().invoke(cli, ["sim", "serve", str(card), "--fail-at", "0"])
    assert r.exit_code == 2
