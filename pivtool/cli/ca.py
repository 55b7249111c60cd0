"""``pivtool ca``: a file-based lab CA for Entra CBA test users (not for production)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from .context import CliContext, pass_ctx
from .options import json_option

if TYPE_CHECKING:
    from ..certs.ca import LabCA

#: Where the CA passphrase comes from (besides --passphrase-file and a prompt).
PASSPHRASE_ENV = "PIVTOOL_CA_PASSPHRASE"

KEY_TYPES = ("eccp256", "eccp384", "rsa2048", "rsa3072", "rsa4096")
REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
           "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise")

passphrase_file_option = click.option(
    "--passphrase-file", metavar="FILE",
    help=f"Read the CA key passphrase from FILE ('-' = stdin) instead of ${PASSPHRASE_ENV} "
         "or a prompt.")


def _passphrase(obj: CliContext, file: str | None, confirm: bool = False) -> bytes:
    from .secrets import SecretSpec, get_secret

    spec = SecretSpec("CA passphrase", PASSPHRASE_ENV, "--passphrase-file")
    value = get_secret(spec, file, prompt=obj.interactive, confirm=confirm)
    assert value is not None  # required=True: a missing passphrase raised UsageError
    return value



def _open(obj: CliContext, directory: str, passphrase_file: str | None) -> LabCA:
    from ..certs.ca import LabCA

    # Ask only for an encrypted key: an unencrypted lab CA never prompts (and a passphrase
    # in the environment meant for another CA does not break it).
    secret = _passphrase(obj, passphrase_file) if LabCA.is_encrypted(directory) else None
    return LabCA.open(directory, secret)


def _old_key_type(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--key-type`` (the old spelling of ``--algorithm``) still works, hidden from help."""
    if value:
        ctx.params["key_type"] = value


@click.group(short_help="A small lab CA issuing Entra CBA smart-card-logon certificates.")
def ca() -> None:
    """A small lab CA that issues Entra CBA smart-card-logon certificates.

    For labs, demos and tests: one self-signed root signing user certificates directly
    (UPN in the SAN, EKU Smart Card Logon + Client Authentication, one HTTP CRL
    distribution point). Upload ca.pem to Entra's certificate authorities and publish
    crl.der at the CRL URL.

    The root key passphrase comes from $PIVTOOL_CA_PASSPHRASE, --passphrase-file or a
    prompt — never from the command line."""


@ca.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--subject", required=True, metavar="DN",
              help="The CA's name, RFC 4514, e.g. 'CN=Contoso Lab CA,O=Contoso'.")
@click.option("--crl-url", metavar="URL",
              help="http:// URL written into every issued certificate as its one CRL "
                   "distribution point (Entra needs one per CA).")
@click.option("--aia-url", metavar="URL",
              help="http:// URL of ca.pem, written as AIA caIssuers.")
@click.option("-a", "--algorithm", "key_type", type=click.Choice(KEY_TYPES), default="eccp256",
              show_default=True, help="Root key algorithm.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), hidden=True, expose_value=False,
              callback=_old_key_type, help="Old name of --algorithm.")
@click.option("--days", type=click.IntRange(1, 36500), default=3650, show_default=True,
              help="Root certificate validity.")
@click.option("--passphrase", is_flag=True,
              help=f"Encrypt the root key with a passphrase (from ${PASSPHRASE_ENV}, "
                   "--passphrase-file or a prompt).")
@click.option("--allow-policy", "allow_policies", multiple=True, metavar="OID",
              help="A certificate policy OID this CA copies from CSRs into certificates "
                   "(repeatable). Others are dropped: by default none is issued, since Entra "
                   "can rate a policy OID as multi-factor.")
@click.option("--min-rsa-bits", type=click.Choice(["1024", "2048", "3072", "4096"]),
              default="2048", show_default=True,
              help="Smallest RSA key the CA issues for (1024 only for old cards that need it).")
@click.option("--require-attestation", "require_att", is_flag=True,
              help="Issue only for keys with a verified YubiKey attestation (enroll passes "
                   "it; 'ca issue --require-attestation ATTEST,F9').")
@click.option("--attestation-roots", metavar="FILE",
              help="Attestation roots to trust (PEM) instead of Yubico's published PIV "
                   "attestation roots (copied into DIRECTORY).")
@click.option("--min-pin-policy", type=click.Choice(["once", "always"]),
              help="With --require-attestation: the attested key's PIN policy must be at "
                   "least this (always > once > never).")
@click.option("--min-touch-policy", type=click.Choice(["cached", "always"]),
              help="With --require-attestation: the attested key's touch policy must be at "
                   "least this (always > cached > never).")
