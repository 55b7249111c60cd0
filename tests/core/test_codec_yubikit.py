"""Differential tests: pivtool's client codec (``pivtool/core``) and the emulator's own
(``pivtool/sim``) are each checked against yubikit's independent implementation
(``yubikit.core.Tlv``, yubikit's APDU formatters), never against themselves, so a bug shared
by an encoder and its own decoder cannot pass."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yubikit.core import Tlv
from yubikit.core.smartcard import ExtendedApduFormatter, ShortApduFormatter

from pivtool.core import tlv as core_tlv
from pivtool.core.apdu import Apdu
from pivtool.sim import apdu as sim_apdu
from pivtool.sim import tlv as sim_tlv

FAST = settings(max_examples=150, deadline=None, database=None)

#: Tags of one to three bytes, as PIV uses them (low five bits of a one-byte tag != 1F).
tags = st.one_of(
    st.integers(0x01, 0xFF).filter(lambda t: t & 0x1F != 0x1F),
    st.sampled_from([0x5FC102, 0x5FC105, 0x5FC10A, 0x7F49, 0x7F61, 0x5F50, 0x5FFF01, 0x9F1F]),
    st.integers(0x1F, 0x7F).filter(lambda b: b & 0x1F == 0x1F).flatmap(
        lambda first: st.integers(0x00, 0x7F).map(lambda second: first << 8 | second)),
)
items = st.lists(st.tuples(tags, st.binary(max_size=600)), max_size=5)


@FAST
@given(tags, st.binary(max_size=600))
@example(0x53, bytes(0x10000))  # a three-byte length (83 01 00 00)
def test_encoders_write_what_yubikit_writes(tag: int, value: bytes) -> None:
    assert core_tlv.tlv(tag, value) == bytes(Tlv(tag, value))
    assert sim_tlv.tlv(tag, value) == bytes(Tlv(tag, value))


@FAST
@given(items)
def test_decoders_read_what_yubikit_writes(pairs: list[tuple[int, bytes]]) -> None:
    encoded = b"".join(bytes(Tlv(t, v)) for t, v in pairs)
    assert core_tlv.parse_tlvs(encoded) == pairs
    assert sim_tlv.parse(encoded) == pairs


def _yubikit_parse(data: bytes) -> list[tuple[int, bytes]] | None:
    try:
        return [(t.tag, t.value) for t in Tlv.parse_list(data)]
    except (ValueError, IndexError):
        return None


@settings(max_examples=400, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=40),
                 items.map(lambda p: b"".join(bytes(Tlv(t, v)) for t, v in p)).flatmap(
                     lambda good: st.integers(0, max(0, len(good) - 1)).map(
                         lambda cut: good[:cut]))))
def test_whatever_a_decoder_accepts_yubikit_reads_the_same(data: bytes) -> None:
    # pivtool's decoders are stricter than yubikit's (no four-byte tags or lengths), never
    # looser: anything they accept, yubikit reads identically.
    try:
        core = core_tlv.parse_tlvs(data)
    except core_tlv.TlvError:
        core = None
    try:
        sim = sim_tlv.parse(data)
    except sim_tlv.TlvError:
        sim = None
    judge = _yubikit_parse(data)
    if core is not None:
        assert core == judge
    if sim is not None:
        assert sim == judge


def test_decoders_refuse_what_piv_never_sends() -> None:
    for bad in (b"\x53\x84\x00\x00\x00\x01\x00",  # four length bytes
                b"\x53\x80",  # indefinite length
                b"\x53\x05\x01",  # value runs past the end
                b"\x5f",  # truncated tag
                # four- and five-byte tags (yubikit reads them; PIV's have at most three)
                b"\x5f\x9f\x80\x01\x00",
                b"\x5f\x9f\x80\x80\x01\x00"):
        with pytest.raises(core_tlv.TlvError):
            core_tlv.parse_tlvs(bad)
        with pytest.raises(sim_tlv.TlvError):
            sim_tlv.parse(bad)


headers = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                    st.integers(0, 255))


@FAST
@given(headers, st.binary(max_size=255), st.integers(0, 255))
def test_short_apdus_match_yubikit(header: tuple[int, int, int, int], data: bytes,
                                   le: int) -> None:
    cla, ins, p1, p2 = header
    wire = ShortApduFormatter().format_apdu(cla, ins, p1, p2, data, le)
    # yubikit's le=0 means "no Le" (with no data it sends Le=00 anyway, i.e. 256).
    ne = le if le else (0 if data else 256)
    ours_le = None if ne == 0 else ne
    assert Apdu(cla, ins, p1, p2, data, ours_le).encode() == wire
    cmd = sim_apdu.parse_apdu(wire)
    assert (cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, cmd.ne, cmd.extended) == (
        cla, ins, p1, p2, data, ne, False)


@FAST
@given(headers, st.one_of(st.binary(max_size=300), st.binary(min_size=2000, max_size=3100)),
       st.integers(0, 65535))
def test_extended_apdus_match_yubikit(header: tuple[int, int, int, int], data: bytes,
                                      le: int) -> None:
    cla, ins, p1, p2 = header
    wire = ExtendedApduFormatter(70000).format_apdu(cla, ins, p1, p2, data, le)
    if not data and not le:
        return  # a bare header: case 1, not an extended APDU at all
    assert Apdu(cla, ins, p1, p2, data, le or None).encode(extended=True) == wire
    cmd = sim_apdu.parse_apdu(wire)
    assert (cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data, cmd.ne, cmd.extended) == (
        cla, ins, p1, p2, data, le, True)
