"""The issuer options shared by ``enroll``, ``recover --reenroll`` and ``batch enroll``, and the
one place that turns them into an :class:`~pivtool.workflows.issuers.Issuer`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..workflows.issuers import Issuer

F = TypeVar("F", bound=Callable[..., Any])


def issuer_options(context: str = "", *, csr_out: bool = True,
                   cmd_note: str = "") -> Callable[[F], F]:
    """``--ca DIR | --issuer-cmd CMD | --csr-out FILE`` with ``--issuer-timeout``,
    ``--ca-bundle`` and ``--days``. *context* prefixes the help (e.g. ``"--reenroll: "``);
    without *csr_out* there is no two-step mode (``batch enroll``); *cmd_note* ends
    ``--issuer-cmd``'s help."""

    def lead(text: str) -> str:
        return context + text if context else text[:1].upper() + text[1:]

    options = [
        click.option("--ca", "ca_dir", metavar="DIR",
                     help=lead("issue with the lab CA in DIR (an encrypted CA key's "
                               "passphrase from $PIVTOOL_CA_PASSPHRASE or a prompt).")),
        click.option("--issuer-cmd", metavar="CMD",
                     help=lead("issue with CMD: CSR PEM on stdin, certificate PEM on stdout "
                               f"(run without a shell).{cmd_note}")),
        click.option("--issuer-timeout", type=float, default=120.0, show_default=True,
                     help="Seconds to wait for --issuer-cmd."),
        click.option("--ca-bundle", metavar="FILE",
                     help="CA certificate(s) to check the issued certificate's chain "
                          "against."),
    ]
    if csr_out:
        options.append(
            click.option("--csr-out", metavar="FILE",
                         help=lead("two steps: write the CSR to FILE and stop; import the "
                                   "certificate later with 'pivtool certs import 9a "
                                   "CERT'.")))
    options.append(click.option("--days", type=int, default=365, show_default=True,
                                help="Validity with --ca."))

    def deco(f: F) -> F:
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


def chosen_modes(ca_dir: str | None, issuer_cmd: str | None, csr_out: str | None) -> int:
    """How many of the three issuer modes were given."""
    return sum(1 for m in (ca_dir, issuer_cmd, csr_out) if m)


def build_issuer(ca_dir: str | None, issuer_cmd: str | None, issuer_timeout: float,
                 ca_bundle: str | None, days: int) -> Issuer | None:
    """The issuer the options select; ``None`` for two-step ``--csr-out`` mode. The CA
    bundle (if any) is loaded here so a bad file fails before the card is touched."""
    from ..workflows.issuers import CommandIssuer, LabCAIssuer

    bundle = []
    if ca_bundle:
        from ..certs.inspect import load_certificates
        from .files import read_input

        bundle = load_certificates(read_input(ca_bundle))
    if ca_dir:
        from ..certs.ca import LabCA

        passphrase = None
        if LabCA.is_encrypted(ca_dir):
            # Same sources as 'pivtool ca': the environment, else a hidden prompt.
            from .secrets import SecretSpec, get_secret

            spec = SecretSpec("CA passphrase", "PIVTOOL_CA_PASSPHRASE", "--ca (no file option)")
            passphrase = get_secret(spec, None)
        return LabCAIssuer(ca_dir, passphrase, days)
    if issuer_cmd:
        return CommandIssuer(issuer_cmd, issuer_timeout, bundle)
    return None
