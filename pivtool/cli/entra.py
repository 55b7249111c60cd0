"""``pivtool entra``: what to store in Microsoft Entra ID for a card's certificate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

import click

from ..piv.constants import Slot
from .context import CliContext, pass_ctx
from .graph import graph_options
from .options import SLOT, json_option

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs.entra import CertUserId

#: JSON schema identifier of ``pivtool entra ids --json``.
IDS_SCHEMA = "pivtool.entra-ids/1"


@click.group(short_help="certificateUserIds values; bind them in Entra; the tenant's CBA "
                        "policy.")
def entra() -> None:
    """Microsoft Entra ID helpers for certificate-based authentication: the
    certificateUserIds values of a certificate (ids), writing them to a user through
    Microsoft Graph (bind, unbind) and checking the tenant's CBA policy (policy)."""


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


# --------------------------------------------------------------------------- Graph


def _certificate(obj: CliContext, slot: Slot | None, cert_file: str | None
                 ) -> tuple[x509.Certificate, dict[str, Any]]:
    from ..core.errors import UsageError

    if slot is not None and cert_file is not None:
        raise UsageError("use --slot or --cert, not both")
    return (_from_file(cert_file) if cert_file is not None
            else _from_slot(obj, slot or Slot.AUTHENTICATION))


def _bind_command(action: str) -> Any:
    verb = "Add" if action == "bind" else "Remove"

    @click.option("--upn", required=True, metavar="USER@DOMAIN",
                  help="The Entra user (userPrincipalName or object ID).")
    @click.option("--slot", type=SLOT, metavar="SLOT",
                  help="Take the certificate from this slot (default 9a; no PIN needed).")
    @click.option("--cert", "cert_file", metavar="FILE",
                  help="Take the certificate from FILE (PEM or DER) instead of a card.")
    @click.option("--values", "values_spec", default="high", show_default=True,
                  metavar="high|all|LIST",
                  help="Which values: high (issuer+serial, SKI, public key: bound to this "
                       "certificate), all, or kinds separated by commas "
                       "(e.g. IssuerAndSerialNumber,PrincipalName).")
    @click.option("--sha1-pukey", type=click.Choice(["public-key", "thumbprint", "both"]),
                  default="public-key", show_default=True,
                  help="Input of the X509:<SHA1-PUKEY> value (see 'entra ids').")
    @click.option("--dry-run", is_flag=True,
                  help="Read the user and check everything, but write nothing.")
    @graph_options
    @json_option
    @pass_ctx
    def command(obj: CliContext, upn: str, slot: Slot | None, cert_file: str | None,
                values_spec: str, sha1_pukey: str, dry_run: bool, tenant: str | None,
                client_id: str | None, client_secret_file: str | None,
                client_cert: str | None) -> None:
        from ..certs.entra import certificate_user_ids
        from ..graph.bind import BIND_PERMISSIONS, apply
        from ..graph.errors import SyncedUserError
        from ..workflows.entra import parse_values_spec, select_values
        from .graph import graph_client

        # The options and configuration first (no network yet): a bad --values, a missing
        # tenant or a bad credential file is reported before the card is read.
        parse_values_spec(values_spec)
        client = graph_client(tenant=tenant, client_id=client_id,
                              client_secret_file=client_secret_file, client_cert=client_cert,
                              permissions=BIND_PERMISSIONS)
        with client:
            cert, _source = _certificate(obj, slot, cert_file)
            mode = cast(Literal["public-key", "thumbprint", "both"], sha1_pukey)
            chosen = select_values(certificate_user_ids(cert, sha1_pukey=mode), values_spec)
            try:
                if action == "bind":
                    result = apply(client, upn, add=chosen, dry_run=dry_run, action="bind")
                else:
                    result = apply(client, upn, remove=[i.value for i in chosen],
                                   dry_run=dry_run, action="unbind")
                    result.requested = chosen
            except SyncedUserError as e:
                # What to do instead, before the one-line error: the AD side.
                click.echo("On-premises (Active Directory PowerShell), then let Microsoft "
                           "Entra Connect synchronise altSecurityIdentities to "
                           "certificateUserIds:", err=True)
                for step in e.on_premises:
                    click.echo(f"  {step}", err=True)
                raise
        obj.emit(result.to_json(), bind_text(result.to_json()))

    command.__doc__ = (
        f"{verb} a certificate's certificateUserIds values "
        f"{'to' if action == 'bind' else 'from'} an Entra user through Microsoft Graph."
        "\n\n"
        + ("Reads the user's authorizationInfo.certificateUserIds, adds the certificate's "
           "values (keeping every value the user has; no duplicates), checks Entra's limits "
           "(10 values of at most 1,024 characters) and that no other user holds a value, "
           "writes the list with PATCH, then reads it back. Binding again changes nothing."
           if action == "bind" else
           "Removes the certificate's values (after reset, a lost key or a replaced "
           "certificate) and keeps every other value; reads back. By default only the "
           "certificate-bound (high) values: the UPN value is shared with the user's next "
           "certificate.")
        + " A user synchronised from on-premises AD is refused with what to set there "
          "(altSecurityIdentities). Needs User.ReadWrite.All and, for a signed-in admin, "
          "the Privileged Authentication Administrator role. Example:\n\n\b\n"
          f"  pivtool entra {action} --upn alice@contoso.com --slot 9a")
    return click.command(action, short_help=f"{verb} a certificate's values "
                                            f"{'to' if action == 'bind' else 'from'} a "
                                            "user (Microsoft Graph).")(command)