@passphrase_file_option
@json_option
@pass_ctx
def ca_init(obj: CliContext, directory: str, subject: str, crl_url: str | None,
            aia_url: str | None, key_type: str, days: int, passphrase: bool,
            allow_policies: tuple[str, ...], min_rsa_bits: str, require_att: bool,
            attestation_roots: str | None, min_pin_policy: str | None,
            min_touch_policy: str | None, passphrase_file: str | None) -> None:
    """Create a CA in DIRECTORY (ca.key mode 0600, ca.pem, ca.json, index.json)."""
    from ..certs.ca import LabCA
    from ..certs.inspect import summarize
    from ..core.errors import UsageError
    from .files import read_input

    if (attestation_roots or min_pin_policy or min_touch_policy) and not require_att:
        raise UsageError("--attestation-roots, --min-pin-policy and --min-touch-policy go "
                         "with --require-attestation")
    roots_pem = read_input(attestation_roots) if attestation_roots else None
    secret = _passphrase(obj, passphrase_file, confirm=True) if passphrase else None
    lab = LabCA.init(directory, subject, crl_url=crl_url, passphrase=secret,
                     key_type=key_type, days=days, aia_url=aia_url,
                     allowed_policies=list(allow_policies), min_rsa_bits=int(min_rsa_bits))
    if require_att:
        lab.require_attestation(roots_pem, min_pin_policy, min_touch_policy)
    summary = summarize(lab.certificate).to_json()
    cert_path = os.path.join(directory, "ca.pem")
    data = {"schema": "pivtool.ca-init/1", "directory": directory, "certificate": cert_path,
            "key_type": key_type,
            "encrypted": secret is not None, "crl_url": crl_url, "aia_url": aia_url,
            "allowed_policies": lab.allowed_policies,
            "attestation": lab.attestation_policy, "ca": summary}
    lines = [f"CA created in {directory}",
             f"  subject:  {summary['subject']}",
             f"  key:      {key_type}, " + ("passphrase-protected" if secret else
                                            "NOT encrypted (lab use only)"),
             f"  valid:    until {summary['not_after']}",
             f"  sha256:   {summary['sha256']}",
             f"Upload {cert_path} to Entra (Security > Certificate authorities)."]
    if lab.allowed_policies:
        lines.insert(-1, f"  policies: issues {', '.join(lab.allowed_policies)} when asked")
    if require_att:
        lines.insert(-1, "  issues:   only for keys with a verified attestation" + "".join(
            f", {what} policy at least {value}" for what, value in
            (("PIN", min_pin_policy), ("touch", min_touch_policy)) if value))
    if crl_url:
        lines.append(f"Publish the CRL from 'pivtool ca crl' at {crl_url}.")
    else:
        lines.append("No --crl-url: issued certificates carry no CRL distribution point.")
    obj.emit(data, "\n".join(lines))


@ca.command("issue")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("csr", metavar="CSR")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Where to write the certificate ('-' = stdout).")
@click.option("--days", type=click.IntRange(1, 36500), default=365, show_default=True,
              help="Validity (capped at the CA's own expiry).")
@click.option("--format", "fmt", type=click.Choice(["pem", "der"]), default="pem",
              show_default=True, help="Certificate encoding.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--require-attestation", "attestation", metavar="ATTEST,F9",
              help="Issue only if ATTEST (the key's attestation certificate) and F9 (the "
                   "card's f9 certificate, intermediates may follow) verify to the CA's "
                   "attestation roots (default: Yubico's) and attest the CSR's key, with the "
                   "CA's minimum PIN/touch policies.")
