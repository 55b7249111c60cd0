"""The card-diversity matrix through pcscd: the cases marked ``pcsc=True`` in
tests/diversity/cases.py, on every profile, with the card served by the vpcd bridge that
``pivtool sim serve`` runs (the profile's ATR, real PC/SC transactions, short APDUs where
the card asks for them). Each must end exactly as in process (same expectations).

Cards are shared per profile and kind (loaded, fresh, PIN blocked) to keep the tier short:
cases run in a fixed order, the changes one makes do not touch what the next one reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pcsc_stack import PcscStack, VirtualCardProcess, card_factory

from pivtool.sim.state import load_state
from tests.diversity.cases import CASES, PROFILE_NAMES, Case, expect, judge, prepare, run_in

pytestmark = pytest.mark.pcsc

# enroll changes the fresh card's PIN: it runs after everything else that uses that card.
PCSC_CASES = sorted((c for c in CASES if c.pcsc), key=lambda c: c.command == "enroll")


def _params() -> list[Any]:
    out = []
    for profile in PROFILE_NAMES:  # profile-major: one profile's cards at a time
        for case in PCSC_CASES:
            exp = expect(case.label, profile)
            marks = [pytest.mark.xfail(strict=True, reason=exp.xfail)] if exp.xfail else []
            out.append(pytest.param(case, profile, id=f"{profile}:{case.label}", marks=marks))
    return out


class Cards:
    """The served cards of the current profile; moving to the next profile stops them."""

    def __init__(self, stack: PcscStack, base: Path) -> None:
        self.stack = stack
        self.base = base
        self.profile = ""
        self.work = base
        self.cards: dict[str, VirtualCardProcess] = {}
        self._factory: Any = None

    def get(self, profile: str, kind: str) -> tuple[VirtualCardProcess, Path]:
        if profile != self.profile:
            self.close()
            self.profile = profile
            self.work = self.base / profile
            prepare(self.work, profile)
            self._factory = card_factory(self.stack, self.work / "served")
            (self.work / "served").mkdir()
            self._make = self._factory.__enter__()
        if kind not in self.cards:
            self.cards[kind] = self._make(state=load_state(self.work / f"{kind}.json"))
        return self.cards[kind], self.work

    def close(self) -> None:
        if self._factory is not None:
            self._factory.__exit__(None, None, None)
            self._factory = None
        self.cards = {}


@pytest.fixture(scope="module")
def cards(pcsc_stack: PcscStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cards]:
    c = Cards(pcsc_stack, tmp_path_factory.mktemp("diversity-pcsc"))
    yield c
    c.close()


@pytest.mark.parametrize(("case", "profile"), _params())
def test_command_on_profile_through_pcscd(case: Case, profile: str, cards: Cards,
                                          tmp_path: Path) -> None:
    assert case.card is not None
    card, work = cards.get(profile, case.card)
    scratch = tmp_path / "work"
    # The input files, without the prepared cards (the served ones are the cards here).
    shutil.copytree(work, scratch, ignore=lambda d, names: [
        n for n in names if Path(d) == work and (n == "served" or n.endswith(".json"))])
    r = run_in(scratch, "--reader", card.substring, *case.args, env=case.env)
    found = judge(r, case, profile)
    assert not found, f"{found}\n{r.output[-2000:]}"
