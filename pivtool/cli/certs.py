"""``pivtool certs``: CSRs and self-signed certificates signed on the card; import, export
and delete slot certificates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..piv.constants import Slot
from .common import backup_target, check_output, deliver, install_text, notifier, pfx_password
from .context import CliContext, pass_ctx
from .options import (
    SLOT,
    allow_last_try_option,
    force_option,
    format_option,
    json_option,
    output_option,
    secret_options,
    slot_change_options,
    yes_option,
)

F = TypeVar("F", bound=Callable[..., Any])


def request_options(f: F) -> F:
    """The certificate content options shared by ``request`` and ``selfsign``."""
    options = [
        click.option("--subject", metavar="DN",
                     help="Subject, RFC 4514 (CN=Alice Smith,O=Contoso,C=US; the last "
                          "attribute is the most significant). Default: CN=<first UPN>."),
        click.option("--upn", "upns", multiple=True, metavar="USER@DOMAIN",
                     help="User principal name for the SAN (otherName "
                          "1.3.6.1.4.1.311.20.2.3). Repeatable."),
        click.option("--email", "emails", multiple=True, metavar="ADDRESS",
                     help="E-mail address for the SAN (rfc822Name). Repeatable."),
        click.option("--eku", "ekus", multiple=True, metavar="NAME|OID",
                     help="Extended key usage: smartcard-logon, client-auth, server-auth, "
                          "email-protection, code-signing, any, or a dotted OID. Repeatable. "
                          "Default: smartcard-logon and client-auth (Entra CBA / Windows "
                          "logon)."),
        click.option("--policy", "policies", multiple=True, metavar="OID",
                     help="Certificate policy OID (e.g. one Entra authentication strength "
                          "binds to). Repeatable."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def public_key_option(f: F) -> F:
    """``--public-key FILE`` for cards that cannot report a slot's key."""
    return click.option(
        "--public-key", "public_key_file", metavar="FILE",
        help="The slot's public key (PEM or DER, e.g. from 'keys generate -o'), for cards "
             "that cannot report their keys (generic PIV cards, YubiKeys before 5.3). "
             "Checked with a test signature on the card first.")(f)


def _public_key(path: str | None) -> Any:
    """The public key in *path* (read before the card is touched), or ``None``."""
    if path is None:
        return None
    from ..workflows.keys import load_public_key_file
    from .files import read_input

    return load_public_key_file(read_input(path))


def _request(subject: str | None, upns: tuple[str, ...], emails: tuple[str, ...],
             ekus: tuple[str, ...], policies: tuple[str, ...]) -> Any:
    """Parse the content options into a CertRequest (bad input: exit 2, card untouched)."""
    from ..certs.profile import CertRequest

    return CertRequest.create(subject=subject, upns=upns, emails=emails,
                              ekus=list(ekus) if ekus else None, policies=policies)


@click.group(short_help="Request, self-sign, import, export and delete certificates.")
def certs() -> None:
    """Request, self-sign, import, export and delete the certificates in PIV slots."""


@certs.command("request")
@click.argument("slot", type=SLOT)
@request_options
@output_option("CSR (PEM)")
@public_key_option
@force_option("Overwrite FILE if it exists.")
@allow_last_try_option
@secret_options("pin")
@json_option
@pass_ctx
def certs_request(obj: CliContext, slot: Slot, subject: str | None, upns: tuple[str, ...],
                  emails: tuple[str, ...], ekus: tuple[str, ...], policies: tuple[str, ...],
                  output: str | None, public_key_file: str | None, force: bool,
                  allow_last_try: bool) -> None:
    """Create a CSR for SLOT's key, signed on the card.

    A PKCS#10 request for your CA. It asks for the SAN (UPN and/or e-mail), key usage
    digitalSignature (plus keyEncipherment for RSA), the EKUs and policies given. The PIN is
    needed when the key's PIN policy asks for it (checked first; the last try is never spent
    without --allow-last-try). Example:

    \b
      pivtool certs request 9a --subject "CN=Alice Smith,O=Contoso" \\
          --upn alice@contoso.com -o alice.csr"""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..workflows.certs import request_csr

    request = _request(subject, upns, emails, ekus, policies)
    check_output(output, force)
    public_key = _public_key(public_key_file)
    with obj.session() as s:
        r = request_csr(s, obj.prompter(), slot, request, allow_last_try, notifier(),
                        public_key)
    data = r.to_json()
    where = f" written to {output}" if output not in (None, "-") else ""
    deliver(obj, output, r.csr.public_bytes(Encoding.PEM), data,
            f"Slot {slot.label}: CSR for {data['subject']}{where}.", force)


@certs.command("selfsign")
@click.argument("slot", type=SLOT)
@request_options
@click.option("--days", type=click.IntRange(1, 36500), default=365, show_default=True,
              help="Validity in days.")
