"""``pivtool pin``, ``pivtool puk``, ``pivtool mgmt-key`` and ``pivtool reset``."""

from __future__ import annotations

import os

import click

from .context import CliContext, pass_ctx
from .options import allow_last_try_option, json_option, secret_options, yes_option


@click.group()
def pin() -> None:
    """Verify, change or unblock the PIN; set PIN/PUK retry counts."""


@pin.command("verify")
@secret_options("pin")
@allow_last_try_option
@json_option
@pass_ctx
def pin_verify(obj: CliContext, allow_last_try: bool) -> None:
    """Check the PIN (checks the tries left first; never spends the last one without
    --allow-last-try)."""
    from ..workflows.auth import verify_pin

    p = obj.prompter()
    with obj.session() as s:
        before = verify_pin(s, p.secret("pin"), allow_last_try)
        # Leave nothing verified behind on a shared connection.
        s.unverify_pin()
    # A right PIN resets the counter to its total (known from metadata, else unknown).
    left = before.total
    obj.emit({"schema": "pivtool.pin-verify/1", "verified": True, "tries_left": left},
             f"PIN verified ({left} tries left)." if left is not None else "PIN verified.")


@pin.command("change")
@secret_options("pin", "new_pin")
@allow_last_try_option
@json_option
@pass_ctx
def pin_change(obj: CliContext, allow_last_try: bool) -> None:
    """Change the PIN (6-8 characters; macOS wants digits only)."""
    from ..piv.encoding import pin_bytes
    from ..workflows.auth import change_pin
    from ..workflows.journal import change_reference

    p = obj.prompter()
    old, new = p.secret("pin"), p.secret("new_pin")
    pin_bytes(old, "PIN")  # both lengths are checked before the card is opened
    pin_bytes(new, "new PIN")
    with obj.session() as s:
        how, derived = change_reference(
            s, "pin", old, new, allow_last_try,
            change=lambda o, n: change_pin(s, o, n, allow_last_try, p.ask))
    obj.emit({"schema": "pivtool.pin-change/1", "changed": "pin",
              "derived_mgmt_key_updated": bool(derived)},
             ("PIN changed" if how == "changed" else
              "PIN changed (by the interrupted run; confirmed now)")
             + (" (and the management key derived from it)." if derived else "."))


@pin.command("unblock")
@secret_options("puk", "new_pin")
@allow_last_try_option
@json_option
@pass_ctx
def pin_unblock(obj: CliContext, allow_last_try: bool) -> None:
    """Set a new PIN with the PUK (after the PIN was blocked by wrong tries)."""
    from ..piv.encoding import pin_bytes
    from ..workflows.auth import check_puk

    p = obj.prompter()
    puk, new = p.secret("puk"), p.secret("new_pin")
    pin_bytes(puk, "PUK")
    pin_bytes(new, "new PIN")
    with obj.session() as s:
        check_puk(s, allow_last_try, p.ask)
        s.unblock_pin(puk, new)
    obj.emit({"schema": "pivtool.pin-unblock/1", "unblocked": True}, "PIN unblocked and set.")


@pin.command("set-retries")
@click.argument("pin_tries", type=click.IntRange(1, 255))
@click.argument("puk_tries", type=click.IntRange(1, 255))
@secret_options("pin", "mgmt_key")
@yes_option
@allow_last_try_option
@json_option
@pass_ctx
def pin_set_retries(obj: CliContext, pin_tries: int, puk_tries: int, allow_last_try: bool) -> None:
    """Set how many wrong PINs/PUKs the card allows. This resets PIN and PUK to the
    factory defaults (123456 / 12345678): change them afterwards."""
    from ..workflows.auth import authenticate

    p = obj.prompter()
    with obj.session() as s:
        if not p.confirm(f"Set PIN tries to {pin_tries} and PUK tries to {puk_tries}? "
                         "PIN and PUK go back to their factory defaults"):
            raise click.Abort()
        authenticate(s, p, allow_last_try, need_pin=True)
        s.set_pin_retries(pin_tries, puk_tries)
    obj.emit({"schema": "pivtool.pin-retries/1", "pin_tries": pin_tries,
              "puk_tries": puk_tries, "pin_puk_reset": True},
             f"Retries set: PIN {pin_tries}, PUK {puk_tries}. PIN and PUK are now the "
             "factory defaults: change them.")


@click.group()
def puk() -> None:
    """Change the PUK."""


@puk.command("change")
@secret_options("puk", "new_puk")
@allow_last_try_option
@json_option
@pass_ctx
def puk_change(obj: CliContext, allow_last_try: bool) -> None:
    """Change the PUK (6-8 characters)."""
    from ..piv.encoding import pin_bytes
    from ..workflows.journal import change_reference

    p = obj.prompter()
    old, new = p.secret("puk"), p.secret("new_puk")
    pin_bytes(old, "PUK")
    pin_bytes(new, "new PUK")
    with obj.session() as s:
        how, _ = change_reference(s, "puk", old, new, allow_last_try, ask=p.ask)
    obj.emit({"schema": "pivtool.puk-change/1", "changed": "puk"},
             "PUK changed." if how == "changed" else
             "PUK changed (by the interrupted run; confirmed now).")


@click.group("mgmt-key", short_help="Change the management key (needed for key changes).")
def mgmt_key() -> None:
    """Change the management key (the key that authorises key and certificate changes)."""


@mgmt_key.command("change")
@click.option("--algorithm", "-a", type=click.Choice(["tdes", "aes128", "aes192", "aes256"]),
              default=None, help="New key algorithm (default: aes192 where supported, "
                                 "else tdes).")
