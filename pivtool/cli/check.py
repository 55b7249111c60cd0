"""``pivtool check``: the Entra CBA readiness checklist, and ``pivtool diagnose``: the
diagnostics bundle for a helpdesk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .context import CliContext, pass_ctx
from .graph import graph_credential_options
from .options import json_option, secret_options

if TYPE_CHECKING:
    from cryptography import x509


#: ``check`` without ``--platform``: what a plain ``pivtool enroll`` makes ready. macOS
#: pairing needs more (``enroll --macos``), so it is checked only when asked for — a
#: Windows/iOS user's key must not fail for lacking a macOS-only 9d key.
DEFAULT_PLATFORMS = ("ios", "windows")


@click.command(short_help="Is the key ready for Entra CBA? PASS/WARN/FAIL per item.")
@click.option("--upn", metavar="USER@DOMAIN",
              help="The user's UPN: the 9a certificate's SAN UPN must equal it.")
@click.option("--ca-bundle", metavar="FILE",
              help="PEM file of the CA certificates uploaded to Entra: the 9a certificate "
                   "must chain to them.")
@click.option("--crl", "crl_file", metavar="FILE",
              help="The issuing CA's CRL (PEM or DER; a lab CA keeps it in DIR/crl.pem): "
                   "a revoked 9a certificate fails. Without it revocation is SKIPped.")
@click.option("--platform", "platforms", multiple=True,
              type=click.Choice(["ios", "macos", "windows", "all"]),
              help="Check for this platform (repeatable). Default: ios and windows, what "
                   "'pivtool enroll' prepares. macOS pairing needs 'enroll --macos' (9d, a "
                   "digits-only PIN): check such keys with --platform all.")
@click.option("--tenant", "tenant", metavar="TENANT", is_flag=False, flag_value="",
              default=None,
              help="Also check the tenant's CBA policy through Microsoft Graph (as 'pivtool "
                   "entra policy' does, for the 9a certificate); TENANT defaults to "
                   "$PIVTOOL_TENANT.")
@graph_credential_options
@secret_options("pin")
@json_option
@pass_ctx
def check(obj: CliContext, upn: str | None, ca_bundle: str | None, crl_file: str | None,
          platforms: tuple[str, ...], tenant: str | None, client_id: str | None,
          client_secret_file: str | None, client_cert: str | None) -> None:
    """Check that the card is ready for Microsoft Entra certificate-based authentication.

    One line per item — PASS, WARN or FAIL, with the fix for anything not passing, or
    SKIP for what could not be checked without --upn, --ca-bundle or --crl: PIV
    enabled on the key's interfaces (USB; NFC for iOS), certificate and matching key in
    slot 9a, the certificate's Entra profile (EKU, UPN, key usage, validity, one HTTP CRL
    distribution point, chain to --ca-bundle, an algorithm iOS can use), PIN/PUK/management
    key changed from the defaults, PIN tries left; macOS: key and certificate in 9d and a
    numeric PIN; Windows: a CHUID. Without --platform: iOS and Windows.

    Spends no PIN try and sends no secret to the card. The PIN is not needed; if it is
    given ($PIVTOOL_PIN or --pin-file) it is only checked locally to be digits only, for
    macOS. Exit status 1 when any item fails. Examples:

    \b
      pivtool check --upn alice@contoso.com --ca-bundle contoso-ca.pem
      pivtool check --upn alice@contoso.com --platform all   (enrolled with --macos)"""
    from ..workflows.check import PLATFORMS, check_card
    from .exitcodes import Exit

    if not platforms:
        platforms = DEFAULT_PLATFORMS
    chosen = PLATFORMS if "all" in platforms else tuple(dict.fromkeys(platforms))
    bundle = _load_bundle(ca_bundle) if ca_bundle else None
    crl = _load_crl(crl_file) if crl_file else None
    p = obj.prompter()
    pin_numeric: bool | None = None
    if "macos" in chosen and p.given("pin"):
        # Judged here and reduced to one bit: the PIN itself goes no further.
        pin_numeric = p.secret("pin").isdigit()
    with obj.session() as s:
        report = check_card(s, expected_upn=upn, ca_bundle=bundle, platforms=chosen,
                            pin_numeric=pin_numeric, crl=crl)
        cert_9a = _cert_9a(s) if tenant is not None else None
    if tenant is not None:
        report.items += _tenant_items(obj, cert_9a, bundle, tenant or None, client_id,
                                      client_secret_file, client_cert)
    data = report.to_json()
    obj.emit(data, check_text(data))
    if not report.ok:
        click.get_current_context().exit(Exit.FAILED)


def _cert_9a(session: Any) -> x509.Certificate | None:
    from ..core.errors import NotFoundError
    from ..piv.constants import Slot

    try:
        cert: x509.Certificate = session.get_certificate(Slot.AUTHENTICATION)
    except NotFoundError:
        return None
    return cert


def _tenant_items(obj: CliContext, cert: x509.Certificate | None,
                  bundle: list[x509.Certificate] | None, tenant: str | None,
                  client_id: str | None, client_secret_file: str | None,
                  client_cert: str | None) -> list[Any]:
    """The tenant policy findings as checklist items (``tenant.*``)."""
    from ..workflows.check import CheckItem
    from .graph import tenant_policy

    report = tenant_policy(values_spec="high", certificate=cert, bundle=bundle,
                           tenant=tenant, client_id=client_id,
                           client_secret_file=client_secret_file, client_cert=client_cert)
    return [CheckItem(f.id, f.status, f.message, f.fix) for f in report.findings]


def _load_bundle(path: str) -> list[x509.Certificate]:
    from ..certs.inspect import load_certificates
    from .files import read_input

    return load_certificates(read_input(path))


def _load_crl(path: str) -> x509.CertificateRevocationList:
    from cryptography import x509

    from ..core.errors import UsageError
    from .files import read_input

    raw = read_input(path)
    try:
        if b"-----BEGIN" in raw:
            return x509.load_pem_x509_crl(raw)
        return x509.load_der_x509_crl(raw)
    except ValueError:
        raise UsageError(f"{path} is not a CRL (PEM or DER)") from None


def check_text(data: dict[str, Any]) -> str:
    """Render ``pivtool.check/1`` JSON: a header, one line per item, fixes indented."""
    from .render import item_lines

    card = data["card"]
    desc = f"YubiKey {card['version']}" if card["card"] == "yubikey" else "PIV card"
    if card.get("serial") is not None:
        desc += f", serial {card['serial']}"
    lines = [f"{desc} ({card['reader']}); platforms: {', '.join(data['platforms']) or 'none'}"]
    lines += item_lines(data["items"])
    n = data["summary"]
    verdict = "READY" if data["ok"] else "NOT READY"
    skipped = f", {n['skip']} not checked (SKIP)" if n.get("skip") else ""
    lines.append(f"{verdict}: {n['fail']} failed, {n['warn']} warning(s), {n['pass']} "
                 f"passed{skipped}.")
    return "\n".join(lines)


@click.command(short_help="Write a diagnostics bundle (JSON) for the helpdesk.")
@click.option("-o", "--output", metavar="FILE",
              help="Write the bundle to FILE (created with mode 0600) instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing FILE.")
@json_option
@pass_ctx
def diagnose(obj: CliContext, output: str | None, force: bool) -> None:
    """Collect a diagnostics bundle (JSON) for whoever helps you debug a sign-in problem.

    It holds pivtool/Python/OS and library versions, the reader list, the key's device
    information (serial, firmware, form factor, enabled applications per interface), PIN
    and PUK tries, management key type and whether it is the default, slot metadata,
    certificate summaries, the readiness checklist and the 9a certificate's
    certificateUserIds. It never holds a PIN, PUK, management key or private key — it
    reads none — but it names the certificate holder, so the file is created readable by
    you only. Works without a card too (the card section then says why it is missing).

    The bundle is JSON (pivtool.diagnose/1) with or without --json; with -o FILE and
    --json, standard output gets pivtool.diagnose-file/1 (the file name, the card error)."""
    import json

    from ..workflows.diagnose import collect
    from .files import write_secret_file

    def list_readers() -> list[str]:
        from .. import pcsc  # pyscard loads only now (no pyscard: the bundle says so)

        return pcsc.list_readers()

    selection = {"reader": obj.reader, "serial": obj.serial, "virtual_card": obj.sim is not None}
    bundle = collect(obj.session, list_readers=list_readers, selection=selection)
    text = json.dumps(bundle.to_json(), indent=2) + "\n"
    if output in (None, "-"):
        click.echo(text, nl=False)
        return
    assert output is not None
    write_secret_file(output, text, overwrite=force)
    card = bundle.card_error or "card read"
    msg = (f"Diagnostics written to {output} (mode 0600; {card}). It names the certificate "
           "holder: share it only with your helpdesk.")
    obj.emit({"schema": "pivtool.diagnose-file/1", "output": output,
              "card_error": bundle.card_error}, msg)