@passphrase_file_option
@json_option
@pass_ctx
def ca_issue(obj: CliContext, directory: str, csr: str, output: str, days: int, fmt: str,
             force: bool, attestation: str | None, passphrase_file: str | None) -> None:
    """Issue a certificate for the CSR file CSR ('-' = stdin; PEM or DER).

    The CSR must carry the user's UPN (or e-mail) in its subject alternative name; its
    signature is verified. The certificate gets the Entra CBA profile whatever the CSR
    asks for."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..certs.inspect import summarize
    from .files import read_input, write_output

    request = read_input(csr)
    evidence = None
    if attestation:
        from ..certs.attestation import load_certificates
        from ..core.errors import UsageError

        files = attestation.split(",")
        if len(files) != 2 or not all(files):
            raise UsageError("--require-attestation takes ATTEST,F9 (two files)")
        evidence = (load_certificates(files[0], "attestation certificate")[0],
                    load_certificates(files[1], "f9 certificate"))
    if output not in ("-", "") and os.path.exists(output) and not force:
        from ..core.errors import UsageError

        # Before the CA signs anything: a refused output must not leave an orphan in the index.
        raise UsageError(f"{output} exists; use --force to overwrite it")
    lab = _open(obj, directory, passphrase_file)
    cert = lab.issue(request, days=days, attestation=evidence,
                     require_attestation=evidence is not None)
    record = lab.get(cert.serial_number)
    dropped = lab.dropped_policies(request)
    encoded = cert.public_bytes(Encoding.PEM if fmt == "pem" else Encoding.DER)
    summary = summarize(cert).to_json()
    to_stdout = output in ("-", "")
    data = {"schema": "pivtool.ca-issue/1", "serial": summary["serial"],
            "output": None if to_stdout else output, "certificate": summary,
            "attestation": record.attestation, "dropped_policies": dropped,
            "certificate_pem": cert.public_bytes(Encoding.PEM).decode("ascii")}
    if to_stdout and obj.json:
        # One JSON document on stdout: the certificate travels inside it.
        obj.emit(data)
        return
    write_output(None if to_stdout else output, encoded, overwrite=force)
    who = ", ".join(dict.fromkeys(summary["upns"] + summary["emails"]))
    text = (f"Issued serial {summary['serial']} for {who}, valid until {summary['not_after']}"
            + ("" if to_stdout else f": {output}"))
    if dropped:
        text += (f"\nDropped requested certificate policies (not on this CA's allow-list, "
                 f"'ca init --allow-policy'): {', '.join(dropped)}")
    if record.attestation:
        a = record.attestation
        text += (f"\nKey attested: YubiKey serial {a['yubikey_serial']}, PIN {a['pin_policy']}, "
                 f"touch {a['touch_policy']}; verified to {a['verified_to']}")
    if to_stdout:
        click.echo(text, err=True)  # stdout carries the certificate
    else:
        obj.emit(data, text)


@ca.command("revoke")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("serial")
@click.option("--reason", type=click.Choice(REASONS, case_sensitive=False),
              default="unspecified", show_default=True, help="CRL reason code.")
@passphrase_file_option
@json_option
@pass_ctx
def ca_revoke(obj: CliContext, directory: str, serial: str, reason: str,
              passphrase_file: str | None) -> None:
    """Revoke the certificate with SERIAL (hex, as 'pivtool ca list' shows it). It is
    listed on the next CRL: run 'pivtool ca crl' and publish it."""
    lab = _open(obj, directory, passphrase_file)
    record = lab.revoke(serial, reason)
    obj.emit({"schema": "pivtool.ca-revoke/1", **record.to_json()},
             f"Revoked serial {record.serial} ({record.reason}). Publish a new CRL: "
             f"pivtool ca crl {directory} -o FILE")


@ca.command("crl")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Where to write the CRL ('-' = stdout). crl.pem and crl.der are also "
                   "kept in DIRECTORY.")
@click.option("--days", type=click.IntRange(1, 3650), default=7, show_default=True,
              help="Days until the CRL's next update.")
@click.option("--format", "fmt", type=click.Choice(["pem", "der"]), default="der",
              show_default=True, help="CRL encoding (publish DER over HTTP).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@passphrase_file_option
@json_option
@pass_ctx
def ca_crl(obj: CliContext, directory: str, output: str, days: int, fmt: str, force: bool,
           passphrase_file: str | None) -> None:
    """Sign a new CRL listing every revoked certificate.

    With --json the CRL is in the JSON document (crl_pem) instead of raw on standard
    output; crl.pem and crl.der in DIRECTORY are written either way."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..certs.inspect import iso_utc, serial_hex
    from .files import write_output

    to_stdout = output in ("-", "")
    if not to_stdout and os.path.exists(output) and not force:
        from ..core.errors import UsageError

        raise UsageError(f"{output} exists; use --force to overwrite it")
    lab = _open(obj, directory, passphrase_file)
    crl = lab.crl(days=days)
    if not (to_stdout and obj.json):  # under --json, stdout carries one JSON document
        write_output(None if to_stdout else output,
                     crl.public_bytes(Encoding.PEM if fmt == "pem" else Encoding.DER),
                     overwrite=force)
    revoked = [serial_hex(r.serial_number) for r in crl]
    next_update = crl.next_update_utc
    data: dict[str, Any] = {
        "schema": "pivtool.ca-crl/1", "output": None if to_stdout else output, "format": fmt,
        "revoked": revoked,
        "next_update": iso_utc(next_update) if next_update else None,
        "crl_url": lab.crl_url,
        "crl_pem": crl.public_bytes(Encoding.PEM).decode("ascii")}
    text = (f"CRL with {len(revoked)} revoked certificate(s), next update "
            f"{data['next_update']}" + ("" if to_stdout else f": {output}"))
    if lab.crl_url:
        text += f"\nPublish it at {lab.crl_url}"
    if to_stdout and not obj.json:
        click.echo(text, err=True)  # stdout carries the CRL
    else:
        obj.emit(data, text)


@ca.command("list")
@click.argument("directory", type=click.Path(file_okay=False))
@passphrase_file_option
@json_option
@pass_ctx
def ca_list(obj: CliContext, directory: str, passphrase_file: str | None) -> None:
    """List the certificates the CA issued, with their status."""
    lab = _open(obj, directory, passphrase_file)
    records = lab.issued()
    rows = [r.to_json() for r in records]
    lines = [f"{'SERIAL':32}  {'STATUS':7}  {'NOT AFTER':20}  SUBJECT / UPN"]
    for r in records:
        who = ", ".join(dict.fromkeys(r.upns + r.emails)) or r.subject
        lines.append(f"{r.serial:32}  {r.status:7}  {r.not_after:20}  {who}")
    if not records:
        lines = ["No certificates issued yet."]
    for problem in lab.index_problems:
        click.echo(f"Warning: {problem}", err=True)
    obj.emit({"schema": "pivtool.ca-list/1", "directory": directory,
              "ca": lab.certificate.subject.rfc4514_string(), "issued": rows},
             "\n".join(lines))
