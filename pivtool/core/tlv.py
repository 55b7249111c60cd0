"""BER-TLV codec (ISO 7816-4 §5.2 / X.690 length rules) for PIV data objects.

Tags are kept as ints of their full encoded bytes (``0x7F49``, ``0x5FC105``), as SP 800-73-4
writes them. Lengths use the definite form only; PIV never uses indefinite lengths.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import BadResponseError

#: The longest tag: SP 800-73-4's have up to three bytes (``5FC105``, ``5FFF01``), the most
#: ISO 7816-4 §5.2 allows.
MAX_TAG_BYTES = 3


class TlvError(BadResponseError):
    """Malformed BER-TLV."""


def encode_tag(tag: int) -> bytes:
    """Encode a tag int into its bytes."""
    if tag < 0:
        raise ValueError("negative tag")
    size = max(1, (tag.bit_length() + 7) // 8)
    if size > MAX_TAG_BYTES:
        raise ValueError(f"TLV tag too long: {size} bytes")
    return tag.to_bytes(size, "big")


def encode_length(length: int) -> bytes:
    """Definite-form BER length: short form below 0x80, else 0x81/0x82/0x83 + bytes."""
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes((length,))
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(raw) > 3:
        raise ValueError("length too large")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, value: bytes = b"") -> bytes:
    """Encode one TLV."""
    return encode_tag(tag) + encode_length(len(value)) + value


@dataclass(frozen=True)
class Tlv:
    """One decoded TLV with the offset just past it."""

    tag: int
    value: bytes
    end: int


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError("truncated TLV: missing tag")
    first = data[pos]
    tag = first
    end = pos + 1
    if first & 0x1F == 0x1F:  # multi-byte tag: continue while b8 is set
        while True:
            # Checked before each further byte is read, so a tag whose last byte would be
            # one too many is refused too (not only one that goes on past it).
            if end - pos == MAX_TAG_BYTES:
                raise TlvError("TLV tag too long")
            if end >= len(data):
                raise TlvError("truncated TLV: tag")
            b = data[end]
            tag = (tag << 8) | b
            end += 1
            if not b & 0x80:
                break
    return tag, end


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise TlvError("truncated TLV: missing length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    n = first & 0x7F
    if n == 0 or n > 3:
        raise TlvError(f"unsupported TLV length form 0x{first:02X}")
    if pos + n > len(data):
        raise TlvError("truncated TLV: length")
    return int.from_bytes(data[pos : pos + n], "big"), pos + n


def read_tlv(data: bytes, pos: int = 0) -> Tlv:
    """Decode the TLV starting at *pos*."""
    tag, pos = _read_tag(data, pos)
    length, pos = _read_length(data, pos)
    end = pos + length
    if end > len(data):
        raise TlvError(f"truncated TLV: tag {tag:X} wants {length} bytes, {len(data) - pos} left")
    return Tlv(tag, bytes(data[pos:end]), end)


def iter_tlvs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Iterate (tag, value) over back-to-back TLVs; the whole input must be consumed."""
    pos = 0
    while pos < len(data):
        item = read_tlv(data, pos)
        yield item.tag, item.value
        pos = item.end


def parse_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Decode back-to-back TLVs into a list."""
    return list(iter_tlvs(data))


def parse_dict(data: bytes) -> dict[int, bytes]:
    """Decode back-to-back TLVs into a dict (the last of duplicate tags wins)."""
    return dict(iter_tlvs(data))


def unwrap(data: bytes, tag: int) -> bytes:
    """Expect exactly one TLV with *tag* spanning *data* and return its value."""
    item = read_tlv(data)
    if item.tag != tag:
        raise TlvError(f"expected tag {tag:X}, got {item.tag:X}")
    if item.end != len(data):
        raise TlvError(f"{len(data) - item.end} trailing bytes after tag {tag:X}")
    return item.value


def find(data: bytes, tag: int) -> bytes:
    """Return the value of the first TLV with *tag* among back-to-back TLVs."""
    for t, v in iter_tlvs(data):
        if t == tag:
            return v
    raise TlvError(f"tag {tag:X} not found")
