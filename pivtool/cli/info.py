"""``pivtool info`` and ``pivtool list``."""

from __future__ import annotations

import click

from .context import CliContext, pass_ctx
from .options import json_option


@click.command(short_help="Show the key: serial, PIN/PUK tries, management key, slots.")
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


@click.command("list", short_help="List the readers and the key or card in each.")
@json_option
@pass_ctx
def list_cmd(obj: CliContext) -> None:
    """List readers and the card in each (YubiKey serial, firmware and form factor; generic
    PIV; no card). --reader narrows the list to readers whose name contains NAME."""
    from ..workflows.device import describe_card, list_cards

    rows: list[dict[str, object]] = []
    if obj.sim is not None:
        with obj.session() as s:
            rows.append(describe_card(s))
    else:
        from .. import pcsc

        rows += list_cards(pcsc.list_readers(),
                           lambda reader: pcsc.PcscConnection(reader, shared=True),
                           obj.reader, obj.serial)
    lines: list[str] = []
    for r in rows:
        if r["card"] == "yubikey":
            desc = f"YubiKey {r['version']}"
            if r.get("form_factor"):
                desc += f" ({r['form_factor']})"
            if r.get("serial"):
                desc += f", serial {r['serial']}"
        elif r["card"] == "piv":
            desc = "PIV card (no YubiKey extensions)"
        else:
            desc = str(r.get("error") or "no card")
        lines.append(f"{r['reader']}: {desc}")
    obj.emit({"schema": "pivtool.list/1", "readers": rows},
             "\n".join(lines) if lines else "No readers found.")
