"""The one connection interface, and the ISO 7816 transport protocol above it.

A :class:`Connection` moves exactly one APDU and its response. :class:`ApduProtocol` adds what
every card needs once: command chaining (CLA bit 0x10), GET RESPONSE for 61xx, the 6Cxx Le
retry, extended length where the card supports it, and a redacting APDU trace.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .apdu import SHORT_MAX_DATA, Apdu
from .errors import BadResponseError, error_for_sw
from .sw import SW

if TYPE_CHECKING:
    import logging

#: Below DEBUG so that ``-v`` can show a trace without flooding ordinary debug logs.
TRACE = 5
#: The logger of the APDU trace.
APDU_LOGGER = "pivtool.apdu"
_apdu_log: logging.Logger | None = None


def _trace_log() -> logging.Logger | None:
    """The APDU trace's logger, or None while no code has imported :mod:`logging`: then
    nobody can have asked for the trace, and a command that is not traced does not pay for
    importing the logging package (a few milliseconds of every ``pivtool`` run)."""
    global _apdu_log
    if _apdu_log is None:
        logging = sys.modules.get("logging")
        if logging is None:
            return None
        logging.addLevelName(TRACE, "TRACE")
        _apdu_log = logging.getLogger(APDU_LOGGER)
    return _apdu_log

INS_GET_RESPONSE = 0xC0
CHAIN_BIT = 0x10
#: A card that keeps answering 61xx forever is broken; stop rather than loop.
MAX_RESPONSE_PARTS = 512


@runtime_checkable
class Connection(Protocol):
    """A connection to one card. Whoever opens it closes it; sessions only borrow it."""

    @property
    def atr(self) -> bytes:
        """The card's answer-to-reset."""
        ...

    @property
    def reader_name(self) -> str:
        """Human name of the reader (or virtual attachment)."""
        ...

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU, return (response data, SW)."""
        ...

    def close(self) -> None:
        """Release the card."""
        ...


def _trace(direction: str, data: bytes, sensitive: bool, header: int = 4) -> None:
    apdu_log = _trace_log()
    if apdu_log is None or not apdu_log.isEnabledFor(TRACE):
        return
    if sensitive and len(data) > header:
        # Keep the header (command) or SW (response) so the trace stays useful, drop the rest.
        shown = data[:header].hex() if direction == ">>" else ""
        tail = data[-2:].hex() if direction == "<<" else ""
        apdu_log.log(TRACE, "%s %s<redacted %d bytes>%s", direction, shown,
                     len(data) - header, tail)
    else:
        apdu_log.log(TRACE, "%s %s", direction, data.hex())


class ApduProtocol:
    """Chaining, GET RESPONSE and tracing over a :class:`Connection`.

    ``extended`` selects extended-length APDUs; only enable it for cards that advertise it
    (all YubiKey 4/5 do). Otherwise long command data is sent with command chaining.
    """

    def __init__(self, connection: Connection, extended: bool = False) -> None:
        self.connection = connection
        self.extended = extended
        #: Number of command APDUs sent (for benchmarks and fault-injection tests).
        self.apdu_count = 0

    def _transmit(self, raw: bytes, sensitive: bool) -> tuple[bytes, int]:
        _trace(">>", raw, sensitive)
        self.apdu_count += 1
        data, sw = self.connection.transmit(raw)
        _trace("<<", data + sw.to_bytes(2, "big"), sensitive, header=0)
        return data, sw

    def send_raw(self, apdu: Apdu, sensitive: bool = False) -> tuple[bytes, int]:
        """Send *apdu*, chaining and collecting the full response; return (data, SW).

        *sensitive* redacts command and response data in the trace (PINs, keys).
        """
        data = apdu.data
        if not self.extended or len(data) > 65535:
            # Chain all but the last block with CLA|0x10 (ISO 7816-4 §5.1.1.1).
            while len(data) > SHORT_MAX_DATA:
                block = Apdu(apdu.cla | CHAIN_BIT, apdu.ins, apdu.p1, apdu.p2,
                             data[:SHORT_MAX_DATA])
                resp, sw = self._transmit(block.encode(), sensitive)
                if sw != SW.OK:
                    return resp, sw
                data = data[SHORT_MAX_DATA:]
        # In extended mode every APDU is encoded extended with Le=0000 ("all of it"), so long
        # responses come back in one piece; 61xx is still honoured.
        le = apdu.le if apdu.le is not None else (0 if self.extended else None)
        last = Apdu(apdu.cla, apdu.ins, apdu.p1, apdu.p2, data, le)
        resp, sw = self._transmit(last.encode(extended=self.extended), sensitive)
        if sw >> 8 == 0x6C:
            # Wrong Le: the card tells the right one; resend once with it (ISO 7816-3 T=0).
            last = Apdu(apdu.cla, apdu.ins, apdu.p1, apdu.p2, data, sw & 0xFF or 256)
            resp, sw = self._transmit(last.encode(extended=self.extended), sensitive)
        parts = [resp]
        count = 0
        while sw >> 8 == 0x61:
            count += 1
            if count > MAX_RESPONSE_PARTS:
                raise BadResponseError("card keeps answering 61xx; response too long")
            more = Apdu(0x00, INS_GET_RESPONSE, 0, 0, b"", sw & 0xFF or 256)
            resp, sw = self._transmit(more.encode(), sensitive)
            parts.append(resp)
        return b"".join(parts), sw

    def send(self, apdu: Apdu, sensitive: bool = False, what: str = "PIN") -> bytes:
        """Like :meth:`send_raw` but raise the matching :class:`ApduError` unless SW is 9000.

        *what* names the reference data in wrong-PIN errors ("PIN" or "PUK")."""
        data, sw = self.send_raw(apdu, sensitive)
        if sw != SW.OK:
            raise error_for_sw(sw, data, what)
        return data
