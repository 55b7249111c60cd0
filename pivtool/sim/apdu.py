"""Command APDU parsing and the status words the virtual card answers with."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Sw(IntEnum):
    """Status words a YubiKey's PIV and management applets use."""

    OK = 0x9000
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    INCORRECT_DATA = 0x6A80
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_NOT_FOUND = 0x6A88
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


class SwError(Exception):
    """Raised by a command handler to end the command with a status word.

    Carries only the SW: never secret material, so it is safe to log.
    """

    def __init__(self, sw: int) -> None:
        super().__init__(f"SW={sw:04X}")
        self.sw = sw


def retries_sw(remaining: int) -> int:
    """The 63Cx answer to a wrong PIN/PUK; x is capped at 15 as the encoding demands."""
    return 0x63C0 | min(remaining, 0x0F)


@dataclass(frozen=True)
class Command:
    """A parsed command APDU (ISO 7816-4 cases 1-4, short or extended)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    ne: int  # maximum response length the host accepts (0 = no Le field)
    extended: bool

    @property
    def chained(self) -> bool:
        """True when CLA announces that more chained command parts follow."""
        return bool(self.cla & 0x10)


def parse_apdu(apdu: bytes) -> Command:
    """Parse ``apdu`` or raise ``SwError(6700)`` for an impossible length encoding."""
    n = len(apdu)
    if n < 4:
        raise SwError(Sw.WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    if n == 4:  # case 1
        return Command(cla, ins, p1, p2, b"", 0, False)
    if n == 5:  # case 2 short
        return Command(cla, ins, p1, p2, b"", apdu[4] or 256, False)
    if apdu[4] != 0:  # short with Lc
        lc = apdu[4]
        if n == 5 + lc:
            return Command(cla, ins, p1, p2, apdu[5:], 0, False)
        if n == 6 + lc:
            return Command(cla, ins, p1, p2, apdu[5:-1], apdu[-1] or 256, False)
        raise SwError(Sw.WRONG_LENGTH)
    # Extended length: 00 followed by two bytes.
    if n == 7:  # case 2 extended
        le = int.from_bytes(apdu[5:7], "big")
        return Command(cla, ins, p1, p2, b"", le or 65536, True)
    if n < 7:
        raise SwError(Sw.WRONG_LENGTH)
    lc = int.from_bytes(apdu[5:7], "big")
    if lc == 0:
        raise SwError(Sw.WRONG_LENGTH)
    if n == 7 + lc:
        return Command(cla, ins, p1, p2, apdu[7:], 0, True)
    if n == 9 + lc:
        le = int.from_bytes(apdu[-2:], "big")
        return Command(cla, ins, p1, p2, apdu[7:-2], le or 65536, True)
    raise SwError(Sw.WRONG_LENGTH)
