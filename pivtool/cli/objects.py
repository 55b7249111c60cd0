"""``pivtool objects``: the CHUID and CCC, and raw PIV data objects."""

from __future__ import annotations

import click

from .common import check_output, deliver
from .context import CliContext, pass_ctx
from .options import (
    allow_last_try_option,
    force_option,
    json_option,
    output_option,
    secret_options,
)


@click.group(short_help="Show or renew the CHUID and CCC; read and write data objects.")
def objects() -> None:
    """Show or renew the CHUID and CCC; read and write raw PIV data objects."""


@objects.command("chuid")
@click.option("--generate", is_flag=True,
              help="Write a new CHUID with a random GUID (management key needed).")
@allow_last_try_option
@secret_options("pin", "mgmt_key")
@json_option
@pass_ctx
def objects_chuid(obj: CliContext, generate: bool, allow_last_try: bool) -> None:
    """Show the CHUID, or write a new one.

    The Card Holder Unique Identifier: GUID, FASC-N, expiry. Windows caches smart-card
    certificates by the CHUID GUID; pivtool renews it after every certificate change, so
    --generate is only needed after other tools changed certificates."""
    from ..workflows.objects import ChuidInfo, generate_chuid, read_chuid

    with obj.session() as s:
        if generate:
            chuid = generate_chuid(s, obj.prompter(), allow_last_try)
            info = ChuidInfo(chuid, chuid.encode())
        else:
            info = read_chuid(s)
    data = info.to_json()
    if not data["present"]:
        text = "No CHUID on this card ('pivtool objects chuid --generate' writes one)."
    elif data["error"]:
        text = f"CHUID present but unreadable: {data['error']}"
    else:
        text = "\n".join([("New CHUID written." if generate else "CHUID:"),
                          f"  GUID:        {data['guid']}",
                          f"  FASC-N:      {data['fasc_n']}",
                          f"  expiration:  {data['expiration']}",
                          f"  signed:      {'yes' if data['signed'] else 'no'}"])
    obj.emit(data, text)


@objects.command("ccc")
@click.option("--generate", is_flag=True,
              help="Write a new CCC with a random card identifier (management key needed).")
@allow_last_try_option
@secret_options("pin", "mgmt_key")
@json_option
@pass_ctx
def objects_ccc(obj: CliContext, generate: bool, allow_last_try: bool) -> None:
    """Show the CCC, or write a new one.

    The Card Capability Container; shows its card identifier."""
    from ..workflows.objects import generate_ccc, read_ccc

    with obj.session() as s:
        info = generate_ccc(s, obj.prompter(), allow_last_try) if generate else read_ccc(s)
    data = info.to_json()
    if not data["present"]:
        text = "No CCC on this card ('pivtool objects ccc --generate' writes one)."
    elif data["error"]:
        text = f"CCC present but unreadable: {data['error']}"
    else:
        text = (("New CCC written. " if generate else "")
                + f"CCC card identifier: {data['card_id']}")
    obj.emit(data, text)


@objects.command("read")
@click.argument("object_id", metavar="ID")
@output_option("object's raw bytes")
@force_option("Overwrite FILE if it exists.")
@json_option
@pass_ctx
def objects_read(obj: CliContext, object_id: str, output: str | None, force: bool) -> None:
    """Read a data object's raw contents (without the 53 wrapper). Needs no PIN.

    ID is a name (chuid, ccc, authentication, signature, key-management, card-auth,
    retired1..retired20, attestation, pivman, ...) or a hex tag such as 5fc102. JSON gives
    the bytes as hex. 5fc109 is refused: it may hold the PIN-protected management key."""
    from ..workflows.objects import object_label, parse_object_id, read_object

    oid = parse_object_id(object_id)
    check_output(output, force)
    with obj.session() as s:
        r = read_object(s, oid)
    where = f" to {output}" if output not in (None, "-") else ""
    deliver(obj, output, r.data, r.to_json(),
            f"Object {object_label(oid)}: {len(r.data)} bytes written{where}.", force)


@objects.command("write")
@click.argument("object_id", metavar="ID")
@click.argument("file", metavar="FILE")
@force_option("Allow writing ykman's objects (pivman 5fff00, protected 5fc109).")
@allow_last_try_option
@secret_options("pin", "mgmt_key")
@json_option
@pass_ctx
def objects_write(obj: CliContext, object_id: str, file: str, force: bool,
                  allow_last_try: bool) -> None:
    """Write FILE's bytes into data object ID.

    FILE holds the contents without the 53 wrapper. The size is checked against the card's
    limit before anything is sent. Needs the management key. To write certificates use
    'certs import', which checks them."""
    from ..workflows.objects import (
        check_object_size,
        object_label,
        parse_object_id,
        write_object,
    )
    from .files import read_input

    oid = parse_object_id(object_id)
    data = read_input(file)
    check_object_size(oid, data)
    with obj.session() as s:
        r = write_object(s, obj.prompter(), oid, data, force, allow_last_try)
    obj.emit(r.to_json(), f"Object {object_label(oid)}: {r.length} bytes written.")
