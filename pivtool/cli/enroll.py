"""``pivtool enroll``: one command from a key to an Entra CBA smart-card-logon credential."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .common import StepPrinter
from .context import CliContext, pass_ctx
from .issuer import build_issuer, chosen_modes, issuer_options
from .options import (
    allow_last_try_option,
    json_option,
    new_key_options,
    secret_options,
)
from .stores import passphrase_file_option

if TYPE_CHECKING:
    from ..piv.constants import KeyType, PinPolicy, TouchPolicy


@click.command(short_help="Everything for Entra CBA in one go: PIN, PUK, key, "
                          "certificate.")
@click.option("--upn", required=True, metavar="USER@DOMAIN",
              help="The user's UPN (goes into the SAN otherName).")
@click.option("--email", "emails", multiple=True, metavar="ADDRESS",
              help="E-mail address for the SAN (rfc822Name; repeatable).")
@click.option("--subject", metavar="DN", help="Subject, RFC 4514 (default: CN=<UPN>).")
@new_key_options()
@issuer_options()
@click.option("--random-pin", is_flag=True, help="Set a random 8-digit PIN (see --secrets-out).")
@click.option("--random-puk", is_flag=True, help="Set a random 8-digit PUK (see --secrets-out).")
@click.option("--keep-puk", is_flag=True,
              help="On a card that cannot tell whether its PUK is the factory default "
                   "(no GET METADATA: YubiKey before 5.3, other PIV cards): leave the PUK, "
                   "it is not the default. Without it enroll replaces the PUK there.")
@click.option("--secrets-out", metavar="FILE",
              help="Write random PIN/PUK to FILE (created 0600; never printed).")
@click.option("--force", is_flag=True,
              help="Replace keys/certificates already in the slot (old certificates are "
                   "backed up first).")
@click.option("--backup-dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Where --force saves the old certificates (default: "
                   "./pivtool-backup-<serial>-<time>).")
@allow_last_try_option
@click.option("--escrow", "escrow_path", metavar="FILE",
              help="Write the PUK (and a management key that is not stored PIN-protected) "
                   "for this serial to the encrypted escrow FILE (created 0600). Passphrase: "
                   "$PIVTOOL_ESCROW_PASSPHRASE, --escrow-passphrase-file or a prompt.")
@passphrase_file_option
@secret_options("pin", "puk", "new_pin", "new_puk", "mgmt_key")
@json_option
@pass_ctx
def enroll(obj: CliContext, upn: str, emails: tuple[str, ...], subject: str | None,
           algorithm: KeyType, pin_policy: PinPolicy, touch_policy: TouchPolicy, macos: bool,
           policies: tuple[str, ...], ca_dir: str | None, issuer_cmd: str | None,
           issuer_timeout: float, ca_bundle: str | None, csr_out: str | None, days: int,
           random_pin: bool, random_puk: bool, keep_puk: bool, secrets_out: str | None,
           force: bool,
           backup_dir: str | None, allow_non_ios: bool, allow_last_try: bool,
           escrow_path: str | None, escrow_passphrase_file: str | None) -> None:
    """Make the key ready for Microsoft Entra certificate-based authentication.

    \b
    Steps: read the card; refuse to overwrite a used slot (unless --force); set PIN/PUK
    (factory defaults are replaced); replace a default management key with a random one
    stored PIN-protected (ykman-compatible); generate the key on the card (9a, and 9d with
    --macos); CSR signed on the card with SAN UPN + EKU Smart Card Logon and Client Auth;
    issue (--ca, --issuer-cmd, or --csr-out for two steps); check and import the
    certificate; new CHUID; sign a challenge to prove it works.

    \b
    New PIN/PUK come from PIVTOOL_NEW_PIN / PIVTOOL_NEW_PUK, --new-pin-file/--new-puk-file,
    a prompt, or --random-pin/--random-puk with --secrets-out FILE.

    \b
    With --escrow FILE the PUK is also written to an encrypted escrow file, for
    'pivtool recover --escrow FILE' (a PUK enroll keeps is asked for and checked first)."""
    from ..core.errors import UsageError
    from ..workflows.enroll import Enroller
    from ..workflows.enroll_options import EnrollOptions, validate_options

    if chosen_modes(ca_dir, issuer_cmd, csr_out) != 1:
        raise UsageError("choose exactly one issuer: --ca DIR, --issuer-cmd CMD or "
                         "--csr-out FILE")
    opts = EnrollOptions(
        upn=upn, emails=list(emails), subject=subject, algorithm=algorithm,
        pin_policy=pin_policy, touch_policy=touch_policy,
        macos=macos, policies=list(policies), force=force, random_pin=random_pin,
        random_puk=random_puk, secrets_out=secrets_out, backup_dir=backup_dir,
        allow_non_ios=allow_non_ios, csr_out=csr_out, retry_force=allow_last_try,
        keep_puk=keep_puk)
    validate_options(opts)  # before the card is touched
    issuer = build_issuer(ca_dir, issuer_cmd, issuer_timeout, ca_bundle, days)

    escrow = None
    if escrow_path:  # --- escrow: passphrase and file checked before the card is touched ---
        from .stores import open_escrow

        escrow = open_escrow(obj, escrow_path, escrow_passphrase_file, create=True)
    show = StepPrinter(obj)
    with obj.session() as session, show.running():
        result = Enroller(session, obj.prompter(), opts, issuer, show, escrow=escrow).run()
    data = result.to_json()
    if obj.json:
        obj.emit(data)
        return
    if result.status == "pending-certificate":
        click.echo(f"CSR for {upn} written to {csr_out}. When the CA has issued it: "
                   "pivtool certs import 9a CERT")
        return
    if result.status == "already-enrolled":
        click.echo(f"{upn} is already enrolled on "
                   f"{'serial ' + str(result.serial) if result.serial else 'this card'}: "
                   "nothing changed (use --force to enroll again).")
        return
    lines = [f"Enrolled {upn} on {'serial ' + str(result.serial) if result.serial else 'card'}"
             " for Entra CBA."]
    lines.append("certificateUserIds (bind one high-affinity value to the user):")
    for cid in result.certificate_user_ids:
        lines.append(f"  [{cid['affinity']:>4}] {cid['value']}")
    if result.secrets_file:
        lines.append(f"Random PIN/PUK are in {result.secrets_file} (0600): hand them over "
                     "safely, then delete the file.")
    click.echo("\n".join(lines))
