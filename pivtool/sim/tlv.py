"""The virtual card's own BER-TLV reader and writer (ISO 7816-4 §5.2).

Written separately from the client's codec (``pivtool/core/tlv.py``), with a different
structure (a consuming cursor here, offset arithmetic there): the emulator is the judge of
the client code, so a bug shared by both sides of the wire must not hide. Only what the
PIV and management applets need: tags of one to three bytes, definite lengths of up to
three length bytes.
"""

from __future__ import annotations

#: The longest tag the applets use (``5FC105``) and the most length bytes (``83 xx xx xx``).
_MAX_TAG_OCTETS = 3
_MAX_LENGTH_OCTETS = 3


class TlvError(ValueError):
    """Malformed TLV data (the card answers it with an SW, never with a crash)."""


class _Cursor:
    """Reads a byte string from the front; running out is a :class:`TlvError`."""

    __slots__ = ("_data", "_next")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._next = 0

    def exhausted(self) -> bool:
        return self._next >= len(self._data)

    def take(self, count: int, what: str) -> bytes:
        chunk = self._data[self._next : self._next + count]
        if len(chunk) != count:
            raise TlvError(f"truncated {what}")
        self._next += count
        return bytes(chunk)

    def octet(self, what: str) -> int:
        return self.take(1, what)[0]

    def tag(self) -> int:
        # A first octet with all five low bits set announces more tag octets; each of
        # those but the last has bit 8 set.
        octets = bytearray([self.octet("tag")])
        more = octets[0] & 0x1F == 0x1F
        while more:
            if len(octets) == _MAX_TAG_OCTETS:
                raise TlvError("tag too long")
            octets.append(self.octet("tag"))
            more = bool(octets[-1] & 0x80)
        return int.from_bytes(octets, "big")

    def length(self) -> int:
        head = self.octet("length")
        if head < 0x80:
            return head
        count = head - 0x80
        if not 1 <= count <= _MAX_LENGTH_OCTETS:
            raise TlvError("unsupported length form")
        return int.from_bytes(self.take(count, "length"), "big")


def _octets(number: int) -> bytes:
    """*number* as the fewest big-endian octets (at least one)."""
    out = bytearray()
    while True:
        out.insert(0, number & 0xFF)
        number >>= 8
        if not number:
            return bytes(out)


def tlv(tag: int, value: bytes = b"") -> bytes:
    """Encode one TLV; ``tag`` is the full tag number as an int (``0x7F49``, ``0x5FC105``)."""
    size = len(value)
    length = bytes([size]) if size < 0x80 else bytes([0x80 + len(_octets(size))]) + _octets(size)
    return _octets(tag) + length + value


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """Parse a concatenation of TLVs into ``(tag, value)`` pairs, in order."""
    cursor = _Cursor(data)
    items: list[tuple[int, bytes]] = []
    while not cursor.exhausted():
        tag = cursor.tag()
        items.append((tag, cursor.take(cursor.length(), "value")))
    return items


def parse_dict(data: bytes) -> dict[int, bytes]:
    """Parse TLVs into a dict; a repeated tag keeps its first value."""
    found: dict[int, bytes] = {}
    for tag, value in parse(data):
        found.setdefault(tag, value)
    return found


def unwrap(tag: int, data: bytes) -> bytes:
    """The value of the one TLV *data* holds, which must have *tag*."""
    items = parse(data)
    if len(items) != 1 or items[0][0] != tag:
        raise TlvError("unexpected template")
    return items[0][1]
