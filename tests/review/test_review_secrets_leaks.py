"""Review (safety standards): a secret never reaches a ``repr``, an exception's text or its
chained ``__cause__``/``__context__``; bad secret input is one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from pivtool.core.errors import UsageError
from tests.cli.clihelp import make_card, run

CANARY = "C4N4RY77"


def _chain_text(exc: BaseException) -> str:
    out = []
    e: BaseException | None = exc
    seen = 0
    while e is not None and seen < 10:
        out.append(f"{e} {e!r}")
        e = e.__cause__ or e.__context__
        seen += 1
    return "\n".join(out)


def test_static_prompter_repr_hides_secrets() -> None:
    from pivtool.workflows.auth import OverridePrompter, StaticPrompter

    p = StaticPrompter({"pin": CANARY.encode(), "puk": b"87654321"})
    assert CANARY not in repr(p) and "87654321" not in repr(p)
    assert CANARY not in repr(OverridePrompter(p, {"new_pin": b"x"}))


def test_lab_ca_issuer_repr_hides_the_passphrase() -> None:
    from pivtool.workflows.issuers import LabCAIssuer

    assert CANARY not in repr(LabCAIssuer("ca", CANARY.encode()))


def test_batch_options_repr_hides_the_ca_passphrase() -> None:
    from pivtool.workflows.batch import BatchOptions, SecretPolicy
    from pivtool.workflows.issuers import LabCAIssuer

    opts = BatchOptions(LabCAIssuer("ca", CANARY.encode()), SecretPolicy(pin=b"12345678"))
    assert CANARY not in repr(opts) and "12345678" not in repr(opts)


def test_non_ascii_management_key_is_not_in_the_exception_chain() -> None:
    from pivtool.workflows.secrets import parse_hex_key

    with pytest.raises(UsageError) as e:
        parse_hex_key(CANARY.encode() + b"\xff")
    assert CANARY not in _chain_text(e.value)


def test_non_hex_management_key_is_not_in_the_exception_chain() -> None:
    from pivtool.workflows.secrets import parse_hex_key

    with pytest.raises(UsageError) as e:
        parse_hex_key(CANARY.encode())
    assert CANARY not in _chain_text(e.value)


def test_non_text_puk_is_not_in_the_escrow_exception_chain(tmp_path: Path) -> None:
    from pivtool.workflows.escrow import EscrowFile

    ef = EscrowFile(tmp_path / "e.json", b"passphrase-1")
    with pytest.raises(UsageError) as e:
        ef.put(1, puk=CANARY.encode() + b"\xff")
    assert CANARY not in _chain_text(e.value)


@pytest.mark.parametrize("var", ["PIVTOOL_PIN", "PIVTOOL_MGMT_KEY"])
def test_non_utf8_secret_in_the_environment_is_a_usage_error(tmp_path: Path, var: str,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import pivtool.cli.main as climain

    seen: list[str] = []
    original = climain.exit_code_for

    def recording(exc: BaseException) -> object:
        seen.append(_chain_text(exc))
        return original(exc)

    monkeypatch.setattr(climain, "exit_code_for", recording)
    card = make_card(tmp_path)
    before = card.read_bytes()
    # What Python makes of a non-UTF-8 byte in the environment (surrogateescape).
    args = ("pin", "verify") if var == "PIVTOOL_PIN" else ("objects", "chuid", "--generate")
    r = run(card, *args, env={var: CANARY + "\udcff"})
    assert r.exit_code == 2, r.output
    assert var in r.stderr and CANARY not in r.output
    assert seen and CANARY not in "".join(seen)
    assert card.read_bytes() == before


def test_secret_file_without_a_newline_is_not_read_without_bound(tmp_path: Path) -> None:
    """``--pin-file /dev/zero`` (or a huge file) must not read until memory runs out."""
    from pivtool.cli.secrets import PIN, get_secret

    big = tmp_path / "big"
    big.write_bytes(b"1" * (1 << 20))
    with pytest.raises(UsageError) as e:
        get_secret(PIN, str(big))
    assert "too long" in str(e.value)


def test_secret_file_first_line_still_works(tmp_path: Path) -> None:
    from pivtool.cli.secrets import PFX_PASSWORD, get_secret

    f = tmp_path / "pw"
    f.write_bytes(b"x" * 1000 + b"\r\nsecond line\n")
    assert get_secret(PFX_PASSWORD, str(f)) == b"x" * 1000
