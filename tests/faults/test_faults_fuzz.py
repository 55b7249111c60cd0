"""Bounded fuzzing in the regular suite (the 100,000-case run is bench/fuzz.py).

Every target in tests/faults/fuzztargets.py gets random bytes and mutations of real inputs
(a recorded card conversation, certificates, a PKCS#12 file, a CSR, a roster): the only
exceptions allowed are pivtool's own (PivToolError; CertError for certificate input).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.fuzztargets import Target, decode_script, encode_script, mutate, targets

TARGETS = {t.name: t for t in targets()}
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _mutated(t: Target) -> st.SearchStrategy[bytes]:
    seeds = t.seeds()
    return st.tuples(st.sampled_from(seeds), st.integers(0, 2**32 - 1)).map(
        lambda p: mutate(p[0], random.Random(p[1])))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_random_bytes(name: str) -> None:
    @FAST
    @given(st.binary(max_size=512))
    def check(data: bytes) -> None:
        TARGETS[name].run(data)

    check()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_seeds(name: str) -> None:
    t = TARGETS[name]

    @FAST
    @given(_mutated(t))
    def check(data: bytes) -> None:
        t.run(data)

    check()


def test_seeds_are_valid() -> None:
    """The seeds run clean (else the mutations start from noise)."""
    for t in TARGETS.values():
        for seed in t.seeds():
            t.run(seed)


@settings(max_examples=300, deadline=None, database=None)
@given(method=st.integers(0, 255),
       answers=st.lists(st.tuples(st.binary(max_size=80),
                                  st.sampled_from([0x9000, 0x6100, 0x61FF, 0x63C1, 0x6A82,
                                                   0x6982, 0x6983, 0x6D00, 0x6C05, 0x6A80,
                                                   0x6700, 0x6985, 0x6F00])),
                        max_size=12))
def test_session_any_answers(method: int, answers: list[tuple[bytes, int]]) -> None:
    """Every PivSession method (and the card-state reader) against answers of any data and
    status word: pivtool's errors only."""
    raw = encode_script(method, answers)
    assert decode_script(raw) == (method, answers)
    TARGETS["session"].run(raw)