entra.add_command(_bind_command("bind"))
entra.add_command(_bind_command("unbind"))


def bind_text(data: dict[str, Any]) -> str:
    """Render ``pivtool.entra-bind/1``."""
    user = data["user"]["upn"]
    lines = []
    if not data["changed"]:
        what = "already bound" if data["action"] == "bind" else "not bound"
        lines.append(f"{user}: the certificate's values are {what}; nothing to change.")
    else:
        verb = "would be" if data["dry_run"] else "were"
        for v in data["added"]:
            lines.append(f"  + {v}")
        for v in data["removed"]:
            lines.append(f"  - {v}")
        head = (f"{user}: {len(data['added'])} value(s) added, {len(data['removed'])} removed"
                if not data["dry_run"] else
                f"{user} (dry run): {len(data['added'])} value(s) {verb} added, "
                f"{len(data['removed'])} {verb} removed")
        lines.insert(0, head + ("; read back and verified." if data["verified"] else "."))
    if data["kept"]:
        lines.append(f"Kept {len(data['kept'])} existing value(s):")
        lines += [f"  = {v}" for v in data["kept"]]
    return "\n".join(lines)


@entra.command("policy", short_help="Check the tenant's CBA policy: enabled, binding "
                                    "rules, trusted CAs.")
@click.option("--slot", type=SLOT, metavar="SLOT",
              help="Judge for the certificate in this slot (its fields, policy OIDs, CA).")
@click.option("--cert", "cert_file", metavar="FILE",
              help="Judge for this certificate (PEM or DER).")
@click.option("--ca-bundle", metavar="FILE",
              help="PEM file of CA certificates that must be among the tenant's trusted CAs.")
@click.option("--values", "values_spec", default="high", show_default=True,
              metavar="high|all|LIST",
              help="The values you bind (as for 'entra bind'): each needs a username "
                   "binding rule to certificateUserIds.")
@graph_options
@json_option
@pass_ctx
def entra_policy(obj: CliContext, slot: Slot | None, cert_file: str | None,
                 ca_bundle: str | None, values_spec: str, tenant: str | None,
                 client_id: str | None, client_secret_file: str | None,
                 client_cert: str | None) -> None:
    """Read the tenant's X.509 certificate authentication method configuration and report,
    with fixes: CBA enabled and for whom; a username binding rule to certificateUserIds
    (and its affinity) for each field pivtool binds; the authentication binding (single-
    or multi-factor, policy OID and issuer rules) for the certificate; the certificate's
    CA (--cert/--slot) and --ca-bundle CAs among the tenant's trusted CAs, with a CRL URL.

    Without --slot or --cert no card is read. Needs Policy.Read.All and
    Organization.Read.All (Global Reader is enough for a signed-in admin). Exit status 1
    when an item fails."""
    from .exitcodes import Exit
    from .graph import tenant_policy

    cert = (_certificate(obj, slot, cert_file)[0]
            if slot is not None or cert_file is not None else None)
    bundle = None
    if ca_bundle:
        from ..certs.inspect import load_certificates
        from .files import read_input

        bundle = load_certificates(read_input(ca_bundle))
    report = tenant_policy(values_spec=values_spec, certificate=cert, bundle=bundle,
                           tenant=tenant, client_id=client_id,
                           client_secret_file=client_secret_file, client_cert=client_cert)
    data = report.to_json()
    obj.emit(data, policy_text(data))
    if not report.ok:
        click.get_current_context().exit(Exit.FAILED)


def policy_text(data: dict[str, Any]) -> str:
    """Render ``pivtool.entra-policy/1``."""
    from .render import item_lines

    lines = [f"Tenant {data['tenant']}: certificate-based authentication policy"]
    lines += item_lines(data["findings"])
    fails = sum(f["status"] == "fail" for f in data["findings"])
    warns = sum(f["status"] == "warn" for f in data["findings"])
    lines.append(("OK" if data["ok"] else "NOT READY") + f": {fails} failed, {warns} "
                 "warning(s).")
    return "\n".join(lines)
