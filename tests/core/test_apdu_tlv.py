"""Core codecs against byte strings written by hand from ISO 7816-4 and SP 800-73-4."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pivtool.core.apdu import Apdu
from pivtool.core.errors import (
    BlockedError,
    InsNotSupportedError,
    InvalidPinError,
    NotFoundError,
    SecurityStatusError,
    UsageError,
    error_for_sw,
)
from pivtool.core.tlv import (
    TlvError,
    encode_length,
    encode_tag,
    parse_dict,
    read_tlv,
    tlv,
    unwrap,
)


def test_short_apdu_cases() -> None:
    # Case 1: header only.
    assert Apdu(0x00, 0xFB, 0, 0).encode() == bytes.fromhex("00FB0000")
    # Case 2S: Le only (00 = 256).
    assert Apdu(0x00, 0xCB, 0x3F, 0xFF, le=0).encode() == bytes.fromhex("00CB3FFF00")
    # Case 3S: SELECT PIV (SP 800-73-4 Part 2 §3.1.1).
    assert Apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A000000308")).encode() == \
        bytes.fromhex("00A4040005A000000308")
    # Case 4S.
    assert Apdu(0x00, 0x87, 0x03, 0x9B, b"\x7c\x02\x80\x00", le=0).encode() == \
        bytes.fromhex("0087039B047C028000" + "00")


def test_extended_apdu_cases() -> None:
    # Case 2E: 00 + 2-byte Le.
    assert Apdu(0x00, 0xCB, 0x3F, 0xFF, le=0).encode(extended=True) == \
        bytes.fromhex("00CB3FFF000000")
    # Case 3E: 00 + 2-byte Lc + data.
    data = bytes(300)
    assert Apdu(0x00, 0xDB, 0x3F, 0xFF, data).encode(extended=True) == \
        bytes.fromhex("00DB3FFF00012C") + data
    # Case 4E: Lc then 2-byte Le.
    assert Apdu(0x00, 0xDB, 0x3F, 0xFF, b"\x01", le=0).encode(extended=True) == \
        bytes.fromhex("00DB3FFF00000101" + "0000")


def test_short_apdu_refuses_long_data() -> None:
    with pytest.raises(UsageError):
        Apdu(0, 0xDB, 0x3F, 0xFF, bytes(256)).encode()


def test_ber_lengths_from_x690() -> None:
    assert encode_length(0x7F) == b"\x7f"
    assert encode_length(0x80) == b"\x81\x80"
    assert encode_length(0xFF) == b"\x81\xff"
    assert encode_length(0x100) == b"\x82\x01\x00"
    assert encode_length(0x10000) == b"\x83\x01\x00\x00"


def test_tlv_multibyte_tags() -> None:
    # GET DATA for the CHUID: 5C 03 5FC102 (SP 800-73-4 Part 2 §3.1.2).
    assert tlv(0x5C, bytes.fromhex("5FC102")) == bytes.fromhex("5C035FC102")
    # A public key template 7F49 (two-byte tag) with a 0x81 length.
    value = bytes(130)
    encoded = bytes.fromhex("7F498182") + value
    assert tlv(0x7F49, value) == encoded
    item = read_tlv(encoded)
    assert (item.tag, item.value, item.end) == (0x7F49, value, len(encoded))


def test_tlv_tags_have_at_most_three_bytes() -> None:
    # SP 800-73-4's longest tags have three bytes (5FC105, 5FFF01), as ISO 7816-4 §5.2
    # allows: a fourth or fifth tag byte is a malformed answer, whatever follows it.
    assert read_tlv(bytes.fromhex("5FC10500")).tag == 0x5FC105
    for tag in ("5F9F8001", "5F9F808001", "5F9F80808001"):
        with pytest.raises(TlvError, match="tag too long"):
            read_tlv(bytes.fromhex(tag + "00"))
    assert encode_tag(0x5FFF01) == bytes.fromhex("5FFF01")
    with pytest.raises(ValueError, match="tag too long"):
        encode_tag(0x5F9F8001)


def test_tlv_errors() -> None:
    with pytest.raises(TlvError):
        read_tlv(b"\x53\x05\x01")  # truncated value
    with pytest.raises(TlvError):
        read_tlv(b"\x5f")  # truncated tag
    with pytest.raises(TlvError):
        read_tlv(b"\x53\x84\x00\x00\x00\x01\x00")  # 4-byte length form unsupported
    with pytest.raises(TlvError):
        unwrap(b"\x53\x01\x00\x00", 0x53)  # trailing byte
    with pytest.raises(TlvError):
        unwrap(b"\x53\x00", 0x70)


# Round trips are judged by yubikit's independent codec: tests/core/test_codec_yubikit.py.


@given(st.binary(max_size=300))
def test_tlv_parser_only_raises_tlverror(data: bytes) -> None:
    with contextlib.suppress(TlvError):
        parse_dict(data)


def test_error_mapping() -> None:
    e = error_for_sw(0x63C2)
    assert isinstance(e, InvalidPinError) and e.tries_left == 2
    assert "2 tries left" in str(e) and "63C2" in str(e)
    assert isinstance(error_for_sw(0x6983), BlockedError)
    assert isinstance(error_for_sw(0x6A82), NotFoundError)
    assert isinstance(error_for_sw(0x6982), SecurityStatusError)
    assert isinstance(error_for_sw(0x6D00), InsNotSupportedError)
    # Never the bare SW as the whole message: its meaning, or "the card refused".
    assert str(error_for_sw(0x6A82)) == "the card refused: not found on the card (SW=6A82)"
    assert str(error_for_sw(0x0002)) == "the card refused (SW=0002)"
