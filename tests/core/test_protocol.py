"""Chaining, GET RESPONSE and 6Cxx, against a scripted card that records what it receives."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivtool.core.apdu import Apdu
from pivtool.core.connection import TRACE, ApduProtocol


class ChainingCard:
    """Accepts chained commands, answers with *response* in 61xx chunks of *chunk* bytes."""

    atr = b"\x3b\x00"
    reader_name = "scripted"

    def __init__(self, response: bytes = b"", chunk: int = 256) -> None:
        self.received: list[bytes] = []
        self.assembled = b""
        self.response = response
        self.chunk = chunk
        self.pending = b""

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.received.append(apdu)
        cla, ins = apdu[0], apdu[1]
        if ins == 0xC0:
            out, self.pending = self.pending[: self.chunk], self.pending[self.chunk:]
            return out, (0x6100 | min(len(self.pending), 255)) if self.pending else 0x9000
        lc = apdu[4] if len(apdu) > 5 else 0
        self.assembled += apdu[5: 5 + lc]
        if cla & 0x10:
            return b"", 0x9000
        out, self.pending = self.response[: self.chunk], self.response[self.chunk:]
        return out, (0x6100 | min(len(self.pending), 255)) if self.pending else 0x9000

    def close(self) -> None:
        pass


def test_chaining_splits_at_255_with_cla_bit() -> None:
    card = ChainingCard()
    data = bytes(range(256)) * 2  # 512 bytes -> 255 + 255 + 2
    ApduProtocol(card).send(Apdu(0x00, 0xDB, 0x3F, 0xFF, data))
    assert [a[:5].hex() for a in card.received] == ["10db3fffff", "10db3fffff", "00db3fff02"]
    assert card.assembled == data


def test_get_response_collects_all_parts() -> None:
    body = bytes(range(256)) * 3
    card = ChainingCard(response=body, chunk=256)
    out = ApduProtocol(card).send(Apdu(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x01\x7e"))
    assert out == body
    assert [a.hex() for a in card.received[1:]] == ["00c00000ff", "00c00000ff"]


def test_6cxx_resends_with_right_le() -> None:
    sent: list[bytes] = []

    class WrongLe:
        atr = b""
        reader_name = "x"

        def transmit(self, apdu: bytes) -> tuple[bytes, int]:
            sent.append(apdu)
            return (b"", 0x6C04) if len(sent) == 1 else (b"abcd", 0x9000)

        def close(self) -> None:
            pass

    assert ApduProtocol(WrongLe()).send(Apdu(0, 0xCA, 0, 0, le=0)) == b"abcd"
    assert sent[1].hex() == "00ca000004"


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=1200), st.binary(max_size=1500))
def test_chaining_roundtrip(data: bytes, response: bytes) -> None:
    card = ChainingCard(response=response, chunk=200)
    out = ApduProtocol(card).send(Apdu(0x00, 0xDB, 0x3F, 0xFF, data))
    assert card.assembled == data
    assert out == response
    assert all(len(a) <= 5 + 255 for a in card.received)


def test_trace_redacts_sensitive(caplog: pytest.LogCaptureFixture) -> None:
    card = ChainingCard(response=b"\x11\x22")
    with caplog.at_level(TRACE, logger="pivtool.apdu"):
        ApduProtocol(card).send(Apdu(0x00, 0x20, 0x00, 0x80, b"31323334ffffffff"),
                                sensitive=True)
    text = caplog.text
    assert "00200080" in text and "redacted" in text
    assert "3132333435" not in text and b"31323334".hex() not in text
    assert "1122" not in text  # response data redacted too
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pivtool.apdu"):
        ApduProtocol(card).send(Apdu(0x00, 0xCB, 0x3F, 0xFF, b"\x5c\x01\x7e"))
    assert caplog.text == ""  # trace is below DEBUG
