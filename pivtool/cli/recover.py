"""``pivtool recover``: get a PIN-locked key working again, least destructive path first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..core.errors import PivToolError, StepFailedError
from .common import StepPrinter
from .context import CliContext, pass_ctx
from .graph import graph_options
from .issuer import build_issuer, chosen_modes, issuer_options
from .options import allow_last_try_option, json_option, secret_options, yes_option
from .stores import passphrase_file_option

if TYPE_CHECKING:
    from ..workflows.recover import RecoverResult


@click.command()
@click.option("--escrow", "escrow_path", metavar="FILE",
              help="Take the PUK from the encrypted escrow FILE (looked up by the card's "
                   "serial; written by 'enroll --escrow'). A re-enrollment after a reset "
                   "writes the new PUK there too.")
@passphrase_file_option
@click.option("--puk-unknown", is_flag=True,
              help="Nobody knows the PUK: when the PIN is blocked, go straight to the reset "
                   "path instead of asking for the PUK.")
@allow_last_try_option
@click.option("--backup-dir", metavar="DIR",
              help="Where a reset saves the certificates first (default: "
                   "./pivtool-backup-<serial>-<time>).")
@click.option("--reenroll", is_flag=True,
              help="After a reset, enroll again with the UPN of the old 9a certificate "
                   "(needs --ca, --issuer-cmd or --csr-out; new PIN and PUK as for enroll).")
@click.option("--upn", metavar="USER@DOMAIN",
              help="UPN for --reenroll when the old certificate has none.")
@issuer_options("--reenroll: ")
@click.option("--graph-bind", is_flag=True,
              help="--reenroll: in Entra, remove the old certificate's certificateUserIds "
                   "(high-affinity) from the user and add the new one's, in one PATCH "
                   "through Microsoft Graph (see 'pivtool entra bind').")
@graph_options
@secret_options("pin", "puk", "new_pin", "new_puk", "mgmt_key")
@yes_option
@json_option
@pass_ctx
def recover(obj: CliContext, escrow_path: str | None, escrow_passphrase_file: str | None,
            puk_unknown: bool, allow_last_try: bool, backup_dir: str | None, reenroll: bool,
            upn: str | None, ca_dir: str | None, issuer_cmd: str | None,
            issuer_timeout: float, ca_bundle: str | None, csr_out: str | None,
            days: int, graph_bind: bool, tenant: str | None, client_id: str | None,
            client_secret_file: str | None, client_cert: str | None) -> None:
    """Recover a PIN-locked key by the least destructive path. Each step is explained
    before it is taken.

    \b
    PIN not blocked   Nothing is locked: shows the tries left. Changes the PIN when a
                      new PIN is given (PIVTOOL_PIN + PIVTOOL_NEW_PIN, files, or the
                      prompt on a terminal).
    PIN blocked       Unblocks with the PUK (PIVTOOL_PUK, --puk-file, prompt, or
                      --escrow FILE) and sets the new PIN. Keys, certificates and a
                      PIN-protected management key are kept.
    PIN + PUK blocked Only a PIV reset remains (also with --puk-unknown). Lists what it
                      destroys, saves every certificate to --backup-dir, and after
                      confirmation (--yes) blocks what is not blocked yet and resets.
                      With --reenroll and --ca/--issuer-cmd/--csr-out it enrolls the
                      same UPN again; otherwise it prints the enroll command.
    Generic PIV card  No reset command: explains what the card's issuer must do
                      (exit 1, nothing changed).

    \b
    The last PUK try is never spent without asking: on a terminal recover asks; in
    scripts it needs --allow-last-try, --yes is not enough (exit 4 otherwise, the
    counter is untouched).

    \b
    Examples:
      pivtool recover                                   (asks for what it needs)
      PIVTOOL_PUK=... PIVTOOL_NEW_PIN=... pivtool recover
      pivtool recover --escrow puk-escrow.bin           (PUK from the escrow)
      pivtool recover --puk-unknown --yes --reenroll --ca lab-ca
      pivtool recover --puk-unknown --yes --reenroll --ca lab-ca --graph-bind"""
    from ..core.errors import UsageError
    from ..workflows.recover import Recoverer, RecoverOptions
    from .exitcodes import Exit

    if escrow_path and puk_unknown:
        raise UsageError("--escrow and --puk-unknown contradict each other")
    modes = chosen_modes(ca_dir, issuer_cmd, csr_out)
    if modes and not reenroll:
        raise UsageError("--ca, --issuer-cmd and --csr-out are for --reenroll")
    if reenroll and modes != 1:
        raise UsageError("--reenroll needs exactly one issuer: --ca DIR, --issuer-cmd CMD or "
                         "--csr-out FILE")
    client = _graph_preflight(graph_bind, reenroll, csr_out, tenant, client_id,
                              client_secret_file, client_cert)
    issuer = build_issuer(ca_dir, issuer_cmd, issuer_timeout, ca_bundle, days)
    escrow = None
    if escrow_path:
        from .stores import open_escrow

        # recover reads the PUK from the escrow, so the file must exist already.
        escrow = open_escrow(obj, escrow_path, escrow_passphrase_file, create=False)
    p = obj.prompter()
    opts = RecoverOptions(
        puk_unknown=puk_unknown, allow_last_try=allow_last_try, interactive=obj.interactive,
        # A new PIN alone (no current PIN, no terminal) is for unblocking: when the PIN is
        # not blocked - e.g. a re-run after the unblock went through and the card was
        # pulled - there is nothing to do rather than a PIN to ask for.
        pin_change="yes" if p.given("new_pin") and (p.given("pin") or obj.interactive)
        else ("ask" if obj.interactive else "no"),
        backup_dir=backup_dir, reenroll=reenroll, upn=upn, csr_out=csr_out)

    show = StepPrinter(obj)
    with obj.session() as session, show.running():
        result = Recoverer(session, p, opts, issuer, escrow, show).run()
    data = result.to_json()
    data["graph"] = None
    failure: Exception | None = None
    if client is not None:
        try:
            bound = _rebind(client, result)
            data["graph"] = bound.to_json() if bound is not None else None
        except PivToolError as e:
            # The key is re-enrolled either way: show what happened on it, then the error.
            failure = e
    text = _summary(result) if not obj.json else None
    if text is not None and data["graph"] is not None:
        g = data["graph"]
        text += (f"\nEntra: {len(g['removed'])} old value(s) removed, {len(g['added'])} new "
                 f"added on {g['user']['upn']} (read back and verified).")
    obj.emit(data, text)
    if failure is not None:
        raise StepFailedError("Entra binding (the key was re-enrolled; bind it later with "
                              "'pivtool entra bind' and 'pivtool entra unbind --cert OLD')",
                              failure)
    if result.status in ("declined", "issuer-needed"):
        click.get_current_context().exit(Exit.FAILED)


def _graph_preflight(graph_bind: bool, reenroll: bool, csr_out: str | None,
                     tenant: str | None, client_id: str | None,
                     client_secret_file: str | None, client_cert: str | None) -> Any:
    """``--graph-bind``: checked and signed in before anything touches the card."""
    from ..core.errors import UsageError
    from ..graph.bind import BIND_PERMISSIONS
    from .graph import flag_client

    if graph_bind and (not reenroll or csr_out):
        raise UsageError("--graph-bind binds the certificate of --reenroll with --ca or "
                         "--issuer-cmd (with --csr-out there is no certificate yet: use "
                         "'pivtool entra bind' once it is imported)")
    return flag_client("--graph-bind", graph_bind, tenant=tenant, client_id=client_id,
                       client_secret_file=client_secret_file, client_cert=client_cert,
                       permissions=BIND_PERMISSIONS)


def _rebind(client: Any, result: RecoverResult) -> Any:
    """Unbind the old 9a certificate's high-affinity values and bind the new one's."""
    from pathlib import Path

    from cryptography import x509

    from ..certs.entra import HIGH, certificate_user_ids, graph_selection
    from ..graph.bind import apply

    enrolled = result.reenroll
    if enrolled is None or enrolled.certificate is None or result.upn is None:
        return None
    old: list[str] = []
    for path in result.backup:
        if Path(path).name.startswith("slot-9a"):
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
            old += [i.value for i in certificate_user_ids(cert) if i.affinity == HIGH]
    new = [i for i in graph_selection(certificate_user_ids(enrolled.certificate))[0]
           if i.affinity == HIGH]
    with client:
        return apply(client, result.upn, add=new, remove=old, action="rebind")


def _summary(result: RecoverResult) -> str:
    after = result.after
    pin = after.pin.tries_left if after is not None else None
    if result.status == "declined":
        return "Reset declined; nothing was changed."
    if result.path == "issuer-needed":
        return "Only the card's issuer can unblock or re-issue this card; nothing was changed."
    # The count after a right PIN is the card's total, which a card without GET METADATA
    # does not say: then no count is shown (never "None").
    left = "" if pin is None else f"{pin} {'try' if pin == 1 else 'tries'} left"
    if result.path == "pin-ok":
        tries = f" ({left})" if left else ""
        return f"The PIN is not blocked{tries}; nothing to recover."
    if result.path == "pin-changed":
        return "PIN changed."
    if result.path == "unblocked":
        source = " from the escrow" if result.puk_source == "escrow" else ""
        tries = f" ({'PIN ' + left})" if left else ""
        return f"PIN unblocked with the PUK{source} and set; keys and certificates " \
               f"kept{tries}."
    lines = ["PIV application reset."]
    if result.backup_dir:
        lines.append(f"Old certificates saved in {result.backup_dir} (revoke them at the CA).")
    if result.reenroll is not None:
        if result.status == "pending-certificate":
            lines.append(f"CSR for {result.upn} written to {result.reenroll.csr_file}.")
        else:
            lines.append(f"{result.upn} enrolled again; bind the new certificate in Entra "
                         "(certificateUserIds):")
            for cid in result.reenroll.certificate_user_ids:
                lines.append(f"  [{cid['affinity']:>4}] {cid['value']}")
    elif result.reenroll_command:
        lines.append(f"To enroll again: {result.reenroll_command}")
    return "\n".join(lines)
