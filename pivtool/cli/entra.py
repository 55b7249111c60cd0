"""``pivtool entra``: what to store in Microsoft Entra ID for a card's certificate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

import click

from ..piv.constants import Slot
from .context import CliContext, pass_ctx
from .options import SLOT, json_option

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs.entra import CertUserId

#: JSON schema identifier of ``pivtool entra ids --json``.
IDS_SCHEMA = "pivtool.entra-ids/1"



@click.group(short_help="certificateUserIds values for Microsoft Entra ID.")
def entra() -> None:
    """Microsoft Entra ID helpers for certificate-based authentication."""




@entra.command("ids")
@click.option("--slot", type=SLOT, metavar="SLOT",
              help="Read the certificate from this slot (default 9a; no PIN needed).")
@click.option("--cert", "cert_file", metavar="FILE",
              help="Read the certificate from FILE (PEM or DER, '-' = stdin) instead of "
                   "a card.")
@click.option("--graph", is_flag=True,
              help="Print only the Microsoft Graph PATCH /users/{id} body "
                   '({"authorizationInfo": {"certificateUserIds": [...]}}): high-affinity '
                   "values first, then the UPN, at most 10.")
@click.option("--sha1-pukey", type=click.Choice(["public-key", "thumbprint", "both"]),
              default="public-key", show_default=True,
              help="Input of the X509:<SHA1-PUKEY> value: SHA-1 of the public key (Microsoft's "
                   "[MS-PKCA] definition) or of the whole certificate (what Microsoft's Entra "
                   "PowerShell module emits), or both.")
@json_option
@pass_ctx
def entra_ids(obj: CliContext, slot: Slot | None, cert_file: str | None, graph: bool,
              sha1_pukey: str) -> None:
    """Show the certificateUserIds values for a certificate: each value, its affinity
    (high = bound to this certificate or key, low = bound to a name) and how it was
    formatted.

    Formats follow Microsoft's certificateUserIds documentation: issuer and subject most
    significant part first without spaces, the serial number's bytes reversed (as in
    Microsoft's worked example). Paste the values into the user's Authorization info in the
    Entra admin center, or send the --graph body with
    'az rest --method PATCH --url https://graph.microsoft.com/v1.0/users/UPN --body @FILE'.
    Note: the PATCH replaces the user's existing values."""
    from ..certs.entra import (
        certificate_user_id_gaps,
        certificate_user_ids,
        graph_patch_body,
        graph_selection,
        reversed_serial_hex,
    )
    from ..certs.inspect import serial_hex, summarize
    from ..core.errors import UsageError

    if slot is not None and cert_file is not None:
        raise UsageError("use --slot or --cert, not both")
    cert, source = (_from_file(cert_file) if cert_file is not None
                    else _from_slot(obj, slot or Slot.AUTHENTICATION))
    mode = cast(Literal["public-key", "thumbprint", "both"], sha1_pukey)  # click.Choice
    ids = certificate_user_ids(cert, sha1_pukey=mode)
    chosen, left_out = graph_selection(ids)
    body = graph_patch_body(chosen)
    if graph:
        import json

        click.echo(json.dumps(body, indent=2))
        if left_out:
            click.echo("Left out of the body: " + ", ".join(sorted({i.kind for i in left_out}))
                       + " (see 'pivtool entra ids').", err=True)
        return
    summary = summarize(cert).to_json()
    data = {
        "schema": IDS_SCHEMA,
        "source": source,
        "certificate": summary,
        "serial_order": "reversed-bytes",
        "serial_reversed": reversed_serial_hex(cert.serial_number),
        "serial_big_endian": serial_hex(cert.serial_number),
        "sha1_pukey": sha1_pukey,
        "ids": [i.to_json() for i in ids],
        "gaps": certificate_user_id_gaps(cert),
        "graph_patch_body": body,
    }
    obj.emit(data, _text(ids, data, sha1_pukey))


def _from_file(path: str) -> tuple[x509.Certificate, dict[str, Any]]:
    from ..certs.inspect import load_certificate
    from .files import read_input

    return load_certificate(read_input(path)), {"file": path}


def _from_slot(obj: CliContext, slot: Slot) -> tuple[x509.Certificate, dict[str, Any]]:
    from ..core.errors import NotFoundError

    with obj.session() as s:
        try:
            cert = s.get_certificate(slot)
        except NotFoundError as e:
            raise NotFoundError(e.sw, e.data,
                                f"slot {slot.label} holds no certificate") from None
    return cert, {"slot": f"{slot.value:02x}"}


_SHA1_TEXT = {
    "public-key": "SHA-1 of the subjectPublicKey bits (not the certificate thumbprint that "
                  "Microsoft's Entra PowerShell module uses; --sha1-pukey both adds it)",
    "thumbprint": "the certificate thumbprint (SHA-1 of the DER certificate), as Microsoft's "
                  "Entra PowerShell module emits it",
    "both": "both forms: SHA-1 of the public key bits, then the certificate thumbprint",
}


def _text(ids: list[CertUserId], data: dict[str, Any], sha1_pukey: str) -> str:
    cert = data["certificate"]
    src = data["source"]
    where = f"slot {src['slot']}" if "slot" in src else src["file"]
    lines = [f"certificateUserIds for {cert['subject'] or '(empty subject)'} ({where}):"]
    width = max((len(i.kind) for i in ids), default=0)
    for i in ids:
        lines.append(f"  {i.affinity:4}  {i.kind:{width}}  {i.value}")
    lines += [
        "",
        f"Serial: bytes reversed, {data['serial_reversed']} (big-endian "
        f"{data['serial_big_endian']}), as in Microsoft's documentation example.",
        f"SHA1-PUKEY: {_SHA1_TEXT[sha1_pukey]}.",
        "Issuer/Subject: most significant part first, ',' without spaces.",
    ]
    for gap in data["gaps"]:
        lines.append(f"Not available: {gap}")
    return "\n".join(lines)
