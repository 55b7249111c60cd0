"""pivtool.pcsc against virtual cards behind a real pcscd (vpcd readers)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from pcsc_stack import FRIENDLY_PREFIX, PcscStack, VCardFactory, VirtualCardProcess

from pivtool import pcsc
from pivtool.connect import card_serial, find_by_serial
from pivtool.core.apdu import Apdu
from pivtool.core.connection import ApduProtocol, Connection
from pivtool.core.errors import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    SharingViolationError,
)

pytestmark = pytest.mark.pcsc

SELECT_PIV = Apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A000000308000010000100"))
YK5_USB_ATR = bytes.fromhex("3BFD1300008131FE158073C021C057597562694B657940")


def _pin_block(pin: bytes) -> bytes:
    return pin.ljust(8, b"\xff")


def _verify(proto: ApduProtocol, pin: bytes) -> int:
    return proto.send_raw(Apdu(0x00, 0x20, 0x00, 0x80, _pin_block(pin)), sensitive=True)[1]


def _pin_status(proto: ApduProtocol) -> int:
    """VERIFY without data: 9000 if the PIN is verified in this session, else 63Cx."""
    return proto.send_raw(Apdu(0x00, 0x20, 0x00, 0x80))[1]


def _selected(conn: Connection, extended: bool = False) -> ApduProtocol:
    proto = ApduProtocol(conn, extended=extended)
    assert proto.send_raw(SELECT_PIV)[1] == 0x9000
    return proto


# --- readers -------------------------------------------------------------------------------


def test_list_readers(pcsc_stack: PcscStack) -> None:
    readers = pcsc.list_readers()
    for r in pcsc_stack.readers:
        assert r.name in readers


def test_open_by_unique_substring(virtual_yubikey: VirtualCardProcess) -> None:
    # Case-insensitive on purpose: users type what they see in a GUI.
    with pcsc.open_reader(virtual_yubikey.substring.upper()) as conn:
        assert conn.reader_name == virtual_yubikey.reader
        assert conn.atr == YK5_USB_ATR
        _data, sw = conn.transmit(SELECT_PIV.encode())
        assert sw == 0x9000
    assert conn.closed


def test_open_ambiguous_substring_lists_candidates(pcsc_stack: PcscStack) -> None:
    with pytest.raises(NoReaderError) as info:
        pcsc.open_reader(FRIENDLY_PREFIX)
    message = str(info.value)
    assert "matches several readers" in message
    for r in pcsc_stack.readers:
        assert r.name in message
    assert "\n" not in message


def test_open_missing_substring_lists_readers(pcsc_stack: PcscStack) -> None:
    with pytest.raises(NoReaderError) as info:
        pcsc.open_reader("no such reader")
    assert "no reader matches 'no such reader'" in str(info.value)
    assert pcsc_stack.readers[0].name in str(info.value)


def test_open_empty_reader_is_no_card(pcsc_stack: PcscStack) -> None:
    reader = pcsc_stack.acquire_reader()
    try:
        with pytest.raises(NoCardError, match="no card in reader"):
            pcsc.open_reader(reader.name)
    finally:
        pcsc_stack.release_reader(reader)


# --- identity -------------------------------------------------------------------------------


def test_card_serial_through_pcscd(vcard_factory: VCardFactory) -> None:
    card = vcard_factory(firmware=(5, 7, 1), serial=12345678)
    with pcsc.open_reader(card.substring) as conn:
        assert card_serial(conn) == 12345678
    generic = vcard_factory(generic=True)
    with pcsc.open_reader(generic.substring) as conn:
        assert card_serial(conn) is None


def test_find_by_serial(vcard_factory: VCardFactory) -> None:
    vcard_factory(serial=11111111)
    second = vcard_factory(serial=22222222)
    with find_by_serial(22222222) as conn:
        assert conn.reader_name == second.reader
        # the serial lookup left the PIV applet selected
        _data, sw = conn.transmit(bytes.fromhex("00FD000000"))
        assert sw == 0x9000
    with pytest.raises(NoCardError, match="no YubiKey with serial 33333333"):
        find_by_serial(33333333)


def test_find_by_serial_skips_busy_reader(vcard_factory: VCardFactory) -> None:
    card = vcard_factory(serial=44444444)
    with pcsc.open_reader(card.substring), pytest.raises(NoCardError, match="busy readers"):
        find_by_serial(44444444)


# --- extended length and chaining ------------------------------------------------------------


@pytest.mark.parametrize("extended", [True, False])
def test_large_object_roundtrip(virtual_yubikey: VirtualCardProcess, extended: bool) -> None:
    """A 2 kB data object through pcscd, as one extended APDU or as a command chain."""
    payload = bytes(range(256)) * 8
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        proto = _selected(conn, extended=extended)
        auth = _mgmt_auth(proto)
        assert auth == 0x9000
        # 5FC10D: the certificate container of retired slot 82, free on a fresh card
        obj = bytes.fromhex("5C035FC10D") + b"\x53\x82" + len(payload).to_bytes(2, "big")
        data, sw = proto.send_raw(Apdu(0x00, 0xDB, 0x3F, 0xFF, obj + payload))
        assert sw == 0x9000
        count = proto.apdu_count
        data, sw = proto.send_raw(Apdu(0x00, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C035FC10D")))
        assert sw == 0x9000
        assert data.endswith(payload)
        if extended:
            assert proto.apdu_count == count + 1  # one APDU, no GET RESPONSE
        else:
            assert proto.apdu_count > count + 1


def _mgmt_auth(proto: ApduProtocol) -> int:
    """Mutual authentication with the default AES-192 management key of firmware 5.7."""
    import os

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes.fromhex("010203040506070801020304050607080102030405060708")
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    resp, sw = proto.send_raw(Apdu(0x00, 0x87, 0x0A, 0x9B, bytes.fromhex("7C028000")))
    assert sw == 0x9000, hex(sw)
    dec = cipher.decryptor()
    witness = dec.update(resp[4:20]) + dec.finalize()
    challenge = os.urandom(16)
    body = b"\x80\x10" + witness + b"\x81\x10" + challenge
    resp, sw = proto.send_raw(
        Apdu(0x00, 0x87, 0x0A, 0x9B, b"\x7c" + bytes([len(body)]) + body), sensitive=True
    )
    enc = cipher.encryptor()
    assert resp[4:20] == enc.update(challenge) + enc.finalize()
    return sw


# --- removal, sharing, reconnects -------------------------------------------------------------


def test_card_removed_mid_session(virtual_yubikey: VirtualCardProcess) -> None:
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        _selected(conn)
        virtual_yubikey.kill(signal.SIGKILL, wait_removed=True)
        with pytest.raises(CardRemovedError, match="removed") as info:
            conn.transmit(bytes.fromhex("00FD000000"))
        assert virtual_yubikey.reader in str(info.value)


def test_sharing_violation(virtual_yubikey: VirtualCardProcess) -> None:
    with pcsc.open_reader(virtual_yubikey.substring):
        with pytest.raises(SharingViolationError, match="in use by another program"):
            pcsc.open_reader(virtual_yubikey.substring)
        with pytest.raises(SharingViolationError):
            pcsc.open_reader(virtual_yubikey.substring, shared=True)
    # Two shared connections coexist.
    with pcsc.open_reader(virtual_yubikey.substring, shared=True) as a, \
            pcsc.open_reader(virtual_yubikey.substring, shared=True) as b:
        assert a.transmit(SELECT_PIV.encode())[1] == 0x9000
        assert b.transmit(SELECT_PIV.encode())[1] == 0x9000


def test_verified_pin_does_not_survive_reconnect(virtual_yubikey: VirtualCardProcess) -> None:
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        proto = _selected(conn)
        assert _verify(proto, b"123456") == 0x9000
        assert _pin_status(proto) == 0x9000
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        proto = _selected(conn)
        assert _pin_status(proto) == 0x63C3


def test_state_survives_sigkill(virtual_yubikey: VirtualCardProcess) -> None:
    """Change the PIN, SIGKILL the card process, restart it: the change is on "flash"."""
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        proto = _selected(conn)
        body = _pin_block(b"123456") + _pin_block(b"654321")
        assert proto.send_raw(Apdu(0x00, 0x24, 0x00, 0x80, body), sensitive=True)[1] == 0x9000
        virtual_yubikey.kill(signal.SIGKILL, wait_removed=True)
    virtual_yubikey.start()
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        proto = _selected(conn)
        assert _verify(proto, b"123456") == 0x63C2
        assert _verify(proto, b"654321") == 0x9000
    # The wrong try was persisted too, and reset by the right one.
    assert virtual_yubikey.load_state().pin_retries_left == 3


def test_sigterm_is_a_clean_removal(virtual_yubikey: VirtualCardProcess) -> None:
    virtual_yubikey.stop()
    assert virtual_yubikey.proc is not None
    assert virtual_yubikey.proc.returncode == 0
    assert "serving" in virtual_yubikey.log()
    assert "123456" not in virtual_yubikey.log()


# --- events ---------------------------------------------------------------------------------


def test_reader_monitor_reports_insert_and_remove(vcard_factory: VCardFactory) -> None:
    card = vcard_factory(start=False)
    events: list[pcsc.CardEvent] = []
    got = threading.Condition()

    with pcsc.ReaderMonitor(card.substring, report_present=True) as monitor:
        def work() -> None:
            for event in monitor:
                with got:
                    events.append(event)
                    got.notify_all()

        worker = threading.Thread(target=work)
        worker.start()
        try:
            card.start()
            with got:
                assert got.wait_for(lambda: len(events) >= 1, 5)
            assert events[0].kind is pcsc.EventKind.INSERTED
            assert events[0].reader == card.reader
            assert events[0].atr == YK5_USB_ATR
            card.kill(signal.SIGKILL, wait_removed=False)
            with got:
                assert got.wait_for(lambda: len(events) >= 2, 5)
            assert events[1] == pcsc.CardEvent(pcsc.EventKind.REMOVED, card.reader)
        finally:
            t0 = time.monotonic()
            monitor.stop()
            worker.join(5)
            assert not worker.is_alive()
            # SCardCancel wakes the blocked wait at once, not at the next guard timeout.
            assert time.monotonic() - t0 < 1.0


def test_reader_monitor_reports_present_cards_first(virtual_yubikey: VirtualCardProcess) -> None:
    with pcsc.ReaderMonitor(virtual_yubikey.substring) as monitor:
        assert monitor.wait(1) == [
            pcsc.CardEvent(pcsc.EventKind.INSERTED, virtual_yubikey.reader, YK5_USB_ATR)
        ]
        assert monitor.wait(0.2) == []  # timeout, nothing new
    with pcsc.ReaderMonitor(virtual_yubikey.substring, report_present=False) as monitor:
        assert monitor.wait(0.2) == []


def test_watch_events_stops_on_event(vcard_factory: VCardFactory) -> None:
    card = vcard_factory(start=False)
    stop = threading.Event()
    seen: list[pcsc.CardEvent] = []

    def callback(event: pcsc.CardEvent) -> None:
        seen.append(event)
        if event.kind is pcsc.EventKind.REMOVED:
            stop.set()

    worker = threading.Thread(target=pcsc.watch_events, args=(callback, stop, card.substring))
    worker.start()
    card.start()
    card.kill(signal.SIGKILL, wait_removed=True)
    worker.join(5)
    assert not worker.is_alive()
    assert [e.kind for e in seen] == [pcsc.EventKind.INSERTED, pcsc.EventKind.REMOVED]

    # And from outside: setting the event ends an idle watch promptly.
    stop2 = threading.Event()
    worker = threading.Thread(target=pcsc.watch_events, args=(seen.append, stop2, card.substring))
    worker.start()
    time.sleep(0.1)
    stop2.set()
    worker.join(2)
    assert not worker.is_alive()


# --- latency --------------------------------------------------------------------------------


def test_apdu_latency_through_pcscd(
    virtual_yubikey: VirtualCardProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    with pcsc.open_reader(virtual_yubikey.substring) as conn:
        _selected(conn)
        n = 200
        t0 = time.perf_counter()
        for _ in range(n):
            assert conn.transmit(bytes.fromhex("00FD000000"))[1] == 0x9000
        small = (time.perf_counter() - t0) / n
        proto = ApduProtocol(conn, extended=True)
        t0 = time.perf_counter()
        for _ in range(20):
            # GET DATA of the 9A-less discovery object: a short answer, but an extended APDU
            proto.send_raw(Apdu(0x00, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C017E")))
        ext = (time.perf_counter() - t0) / 20
    with capsys.disabled():
        print(f"\n[latency] GET VERSION through pcscd+vpcd: {small * 1000:.3f} ms/APDU; "
              f"extended GET DATA: {ext * 1000:.3f} ms/APDU")
