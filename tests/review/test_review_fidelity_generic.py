"""Generic PIV mode: a card without YubiKey extensions must only ever see SP 800-73-4
instructions, apart from the one GET VERSION probe that tells it apart from a YubiKey."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pivtool.certs.ca import LabCA
from pivtool.sim import card as simcard
from tests.cli.clihelp import make_card, run, session
from tests.simcards import TDES_9B

YUBICO_INS = {0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFD, 0xFE, 0xFF}
ENV = {"PIVTOOL_PIN": "123456", "PIVTOOL_NEW_PIN": "24681357",
       "PIVTOOL_NEW_PUK": "86427531"}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    log: list[bytes] = []
    orig = simcard.VirtualCard.execute

    def spy(self: simcard.VirtualCard, apdu: bytes) -> bytes:
        log.append(bytes(apdu))
        return orig(self, apdu)

    monkeypatch.setattr(simcard.VirtualCard, "execute", spy)
    yield log


def _yubico(log: list[bytes]) -> list[str]:
    return [a[:4].hex() for a in log if a[1] in YUBICO_INS]


def _selects(log: list[bytes]) -> list[bytes]:
    return [a[5:] for a in log if a[1] == 0xA4]


def test_generic_card_commands_stay_within_sp800_73(tmp_path: Path, sent: list[bytes]
                                                    ) -> None:
    card = make_card(tmp_path, generic=True, mgmt_key_type=TDES_9B)
    ca = tmp_path / "ca"
    LabCA.init(ca, "CN=Lab CA")
    for args in (["info"], ["keys", "generate", "9d", "-a", "eccp256"],
                 # The card cannot report PUK tries: enroll replaces the factory PUK only
                 # with --allow-last-try (or a person's yes).
                 ["enroll", "--upn", "g@contoso.com", "--ca", str(ca), "--allow-last-try"],
                 ["info"]):
        sent.clear()
        r = run(card, "--json", *args, env=ENV)
        assert r.exit_code == 0, r.output
        # Exactly one YubiKey instruction: the GET VERSION probe (answered 6D00).
        assert _yubico(sent) == ["00fd0000"], args
        # Only the PIV applet is selected: no management applet, no OTP applet.
        assert all(aid.startswith(bytes.fromhex("a000000308")) for aid in _selects(sent))
        # No extended APDUs for a card that never announced them.
        assert all(len(a) <= 5 or a[4] != 0 for a in sent), args
    # certs import on the generic card, with the certificate enroll left in 9a.
    s = session(card)
    try:
        from pivtool.piv.constants import Slot

        cert = s.get_certificate(Slot.AUTHENTICATION)
    finally:
        s.connection.close()
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    sent.clear()
    r = run(card, "--json", "certs", "import", "9a", str(pem), "--force", env=ENV)
    assert r.exit_code == 0, r.output
    assert _yubico(sent) == ["00fd0000"]
    assert isinstance(cert, x509.Certificate)
