"""Cards we did not make: a wrapper around the virtual card that answers some commands the
way third-party PIV applets and generic cards do (issue 14; see /work/shared/pcsc-facts.md):
GET METADATA for an empty slot answered 9000 with policy and origin but no algorithm, SW 0002
after an import, origin 0 for generated keys, 6A86 instead of 6A88, GET VERSION refused.

A *rule* sees the command APDU and the real card's answer and returns the answer to give
instead (or ``None`` to pass the real one through).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pivtool.core.connection import Connection

Answer = tuple[bytes, int]
Rule = Callable[[bytes, Answer], Answer | None]


class QuirkyLink:
    """A :class:`~pivtool.core.connection.Connection` whose answers *rules* may rewrite."""

    def __init__(self, inner: Connection, rules: list[Rule]) -> None:
        self.inner = inner
        self.rules = rules
        self.sent: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def reader_name(self) -> str:
        return self.inner.reader_name

    def transmit(self, apdu: bytes) -> Answer:
        self.sent.append(bytes(apdu))
        answer = self.inner.transmit(apdu)
        for rule in self.rules:
            odd = rule(bytes(apdu), answer)
            if odd is not None:
                return odd
        return answer

    def close(self) -> None:
        self.inner.close()


def _metadata_ref(apdu: bytes) -> int | None:
    return apdu[3] if len(apdu) >= 4 and apdu[1] == 0xF7 else None


def empty_slot_metadata_without_algorithm(apdu: bytes, answer: Answer) -> Answer | None:
    """GET METADATA for an empty slot: 9000, PIN/touch policy and origin, no algorithm."""
    ref = _metadata_ref(apdu)
    if ref is not None and ref not in (0x80, 0x81, 0x9B) and answer[1] == 0x6A88:
        return bytes.fromhex("02020101" "030100"), 0x9000
    return None


def slot_metadata_sw(sw: int, slot: int) -> Rule:
    """GET METADATA for *slot* answered with the bare status word *sw*."""
    def rule(apdu: bytes, answer: Answer) -> Answer | None:
        return (b"", sw) if _metadata_ref(apdu) == slot else None
    return rule


def origin_zero(apdu: bytes, answer: Answer) -> Answer | None:
    """Slot metadata with origin 0 (third-party applets say 0 for keys they generated)."""
    ref = _metadata_ref(apdu)
    if ref is None or ref in (0x80, 0x81, 0x9B) or answer[1] != 0x9000:
        return None
    data, out, pos = answer[0], b"", 0
    while pos < len(data):
        tag, length = data[pos], data[pos + 1]
        value = data[pos + 2:pos + 2 + length]
        out += bytes((tag, length)) + (b"\x00" if tag == 0x03 else value)
        pos += 2 + length
    return out, 0x9000


def all_metadata_sw(sw: int) -> Rule:
    """Every GET METADATA (PIN, PUK, management key, slots) answered with *sw*."""
    def rule(apdu: bytes, answer: Answer) -> Answer | None:
        return (b"", sw) if _metadata_ref(apdu) is not None else None
    return rule


def install_quirks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Rule]]:
    """Rules applied to every card the CLI opens in this test (append to the list); for a
    fixture: ``yield from install_quirks(monkeypatch)``."""
    rules: list[Rule] = []
    from pivtool.cli import context

    orig = context.CliContext.open_connection

    def open_quirky(self: Any) -> Connection:
        return QuirkyLink(orig(self), rules)

    monkeypatch.setattr(context.CliContext, "open_connection", open_quirky)
    yield rules


def quirky_session(card: Path, rules: list[Rule]) -> Any:
    """A PivSession on the card file through *rules*."""
    from pivtool.connect import open_sim_link
    from pivtool.piv.session import PivSession

    return PivSession(QuirkyLink(open_sim_link(card), rules))