@click.option("--generate", "-g", is_flag=True, help="Generate a random new key.")
@click.option("--protect", "-p", is_flag=True,
              help="Store the new key on the card under the PIN (ykman-compatible), so "
                   "you only need the PIN. Implies --generate unless a new key is given.")
@click.option("--touch", "-t", is_flag=True, help="Require a touch to use the key.")
@click.option("--key-out", metavar="FILE",
              help="With --generate and without --protect: write the new key (hex) to FILE "
                   "(created 0600) before the card is changed.")
@secret_options("pin", "mgmt_key", "new_mgmt_key")
@allow_last_try_option
@json_option
@pass_ctx
def mgmt_key_change(obj: CliContext, algorithm: str | None, generate: bool, protect: bool,
                    touch: bool, key_out: str | None, allow_last_try: bool) -> None:
    """Change the management key.

    The management key authorises key and certificate changes. Recommended: --protect, a
    random key stored on the card under the PIN (as ykman does), so nobody has to keep it:

    \b
      pivtool mgmt-key change --protect
      pivtool mgmt-key change --generate --key-out mgmt.key   (keep the key yourself)

    The current key is found PIN-protected, is derived from the PIN (ykman's legacy
    scheme; the new key replaces it), is the factory default, or comes from
    $PIVTOOL_MGMT_KEY / --mgmt-key-file / a prompt; a new key you choose from
    $PIVTOOL_NEW_MGMT_KEY / --new-mgmt-key-file (hex)."""
    from ..core.errors import UsageError
    from ..workflows.auth import authenticate_for_change, change_mgmt_key, choose_mgmt_key_type
    from ..workflows.secrets import parse_hex_key
    from .files import write_secret_file

    p = obj.prompter()
    if protect and not p.given("new_mgmt_key"):
        generate = True
    if not generate and not p.given("new_mgmt_key") and not obj.interactive:
        raise UsageError("which new management key? --protect (a random key stored under "
                         "the PIN; recommended), --generate --key-out FILE, "
                         "$PIVTOOL_NEW_MGMT_KEY or --new-mgmt-key-file FILE")
    if generate and not protect and not key_out:
        raise UsageError("a generated key must go somewhere: add --protect (store it under "
                         "the PIN) or --key-out FILE")
    if key_out and os.path.exists(key_out):
        raise UsageError(f"{key_out} exists; refusing to overwrite a key file")
    with obj.session() as s:
        if not s.is_yubikey:
            # SET MANAGEMENT KEY and the PIN-protected store (ykman's 5FFF00/5FC109) are
            # YubiKey extensions; on other cards 5FC109 is the standard Printed Information.
            why = f" ({s.version_note})" if s.version_note else ""
            raise UsageError(
                "this card cannot change its management key: SET MANAGEMENT KEY is a "
                f"YubiKey extension and the card has not shown it is a YubiKey{why}"
                + ("; nor can it store one PIN-protected (--protect)" if protect else "")
                + ". Its management key is changed by the card's issuer")
        kt = choose_mgmt_key_type(s, algorithm)
        if generate:
            import secrets as _secrets

            new = _secrets.token_bytes(kt.key_len)
        else:
            new = parse_hex_key(p.secret("new_mgmt_key"), "new management key")
        auth = authenticate_for_change(s, p, new, typed=not generate, force=allow_last_try,
                                       need_pin=protect)
        if key_out:
            write_secret_file(key_out, new.hex() + "\n")
        result = change_mgmt_key(s, auth, new, kt, protect, touch,
                                 pin=lambda: p.secret("pin"), force=allow_last_try)
    where = "stored on the card under the PIN" if protect else (
        f"written to {key_out}" if key_out else "as given")
    obj.emit({"schema": "pivtool.mgmt-key-change/1", "algorithm": result.algorithm,
              "protected": result.protected, "touch": result.touch, "key_file": key_out},
             f"Management key changed ({result.algorithm}, {where}).")


@click.command(short_help="Factory-reset PIV: keys destroyed, certificates saved "
                          "first.")
@click.option("--backup-dir", metavar="DIR",
              help="Where to save the certificates first (default: "
                   "./pivtool-backup-<serial>-<time>).")
@yes_option
@json_option
@pass_ctx
def reset(obj: CliContext, backup_dir: str | None) -> None:
    """Factory-reset the PIV application of a YubiKey: all keys and certificates are
    destroyed (certificates are saved first), PIN/PUK/management key go back to defaults.
    pivtool blocks PIN and PUK itself, as the card requires."""
    from pathlib import Path

    from ..workflows.reset import (
        backup_certificates,
        default_backup_dir,
        plan_reset,
        require_resettable,
        reset_card,
    )
    from ..workflows.state import read_card_state

    p = obj.prompter()
    with obj.session() as s:
        require_resettable(s)  # before reading anything: say at once what to do instead
        state = read_card_state(s)
        plan = plan_reset(state)
        if not obj.json:
            click.echo(plan.describe(), err=True)
        if not p.confirm("Reset the PIV application now?"):
            raise click.Abort()
        directory = Path(backup_dir) if backup_dir else default_backup_dir(state.serial)
        saved = backup_certificates(state, directory)
        result = reset_card(s, plan, saved)
    text = "PIV application reset to factory defaults."
    if saved:
        text += f" Certificates saved in {directory}."
    obj.emit({"schema": "pivtool.reset/1", "reset": True, "destroyed": result.destroyed,
              "backup": result.backup,
              "pin_tries_spent": result.pin_tries_spent,
              "puk_tries_spent": result.puk_tries_spent}, text)
