"""``pivtool info`` and ``pivtool list``."""

from __future__ import annotations

import click

from .context import CliContext, pass_ctx
from .options import json_option


@click.command()
@json_option
@pass_ctx
def info(obj: CliContext) -> None:
    """Show the card: version, serial, PIN/PUK tries, management key, objects, and every
    slot with a key or certificate. Spends no PIN try."""
    from ..workflows.state import read_card_state
    from .render import info_text

    with obj.session() as session:
        state = read_card_state(session)
    data = state.to_json()
    obj.emit(data, info_text(data))


@click.command("list")
@json_option
@pass_ctx
def list_cmd(obj: CliContext) -> None:
    """List readers and the card in each (YubiKey serial and firmware, generic PIV, none)."""
    from .. import pcsc

    rows = []
    if obj.sim is not None:
        from ..piv.session import PivSession

        with obj.session() as s:
            assert isinstance(s, PivSession)
            serial = s.get_serial() if s.version and s.version >= (5, 0, 0) else None
            rows.append({"reader": s.connection.reader_name,
                         "card": "yubikey" if s.is_yubikey else "piv",
                         "serial": serial, "version": str(s.version) if s.version else None})
    else:
        from ..core.errors import TransportError

        for reader in pcsc.list_readers():
            try:
                with pcsc.open_reader(reader, shared=True) as conn:
                    ident = pcsc.identify(conn)
                rows.append({"reader": reader, "card": ident.kind,
                             "serial": ident.serial, "version": ident.version})
            except TransportError as e:
                rows.append({"reader": reader, "card": "none", "serial": None,
                             "version": None, "error": str(e)})
    lines: list[str] = []
    for r in rows:
        if r["card"] == "yubikey":
            desc = f"YubiKey {r['version']}" + (f", serial {r['serial']}" if r["serial"] else "")
        elif r["card"] == "piv":
            desc = "PIV card"
        else:
            desc = str(r.get("error") or "no card")
        lines.append(f"{r['reader']}: {desc}")
    obj.emit({"schema": "pivtool.list/1", "readers": rows},
             "\n".join(lines) if lines else "No readers found.")
