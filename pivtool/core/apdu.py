"""Command APDU encoding (ISO 7816-4 §5.1), short and extended length."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError

SHORT_MAX_DATA = 255
EXTENDED_MAX_DATA = 65535


@dataclass(frozen=True)
class Apdu:
    """One command APDU. ``le`` is the expected response length: ``None`` for no Le field,
    0 for "as much as there is" (encoded as 00 / 0000)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def encode(self, extended: bool = False) -> bytes:
        """Encode as bytes. Short form unless *extended*; raises :class:`UsageError` when the
        data does not fit the chosen form (chaining is the caller's job, see
        :class:`pivtool.core.connection.ApduProtocol`)."""
        for name, value in (("CLA", self.cla), ("INS", self.ins), ("P1", self.p1), ("P2", self.p2)):
            if not 0 <= value <= 0xFF:
                raise UsageError(f"APDU {name} out of range: {value}")
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        lc = len(self.data)
        if not extended:
            if lc > SHORT_MAX_DATA:
                raise UsageError(f"{lc} bytes do not fit a short APDU")
            body = (bytes((lc,)) + self.data) if lc else b""
            if self.le is not None:
                if not 0 <= self.le <= 256:
                    raise UsageError(f"short Le out of range: {self.le}")
                body += bytes((self.le & 0xFF,))
            return header + body
        if lc > EXTENDED_MAX_DATA:
            raise UsageError(f"{lc} bytes do not fit an extended APDU")
        # Extended form: a 00 marker, then 2-byte Lc; Le is 2 bytes after data, or 3 bytes
        # (00 + 2) when there is no data (ISO 7816-4 §5.1, case 2E).
        body = b""
        if lc:
            body = b"\x00" + lc.to_bytes(2, "big") + self.data
        if self.le is not None:
            if not 0 <= self.le <= 65536:
                raise UsageError(f"extended Le out of range: {self.le}")
            le = (self.le & 0xFFFF).to_bytes(2, "big")
            body += le if lc else b"\x00" + le
        return header + body
