"""Minimal BER-TLV codec for the virtual card.

Deliberately independent of pivtool's own codec (``pivtool.core``): the emulator is the
judge of the client code, so a shared bug must not hide on both sides of the wire.
Only what the PIV applet needs: tags of one to three bytes, definite lengths up to three
length bytes.
"""

from __future__ import annotations


class TlvError(ValueError):
    """Malformed TLV data (the card answers it with an SW, never with a crash)."""


def encode_length(length: int) -> bytes:
    """DER length octets for ``length``."""
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    if length <= 0xFFFF:
        return bytes([0x82]) + length.to_bytes(2, "big")
    return bytes([0x83]) + length.to_bytes(3, "big")


def tlv(tag: int, value: bytes = b"") -> bytes:
    """Encode one TLV; ``tag`` is the full tag number as an int (``0x7F49``, ``0x5FC105``)."""
    tag_len = max(1, (tag.bit_length() + 7) // 8)
    return tag.to_bytes(tag_len, "big") + encode_length(len(value)) + value


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError("truncated tag")
    first = data[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:
        # Multi-byte tag: subsequent bytes while bit 8 is set.
        while True:
            if pos >= len(data):
                raise TlvError("truncated tag")
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
            if tag > 0xFFFFFF:
                raise TlvError("tag too long")
    return tag, pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError("truncated length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    n = first & 0x7F
    if n == 0 or n > 3:
        raise TlvError("unsupported length form")
    if pos + n > len(data):
        raise TlvError("truncated length")
    return int.from_bytes(data[pos : pos + n], "big"), pos + n


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """Parse a concatenation of TLVs into ``(tag, value)`` pairs, in order."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        end = pos + length
        if end > len(data):
            raise TlvError("value runs past the end")
        out.append((tag, data[pos:end]))
        pos = end
    return out


def parse_dict(data: bytes) -> dict[int, bytes]:
    """Parse TLVs into a dict; a repeated tag keeps its first value."""
    out: dict[int, bytes] = {}
    for tag, value in parse(data):
        out.setdefault(tag, value)
    return out


def unwrap(tag: int, data: bytes) -> bytes:
    """Value of a single TLV that must have ``tag`` and span all of ``data``."""
    items = parse(data)
    if len(items) != 1 or items[0][0] != tag:
        raise TlvError("unexpected template")
    return items[0][1]
