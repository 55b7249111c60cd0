"""``pivtool sim``: the virtual YubiKey."""

from __future__ import annotations

import click

from .context import CliContext, pass_ctx
from .options import json_option


@click.group(short_help="Create and serve virtual YubiKeys (a PIV card emulator).")
def sim() -> None:
    """Create and serve virtual YubiKeys (a PIV card emulator with real cryptography)."""


def _profile_help() -> str:
    # The profile table lives in the emulator; importing it is cheap (no cryptography).
    from ..sim.profiles import PROFILES

    return "Kind of card: " + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values())


def _profile_names() -> list[str]:
    from ..sim.profiles import PROFILES

    return list(PROFILES)


@sim.command("create")
@click.argument("state_file", type=click.Path(dir_okay=False))
@click.option("--profile", type=click.Choice(_profile_names()), default=None,
              help=_profile_help() + ".  [default: yubikey-5.7]")
@click.option("--firmware", default=None, metavar="X.Y.Z",
              help="Firmware version to emulate (e.g. 5.4.3 for a 3DES default key); alone it "
                   "picks the matching YubiKey profile, with --profile it overrides that "
                   "profile's version.")
@click.option("--serial", type=int, default=None, help="Serial number (random if omitted).")
@click.option("--generic", is_flag=True,
              help="A generic PIV card without YubiKey extensions (= --profile generic).")
@click.option("--pin-complexity/--no-pin-complexity", default=None,
              help="YubiKey 5.7 PIN complexity: trivial new PINs/PUKs (one repeated "
                   "character, common values such as 123456 or password) are refused. "
                   "[default: the profile's; on for yubikey-5.7-fips]")
@click.option("--touch", "touch_mode", type=click.Choice(["auto", "manual"]), default="auto",
              show_default=True,
              help="The touch sensor: auto gives every touch a key's touch policy asks for; "
                   "manual waits for 'pivtool sim touch STATE_FILE' and fails the command "
                   "(6982) without one.")
@click.option("--touch-timeout", type=click.FloatRange(min=0.1, max=600), default=15.0,
              show_default=True, metavar="SECONDS",
              help="How long a manual touch is waited for (a YubiKey: about 15 s).")
@click.option("--force", is_flag=True, help="Overwrite an existing state file.")
@json_option
@pass_ctx
def create(obj: CliContext, state_file: str, profile: str | None, firmware: str | None,
           serial: int | None, generic: bool, pin_complexity: bool | None, touch_mode: str,
           touch_timeout: float, force: bool) -> None:
    """Make a factory-fresh virtual card (a YubiKey unless --profile says otherwise) in
    STATE_FILE (mode 0600)."""
    import os

    from ..core.errors import UsageError
    from ..piv.version import Version
    from ..sim.state import new_card_state, save_state

    fw: tuple[int, int, int] | None = None
    if firmware is not None:
        try:
            v = Version.parse(firmware)
        except ValueError as e:
            raise UsageError(str(e)) from None
        fw = (v.major, v.minor, v.patch)
    if generic and profile not in (None, "generic"):
        raise UsageError(f"--generic contradicts --profile {profile}")
    if generic and fw is not None:
        raise UsageError("--firmware has no meaning for a generic PIV card (it has no "
                         "firmware version to report)")
    if os.path.exists(state_file) and not force:
        raise UsageError(f"{state_file} exists; use --force to replace that virtual card")
    try:
        state = new_card_state(firmware=fw, serial=serial, generic=generic, profile=profile,
                               pin_complexity=pin_complexity)
    except ValueError as e:
        raise UsageError(str(e)) from None
    state.touch_mode, state.touch_timeout = touch_mode, touch_timeout
    save_state(state, state_file)
    kind = state.kind
    version = ".".join(str(n) for n in state.firmware)
    what = {"generic": "PIV card", "yubikey-compatible": f"YubiKey-compatible card ({version})",
            "yubikey-neo": f"YubiKey NEO (PIV applet {version})"}.get(
        kind.name, f"YubiKey {version}")
    obj.emit({"schema": "pivtool.sim-create/1", "state_file": state_file,
              "profile": kind.name,
              "firmware": None if state.generic else version, "serial": state.serial,
              "generic": state.generic, "pin_complexity": state.pin_complexity},
             f"Created virtual {what} serial {state.serial} in {state_file}")


