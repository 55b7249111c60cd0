"""Helpers for CLI tests: run pivtool in-process against a virtual card state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from pivtool.cli.main import cli
from pivtool.connect import open_sim_link
from pivtool.piv.session import PivSession
from pivtool.sim.state import new_card_state, save_state


def make_card(tmp: Path, name: str = "card.json", **kwargs: Any) -> Path:
    """A factory-fresh virtual card state file."""
    path = tmp / name
    save_state(new_card_state(**{"serial": 5550001, **kwargs}), path)
    return path


def run(card: Path | None, *args: str, env: dict[str, str] | None = None,
        input: str | None = None) -> Result:
    """Invoke pivtool (``--sim card`` first when given); secrets only through *env*."""
    argv = (["--sim", str(card)] if card is not None else []) + list(args)
    return CliRunner().invoke(cli, argv, env=env or {}, input=input,
                              catch_exceptions=False)


def run_json(card: Path | None, *args: str, env: dict[str, str] | None = None) -> Any:
    """Invoke with --json and parse stdout; asserts exit 0."""
    r = run(card, "--json", *args, env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def session(card: Path) -> PivSession:
    """A PivSession on the card file (close with ``s.connection.close()``)."""
    return PivSession(open_sim_link(card))


def self_signed(cn: str, key: Any = None, *, ca: bool = False) -> Any:
    """A self-signed certificate for *cn* (any characters: tests craft hostile names)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(7).not_valid_before(start)
               .not_valid_after(start + dt.timedelta(days=20000)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    return builder.sign(key, hashes.SHA256())


def store_certificate_object(card: Path, tag: int, cert: Any) -> None:
    """Write *cert* straight into the virtual card's data object *tag* (no card command:
    for contents a real card could hold but pivtool would not write)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from pivtool.piv.objects import encode_certificate_object
    from pivtool.sim.state import load_state

    state = load_state(card)
    state.objects[tag] = encode_certificate_object(cert.public_bytes(Encoding.DER))
    save_state(state, card)
