"""What an answer-to-reset says about the transport (ISO 7816-3, PC/SC part 3)."""

from __future__ import annotations


def is_contactless(atr: bytes) -> bool:
    """PC/SC part 3 builds contactless ATRs as 3B 8x 80 01 ...: the card sits on an NFC
    reader, where extended-length APDUs depend on the reader, so they are not assumed."""
    return len(atr) >= 4 and atr[0] == 0x3B and atr[1] & 0xF0 == 0x80 and atr[2:4] == b"\x80\x01"
