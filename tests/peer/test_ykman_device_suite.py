"""Yubico's PIV hardware tests judge the virtual YubiKey (issue 20).

yubikey-manager ships ``tests/device/test_piv.py`` (the yubikit library) and
``tests/device/cli/piv`` (the ``ykman piv`` CLI) for a real YubiKey on the desk. Here they
run, unchanged and as Yubico runs them (``pytest --device SERIAL``), against a virtual
YubiKey served behind our own pcscd on a reader named "Yubico YubiKey OTP+FIDO+CCID" — one
run per profile in :data:`ykman_suite.PROFILES`. See ``tests/peer/ykman_suite.py`` for how
the suite is fetched and judged; ``known_upstream.txt`` explains every test that does not
pass. The per-profile counts are the matrix in docs/virtual-yubikey.md; a run whose counts
differ from it fails (regenerate with ``.venv/bin/python tools/gen_peer_matrix.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from pcsc_stack import PcscStack, VCardFactory, wait_reader  # noqa: E402

from tests.peer.filler import filler_card  # noqa: E402
from tests.peer.ykman_suite import (  # noqa: E402
    PROFILES,
    RESULTS_ENV,
    Profile,
    doc_rows,
    judge,
    load_known,
    render_rows,
    result_dict,
    run_suite,
    suite_dir,
)

pytestmark = [pytest.mark.pcsc, pytest.mark.interop, pytest.mark.slow]


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_ykman_device_suite(
    profile: Profile, pcsc_stack: PcscStack, vcard_factory: VCardFactory, tmp_path: Path
) -> None:
    suite_dir()  # fetch (cached) before a card is started
    known = load_known()
    card = vcard_factory(firmware=profile.firmware, yubico_reader=True, **profile.card)
    # The other slot of the YubiKey-named entry gets a card that is not a YubiKey (filler.py).
    other = pcsc_stack.acquire_reader(yubico=True)
    try:
        with filler_card(other.port):
            wait_reader(other.name, True, 10.0)
            run = run_suite(profile, card.serial or 0, tmp_path / "suite")
    finally:
        pcsc_stack.release_reader(other)

    assert run.cases, f"the upstream suite reported no tests (exit {run.returncode}):\n" \
                      f"{run.output}"
    problems = judge(run, known, profile)
    assert not problems, "\n".join(
        [f"ykman {run.version} device tests on virtual {profile.name}:", *problems,
         "--- upstream output (tail) ---", run.output[-3000:]])
    counts = run.counts()
    assert counts["passed"] >= 20, counts  # a run that tested (almost) nothing is no verdict

    result = result_dict(run, known)
    if os.environ.get(RESULTS_ENV):
        return  # tools/gen_peer_matrix.py is collecting rows to write the table
    missing = [row for row in render_rows(result) if row not in doc_rows()]
    assert not missing, (
        "docs/virtual-yubikey.md's peer-suite matrix is stale for profile "
        f"{profile.name}; run .venv/bin/python tools/gen_peer_matrix.py. Expected rows:\n"
        + "\n".join(missing))
