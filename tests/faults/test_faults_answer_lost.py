"""The "answer lost" fault: the card executes the command, the reply never arrives."""

from __future__ import annotations

from pathlib import Path

import pytest

from pivtool.connect import open_sim_link
from pivtool.core.errors import CardRemovedError
from pivtool.piv.session import PivSession
from pivtool.sim.attach import FaultKind, Faults
from pivtool.sim.state import load_state
from tests.cli.clihelp import make_card


def test_in_process_answer_lost_keeps_the_effect(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    link = open_sim_link(card)
    s = PivSession(link)
    # The next command (CHANGE REFERENCE DATA) runs on the card; its answer is lost.
    link.sim.faults = Faults(at=link.sim.commands + 1, kind=FaultKind.ANSWER_LOST)
    with pytest.raises(CardRemovedError):
        s.change_pin(b"123456", b"24681357")
    with pytest.raises(CardRemovedError):  # the link stays dead, as a pulled card
        s.get_pin_metadata()
    link.close()
    st = load_state(card)
    assert st.pin == b"24681357" and st.pin_retries_left == st.pin_retries_total