@sim.command("serve")
@click.argument("state_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--port", type=int, default=35963, show_default=True,
              help="vpcd port (35963 = 'Virtual PCD 00 00', 35964 = '... 00 01').")
@click.option("--host", default="127.0.0.1", show_default=True, help="vpcd host.")
@click.option("--interface", type=click.Choice(["nfc", "usb"]), default="nfc",
              show_default=True,
              help="Which of the profile's ATRs to present (a YubiKey's contact or "
                   "contactless one; other cards have one ATR). ykman takes any reader not "
                   "named 'Yubico YubiKey' for an NFC reader and refuses a USB ATR there, so "
                   "the plain vpcd readers want nfc; use usb behind a reader named 'Yubico "
                   "YubiKey ...'.")
@click.option("--fail-at", type=click.IntRange(min=1), metavar="N",
              help="Fault injection (testing): fail the N-th command APDU, once.")
@click.option("--fail-kind", type=click.Choice(["card-removed", "transmission-error", "reset",
                                                "garbage", "answer-lost"]),
              default="card-removed", show_default=True,
              help="What happens at --fail-at: the card is pulled (and put back), the "
                   "answer is broken, the card was reset by another program, a 9000 "
                   "answer that is not the card's, or the card executes the command and is "
                   "pulled before its answer arrives.")
def serve(state_file: str, port: int, host: str, interface: str, fail_at: int | None,
          fail_kind: str) -> None:
    """Insert the virtual card into pcscd's vpcd reader until Ctrl-C or SIGTERM.

    Every state change is saved atomically before the card answers, so killing this process
    is exactly pulling the card out."""
    from ..sim.attach import FaultKind, Faults
    from ..sim.vpcd import serve as run

    faults = Faults(at=fail_at, kind=FaultKind(fail_kind)) if fail_at is not None else None
    run(state_file, port=port, host=host, faults=faults, interface=interface)


@sim.command("touch")
@click.argument("state_file", type=click.Path(dir_okay=False, exists=True))
@json_option
@pass_ctx
def touch(obj: CliContext, state_file: str) -> None:
    """Touch the virtual key (one created with --touch manual) while it waits.

    Works for the card 'sim serve STATE_FILE' serves and for another pivtool using
    '--sim STATE_FILE': the waiting card takes the touch (a touch given more than a couple
    of seconds before the card starts waiting does not count)."""
    from ..sim.touch import press_marker

    marker = press_marker(state_file)
    obj.emit({"schema": "pivtool.sim-touch/1", "state_file": state_file,
              "marker": str(marker)}, f"Touched the virtual key in {state_file}")


@sim.command("attestation-root")
@click.argument("state_file", type=click.Path(dir_okay=False, exists=True))
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Where to write the root certificate (PEM; '-' = stdout).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@pass_ctx
def attestation_root(obj: CliContext, state_file: str, output: str, force: bool) -> None:
    """Export the virtual card's attestation root CA (PEM), for --roots.

    Each virtual YubiKey signs its f9 certificate with its own root; trust it explicitly
    ('pivtool keys attest SLOT --roots FILE') — pivtool never trusts it by default."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from ..sim.attestation import attestation_root_ca
    from ..sim.state import load_state
    from .files import write_output

    state = load_state(state_file)
    if state.generic or not state.attestation_root_cert:
        from ..core.errors import UsageError

        what = "a generic PIV card" if state.generic else f"a {state.profile} card"
        raise UsageError(f"{state_file} is {what}: it has no attestation")
    root = attestation_root_ca(state)
    pem = root.public_bytes(Encoding.PEM)
    to_file = output not in ("-", "")
    if to_file or not obj.json:  # under --json without -o the PEM is in the document
        write_output(output if to_file else None, pem, overwrite=force)
    if obj.json:
        obj.emit({"schema": "pivtool.sim-attestation-root/1",
                  "subject": root.subject.rfc4514_string(), "file": output if to_file else None,
                  "certificate_pem": pem.decode("ascii")})
    elif to_file:
        click.echo(f"Attestation root {root.subject.rfc4514_string()} written to {output}")
