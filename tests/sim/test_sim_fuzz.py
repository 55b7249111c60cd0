"""Property tests: whatever the bytes, the card answers with a status word and survives."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivtool.sim import VirtualCard, new_card_state

_STATE = new_card_state(serial=424242)
_CARD = VirtualCard(_STATE)
_PREFIXES = [
    b"\x00\xa4\x04\x00\x05\xa0\x00\x00\x03\x08",
    b"\x00\xa4\x04\x00\x08\xa0\x00\x00\x05\x27\x47\x11\x17",
]
_INS = [
    0x20,
    0x24,
    0x2C,
    0x47,
    0x87,
    0xCB,
    0xDB,
    0xF6,
    0xF7,
    0xF8,
    0xF9,
    0xFA,
    0xFB,
    0xFD,
    0xFE,
    0xFF,
    0xC0,
    0xA4,
    0x1D,
]


def _check(response: bytes) -> None:
    assert isinstance(response, bytes)
    assert len(response) >= 2
    sw1 = response[-2]
    assert sw1 in (0x90, 0x61, 0x63, 0x67, 0x69, 0x6A, 0x6D, 0x6E, 0x6F)


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(apdu: bytes) -> None:
    _check(_CARD.execute(apdu))
    assert not any("internal error" in t for t in _CARD.transcript)


@settings(max_examples=600, deadline=None, database=None)
@given(
    prefix=st.sampled_from(_PREFIXES),
    cla=st.sampled_from([0x00, 0x10, 0x80]),
    ins=st.sampled_from(_INS),
    p1=st.integers(0, 255),
    p2=st.sampled_from([0x00, 0x80, 0x81, 0x9A, 0x9B, 0x9C, 0xF9, 0x3F, 0xFF, 0x96]),
    data=st.binary(max_size=80),
    le=st.sampled_from([b"", b"\x00"]),
)
def test_structured_commands(
    prefix: bytes, cla: int, ins: int, p1: int, p2: int, data: bytes, le: bytes
) -> None:
    card = VirtualCard(_STATE)
    _check(card.execute(prefix))
    lc = bytes([len(data)]) if data else b""
    response = card.execute(bytes([cla, ins, p1, p2]) + lc + data + le)
    _check(response)
    assert not any("internal error" in t for t in card.transcript)
    # The card still works afterwards.
    assert card.execute(prefix)[-2:] == b"\x90\x00"


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.binary(min_size=4, max_size=40), max_size=8))
def test_sequences(apdus: list[bytes]) -> None:
    card = VirtualCard(_STATE)
    card.execute(_PREFIXES[0])
    for a in apdus:
        _check(card.execute(a))
    assert not any("internal error" in t for t in card.transcript)
