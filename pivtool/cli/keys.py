"""``pivtool keys``: generate, import, inspect, export, attest, move and delete slot keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..piv.constants import KeyType, PinPolicy, Slot, TouchPolicy
from .common import backup_target, check_output, deliver, install_text, pfx_password
from .context import CliContext, pass_ctx
from .exitcodes import Exit
from .options import (
    KEY_TYPE,
    PIN_POLICY,
    SLOT,
    TOUCH_POLICY,
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


def _public_bytes(key: Any, fmt: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    enc = Encoding.PEM if fmt == "pem" else Encoding.DER
    return key.public_bytes(enc, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


# --- commands ---------------------------------------------------------------------


@click.group(short_help="Generate, import, inspect, export, attest, move, delete keys.")
def keys() -> None:
    """Generate, import, inspect, export, attest, move and delete the keys in PIV slots."""


@keys.command("generate")
@click.argument("slot", type=SLOT)
@click.option("-a", "--algorithm", type=KEY_TYPE, default="eccp256", show_default=True,
              help="rsa1024, rsa2048, rsa3072, rsa4096, eccp256, eccp384, ed25519, x25519 "
                   "(checked against the firmware first). The default is enroll's: Entra "
                   "CBA, Windows and iOS take it and it generates in a moment; rsa2048 for "
                   "systems that only take RSA (takes seconds on a YubiKey).")
@click.option("--pin-policy", type=PIN_POLICY, default="default", show_default=True,
              help="default, never, once, always (when the card asks for the PIN).")
@click.option("--touch-policy", type=TOUCH_POLICY, default="default", show_default=True,
              help="default, never, always, cached (when the card asks for a touch).")
@output_option("public key (PEM)")
@force_option("Replace a key already in the slot (it is destroyed for good); overwrite FILE.")
@allow_last_try_option
@secret_options("pin", "mgmt_key")
@json_option
@pass_ctx
def keys_generate(obj: CliContext, slot: Slot, algorithm: KeyType, pin_policy: PinPolicy,
                  touch_policy: TouchPolicy, output: str | None, force: bool,
                  allow_last_try: bool) -> None:
    """Generate a key pair on the card in SLOT.

    The private key never leaves the card. The algorithm and policies are checked against
    the card's firmware before anything is changed, and a key already in the slot is kept
    unless --force. Needs the management key (found PIN-protected, default, or asked for).
    Prints or writes the public key.

    SLOT is 9a|authentication, 9c|signature, 9d|key-management, 9e|card-authentication or
    a retired slot 82..95. Example:

    \b
      pivtool keys generate 9a -o alice-pub.pem      (then: pivtool certs request 9a ...)"""
    from ..workflows.keys import generate_key

    check_output(output, force)
    if algorithm.label.startswith("rsa") and not obj.json:
        click.echo("RSA key generation can take a while (up to a minute for rsa4096)...",
                   err=True)
    with obj.session() as s:
        r = generate_key(s, obj.prompter(), slot, algorithm, pin_policy, touch_policy, force,
                         allow_last_try)
        yubikey = s.is_yubikey
    text = f"Generated an {r.key_type.label} key in slot {slot.label}"
    # PIN and touch policies are YubiKey settings: another card applies its own rules.
    text += (f": PIN policy {r.pin_policy}, touch policy {r.touch_policy}." if yubikey
             else ".")
    if r.stale_certificate:
        text += (" The slot's certificate belongs to the old key: request a new one "
                 "(pivtool certs request).")
    for note in r.notes:
        text += f"\nNote: {note}"
    deliver(obj, output, _public_bytes(r.public_key, "pem"), r.to_json(), text, force)


@keys.command("import")
@click.argument("slot", type=SLOT)
@click.argument("file", metavar="FILE")
@click.option("--pin-policy", type=PIN_POLICY, default="default", show_default=True,
              help="default, never, once, always.")
@click.option("--touch-policy", type=TOUCH_POLICY, default="default", show_default=True,
              help="default, never, always, cached.")
@click.option("--no-cert", is_flag=True,
              help="Import only the key, not the certificate found in FILE.")
@click.option("--compress", is_flag=True, help="Store the certificate compressed.")
@force_option("Replace a key (and certificate) already in the slot; the old certificate is "
              "saved first.")
@slot_change_options("next to FILE; the current directory when FILE is -", pfx_password=True)
@json_option
@pass_ctx
def keys_import(obj: CliContext, slot: Slot, file: str, pin_policy: PinPolicy,
                touch_policy: TouchPolicy, no_cert: bool, compress: bool, force: bool,
                backup_dir: str | None, keep_chuid: bool, allow_last_try: bool) -> None:
    """Import the private key in FILE into SLOT (YubiKey only).

    FILE is PEM (a key, optionally followed by its certificate), DER, or PKCS#12
    (.pfx/.p12). A password, when the file needs one, comes from $PIVTOOL_PFX_PASSWORD,
    --password-file or a prompt. A certificate that belongs to the key is imported too
    (unless --no-cert); the slot's old certificate is saved next to FILE first. Needs the
    management key.

    Prefer 'keys generate': a key generated on the card cannot be copied and can be
    attested."""
    from ..workflows.keys import import_key, load_key_file
    from .files import read_input

    material = load_key_file(read_input(file), pfx_password(obj))
    backup = backup_target(slot, file, backup_dir)
    with obj.session() as s:
        r = import_key(s, obj.prompter(), slot, material, pin_policy, touch_policy,
                       not no_cert, compress, force, backup, keep_chuid, allow_last_try,
                       backup_dir=Path(backup_dir) if backup_dir else None)
    text = f"Imported an {r.key_type.label} key ({r.file_format}) into slot {slot.label}."
    if r.certificate is not None:
        text += " " + install_text(r.certificate.to_json())
    for note in r.notes:
        text += f"\nNote: {note}"
    obj.emit(r.to_json(), text)



@keys.command("info")
@click.argument("slot", type=SLOT)
@json_option
@pass_ctx
def keys_info(obj: CliContext, slot: Slot) -> None:
    """Show SLOT's key, its policies and its certificate.

    Algorithm, PIN and touch policies, where the key came from (generated on the card or
    imported), and whether the slot's certificate matches it. Needs no PIN.

    Generic PIV cards and YubiKeys before 5.3 cannot report their keys; then only the
    certificate is shown."""
    from ..workflows.keys import key_info
    from .render import cert_lines

    with obj.session() as s:
        info = key_info(s, slot)
    data = info.to_json()
    key = data["key"]
    lines = [f"Slot {slot.label}"]
    if key:
        lines.append(f"  key:  {key['algorithm']}, {key['origin']}, PIN {key['pin_policy']}, "
                     f"touch {key['touch_policy']}")
    else:
        lines.append("  key:  none" if info.metadata_available else
                     f"  key:  unknown ({info.state.key_unknown})")
    if data["certificate"]:
        match = {True: "matches the key", False: "DOES NOT match the key",
                 None: "not checked against the key"}[data["certificate_matches_key"]]
        lines.append(f"  certificate ({match}):")
        lines.extend(cert_lines(data["certificate"]))
    elif data["certificate_error"]:
        lines.append(f"  certificate: {data['certificate_error']}")
    else:
        lines.append("  certificate: none")
    obj.emit(data, "\n".join(lines))


@keys.command("export")
@click.argument("slot", type=SLOT)
@output_option("public key")
@format_option
@force_option("Overwrite FILE if it exists.")
@json_option
@pass_ctx
def keys_export(obj: CliContext, slot: Slot, output: str | None, fmt: str,
                force: bool) -> None:
    """Export the public key of SLOT (PEM or DER).

    The SubjectPublicKeyInfo, as OpenSSL reads it. Needs no PIN.

    On cards that cannot report their keys the public key is taken from the slot's
    certificate (JSON: "source": "certificate")."""
    from ..workflows.keys import export_public_key

    check_output(output, force)
    with obj.session() as s:
        key, source = export_public_key(s, slot)
    pem = _public_bytes(key, "pem").decode("ascii")
    data = {"schema": "pivtool.public-key/1", "slot": f"{slot.value:02x}", "source": source,
            "format": fmt, "public_key_pem": pem}
    where = f" to {output}" if output not in (None, "-") else ""
    deliver(obj, output, _public_bytes(key, fmt), data,
            f"Public key of slot {slot.label} written{where} (from {source}).", force)


roots_option = click.option(
    "--roots", metavar="FILE",
    help="Trust the attestation roots in FILE (PEM, one or more) instead of Yubico's "
         "published PIV attestation roots (the virtual YubiKey's: 'pivtool sim "
         "attestation-root CARD').")


def _roots(path: str | None) -> Any:
    from ..certs.attestation import load_certificates

    return load_certificates(path, "attestation roots file") if path else None


def _attestation_text(facts: Any, chain: Any, slot: str) -> str:
    """One line: what the attestation claims, and whether the chain proves it."""
    # Only what the attestation states: a YubiKey before 5 puts no serial in it.
    claims = "key generated on YubiKey" + (
        f" serial {facts.serial}" if facts.serial is not None else "") + (
        f" (firmware {facts.firmware})" if facts.firmware else "") + (
        f", PIN {facts.pin_policy}, touch {facts.touch_policy}"
        if facts.pin_policy and facts.touch_policy else "")
    if chain["verified"]:
        return f"Slot {slot}: {claims}; attestation verified to {chain['verified_to']}."
    return (f"Slot {slot}: attestation NOT verified ({chain['reason']}); it claims: "
            f"{claims}.")


@keys.command("attest")
@click.argument("slot", type=SLOT)
@output_option("attestation certificate (PEM)")
@force_option("Overwrite FILE if it exists.")
@roots_option
@json_option
@pass_ctx
def keys_attest(obj: CliContext, slot: Slot, output: str | None, force: bool,
                roots: str | None) -> None:
    """Prove that SLOT's key was generated on this YubiKey.

    The card issues a certificate for the key, signed by its attestation key (slot f9).
    Needs no PIN.

    pivtool checks the chain attestation -> the card's f9 certificate -> Yubico's PIV
    attestation roots (or --roots) signature by signature, and the attested key against the
    slot's. It says "verified to ROOT", or "NOT verified" and exits 1: a card can hold a
    self-made f9 certificate."""
    from ..workflows.attest import attest_key

    check_output(output, force)
    trusted = _roots(roots)
    with obj.session() as s:
        att = attest_key(s, slot, trusted)
    data = att.to_json()
    deliver(obj, output, data["pem"].encode("ascii"), data,
            _attestation_text(att, data, slot.label), force)
    if not att.verified:
        click.get_current_context().exit(Exit.FAILED)


@keys.command("verify-attestation")
@click.argument("attestation", metavar="ATTEST")
@click.argument("f9", metavar="F9")
@roots_option
@json_option
@pass_ctx
def keys_verify_attestation(obj: CliContext, attestation: str, f9: str,
                            roots: str | None) -> None:
    """Check an attestation received as files (no card needed).

    ATTEST is the attestation certificate of a key ('pivtool keys attest SLOT -o FILE'), F9
    the attesting card's f9 certificate ('pivtool certs export f9'; a PEM file may carry
    intermediates after it). Exits 1 when the chain does not reach a trusted root."""
    from ..certs.attestation import attestation_facts, load_certificates, verify_attestation
    from ..certs.inspect import summarize

    (att, *_) = load_certificates(attestation, "attestation certificate")
    bundle = load_certificates(f9, "f9 certificate")
    chain = verify_attestation(att, bundle[0], _roots(roots), bundle[1:])
    facts = attestation_facts(att)
    data = {"schema": "pivtool.attestation-verify/1", **facts.to_json(), **chain.to_json(),
            "certificate": summarize(att).to_json()}
    obj.emit(data, _attestation_text(facts, data, facts.slot or "?"))
    if not chain.verified:
        click.get_current_context().exit(Exit.FAILED)


@keys.command("move")
@click.argument("source", type=SLOT)
@click.argument("destination", type=SLOT)
@click.option("--no-cert", is_flag=True,
              help="Move only the key; leave the certificate where it is.")
@force_option("Replace a key or certificate in DESTINATION (its certificate is saved first).")
@slot_change_options()
@json_option
@pass_ctx
def keys_move(obj: CliContext, source: Slot, destination: Slot, no_cert: bool, force: bool,
              backup_dir: str | None, keep_chuid: bool, allow_last_try: bool) -> None:
    """Move a key and its certificate to another slot.

    Needs YubiKey firmware 5.7+. The card moves only the key; pivtool moves the certificate
    too (unless --no-cert). Needs the management key."""
    from ..workflows.keys import move_key

    with obj.session() as s:
        r = move_key(s, obj.prompter(), source, destination, not no_cert, force,
                     Path(backup_dir) if backup_dir else None, keep_chuid, allow_last_try)
    text = f"Moved the {r.key_type} key from slot {source.label} to {destination.label}"
    text += " with its certificate." if r.certificate_moved else "."
    if r.backup:
        text += f" The destination's old certificate was saved to {r.backup}."
    obj.emit(r.to_json(), text)


@keys.command("delete")
@click.argument("slot", type=SLOT)
@click.option("--keep-cert", is_flag=True, help="Delete only the key, keep the certificate.")
@slot_change_options()
@yes_option
@json_option
@pass_ctx
def keys_delete(obj: CliContext, slot: Slot, keep_cert: bool, backup_dir: str | None,
                keep_chuid: bool, allow_last_try: bool) -> None:
    """Delete the key and certificate in SLOT.

    The key is gone for good (YubiKey firmware 5.7+). The certificate is saved to a file
    first. Asks for confirmation (--yes for scripts). Needs the management key."""
    from ..workflows.keys import delete_key, plan_key_delete

    p = obj.prompter()
    with obj.session() as s:
        plan = plan_key_delete(s, slot, not keep_cert)
        if not p.confirm(plan.describe()):
            raise click.Abort()
        r = delete_key(s, p, plan, Path(backup_dir) if backup_dir else None, keep_chuid,
                       allow_last_try)
    text = f"Deleted the key in slot {slot.label}"
    text += " and its certificate." if r.certificate_deleted else "."
    if r.backup:
        text += f" The certificate was saved to {r.backup}."
    obj.emit(r.to_json(), text)