@output_option("certificate (PEM) as well")
@public_key_option
@click.option("--compress", is_flag=True, help="Store the certificate compressed.")
@force_option("Replace a certificate already in the slot (saved first); overwrite FILE.")
@slot_change_options()
@json_option
@pass_ctx
def certs_selfsign(obj: CliContext, slot: Slot, subject: str | None, upns: tuple[str, ...],
                   emails: tuple[str, ...], ekus: tuple[str, ...], policies: tuple[str, ...],
                   days: int, output: str | None, public_key_file: str | None,
                   compress: bool, force: bool, backup_dir: str | None, keep_chuid: bool,
                   allow_last_try: bool) -> None:
    """Self-sign a certificate for SLOT's key and store it in SLOT.

    Signed on the card. For labs and for tools that need some certificate in the slot; Entra
    CBA needs one issued by a CA it trusts (use 'certs request'). Takes the same content
    options as 'certs request'. Needs the PIN (per the key's policy) and the management
    key."""
    from ..workflows.certs import self_sign

    request = _request(subject, upns, emails, ekus, policies)
    if output not in (None, "-"):
        check_output(output, force)
    public_key = _public_key(public_key_file)
    with obj.session() as s:
        r = self_sign(s, obj.prompter(), slot, request, days, compress, force,
                      Path(backup_dir) if backup_dir else None, keep_chuid, allow_last_try,
                      notifier(), public_key)
    data = r.to_json()
    text = f"Self-signed certificate for slot {slot.label}: " + install_text(data["install"])
    if output is None:
        obj.emit(data, text)
    else:
        deliver(obj, output, data["pem"].encode("ascii"), data, text, force)


@certs.command("import")
@click.argument("slot", type=SLOT)
@click.argument("file", metavar="FILE")
@click.option("--compress", is_flag=True,
              help="Store the certificate compressed (lets large RSA certificates fit).")
@force_option("Replace a certificate already in the slot (saved next to FILE first); import "
              "even when the card cannot report its key, so the match was not checked.")
@slot_change_options("next to FILE; the current directory when FILE is -", pfx_password=True)
@json_option
@pass_ctx
def certs_import(obj: CliContext, slot: Slot, file: str, compress: bool, force: bool,
                 backup_dir: str | None, keep_chuid: bool, allow_last_try: bool) -> None:
    """Store the certificate in FILE in SLOT.

    FILE is PEM (from a bundle, the certificate of the slot's key is picked), DER or
    PKCS#12 (only its certificate is used; password from $PIVTOOL_PFX_PASSWORD,
    --password-file or a prompt).

    Refused: a certificate for another key; replacing a certificate without --force (the
    old one is then saved next to FILE first); an object too big for the card. After the
    change the CHUID GUID is renewed so Windows forgets the old certificate. Needs the
    management key. Example:

    \b
      pivtool certs import 9a alice.crt"""
    from ..workflows.certs import import_certificate, load_certificate_file
    from .files import read_input

    candidates, _fmt = load_certificate_file(read_input(file), pfx_password(obj))
    backup = backup_target(slot, file, backup_dir)
    with obj.session() as s:
        r = import_certificate(s, obj.prompter(), slot, candidates, compress, force, backup,
                               keep_chuid, allow_last_try,
                               backup_dir=Path(backup_dir) if backup_dir else None)
    obj.emit(r.to_json(), f"Slot {slot.label}: " + install_text(r.to_json()))


@certs.command("export")
@click.argument("slot", type=SLOT)
@format_option
@output_option("certificate")
@force_option("Overwrite FILE if it exists.")
@json_option
@pass_ctx
def certs_export(obj: CliContext, slot: Slot, fmt: str, output: str | None,
                 force: bool) -> None:
    """Export the certificate in SLOT (PEM or DER). Needs no PIN.

    This is the certificate to copy to a phone's keychain or to register with Entra
    (certificateUserIds). f9 gives the card's attestation certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..workflows.certs import export_certificate

    check_output(output, force)
    with obj.session() as s:
        r = export_certificate(s, slot)
    data = r.to_json()
    enc = Encoding.PEM if fmt == "pem" else Encoding.DER
    where = f" to {output}" if output not in (None, "-") else ""
    deliver(obj, output, r.certificate.public_bytes(enc), {**data, "format": fmt},
            f"Certificate of slot {slot.label} ({data['certificate']['subject']}) "
            f"written{where}.", force)


@certs.command("delete")
@click.argument("slot", type=SLOT)
@slot_change_options()
@yes_option
@json_option
@pass_ctx
def certs_delete(obj: CliContext, slot: Slot, backup_dir: str | None, keep_chuid: bool,
                 allow_last_try: bool) -> None:
    """Delete the certificate in SLOT (the key stays). The certificate is saved to a file
    first and the CHUID GUID renewed. Asks for confirmation (--yes for scripts). Needs the
    management key."""
    from ..workflows.certs import delete_certificate, plan_cert_delete

    p = obj.prompter()
    with obj.session() as s:
        cert = plan_cert_delete(s, slot)
        subject = cert.subject.rfc4514_string() if cert is not None else "unreadable"
        if not p.confirm(f"Delete the certificate ({subject}) in slot {slot.label}?"):
            raise click.Abort()
        r = delete_certificate(s, p, slot, cert, Path(backup_dir) if backup_dir else None,
                               keep_chuid, allow_last_try)
    text = f"Deleted the certificate in slot {slot.label}."
    if r.backup:
        text += f" It was saved to {r.backup}."
    obj.emit(r.to_json(), text)
