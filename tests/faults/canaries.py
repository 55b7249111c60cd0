"""Canary secrets for the faults suite's audits (tests/faults/test_faults_secrets.py writes
them; tests/faults/conftest.py checks logs and subprocess argv for them session-wide)."""

from __future__ import annotations

CANARY_PIN = "Kq4$Zt8w"
CANARY_PUK = "Pj6%Hn2v"
CANARY_NEW_PIN = "Ry3&Lm9x"
CANARY_MGMT = "feedfacecafebeeffeedfacecafebeeffeedfacecafebeef"
CANARY_PFX = "pfx-Canary-7731"
CANARY_ESCROW = "escrow-Canary-5519"
#: A Microsoft Graph application client secret (tests/faults/test_faults_graph_secrets.py).
CANARY_CLIENT_SECRET = "graph~Canary.Secret-4471"
#: argv (and env names) of every subprocess started in the faults session (conftest).
SUBPROCESS_ARGV: list[str] = []
#: The environment (names and values) every subprocess of the faults session started with:
#: pivtool starts its children without PIVTOOL_* variables (pivtool.core.childenv).
SUBPROCESS_ENV: list[str] = []

TEXT_CANARIES = [CANARY_PIN, CANARY_PUK, CANARY_NEW_PIN, CANARY_PFX, CANARY_ESCROW,
                 CANARY_CLIENT_SECRET]


def canary_forms() -> list[str]:
    """Every spelling a canary could leak in: text, hex either case, Python bytes repr."""
    forms = []
    for c in TEXT_CANARIES:
        b = c.encode()
        forms += [c, b.hex(), b.hex().upper(), repr(b)]
    key = bytes.fromhex(CANARY_MGMT)
    forms += [CANARY_MGMT, CANARY_MGMT.upper(), repr(key), key.hex(":")]
    return forms


def leaks(text: str) -> list[str]:
    return [f for f in canary_forms() if f in text]


def binary_leaks(data: bytes) -> list[str]:
    found = [f for f in canary_forms() if f.encode() in data]
    if bytes.fromhex(CANARY_MGMT) in data:
        found.append("raw management key bytes")
    return found + [c for c in TEXT_CANARIES if c.encode() in data and c not in found]
