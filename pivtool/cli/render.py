"""Human-readable renderings shared by commands (JSON comes from the workflows' to_json)."""

from __future__ import annotations

import re
from typing import Any

#: Characters a terminal acts on: C0 controls (ESC starts colour and cursor sequences, CR
#: and LF fake lines), DEL, C1 controls and the Unicode bidi overrides that reorder text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def untrusted(value: object) -> str:
    """A string from a card or certificate (a CN, a UPN, an error naming one), with every
    control character shown escaped (``\\x1b``, ``\\x0a``): it prints on one line and
    cannot colour, move or fake output."""
    return _CONTROL.sub(_escape, str(value))


def terminal_safe(text: str) -> str:
    """Human output as pivtool built it: line breaks kept, every other control character
    escaped (the last line of defence for strings not passed through :func:`untrusted`)."""
    return "\n".join(untrusted(line) for line in text.split("\n"))


def counter_text(tries_left: int | None, total: int | None, default: bool | None) -> str:
    """``2/3 tries left (default)`` style text."""
    if tries_left is None:
        text = "tries unknown (the card only tells by spending one)"
    elif tries_left == 0:
        text = "BLOCKED"
    else:
        text = f"{tries_left}/{total} tries left" if total else f"{tries_left} tries left"
    if default:
        text += ", factory default"
    return text


def cert_lines(summary: dict[str, Any], indent: str = "    ") -> list[str]:
    """A certificate summary in a few lines."""
    lines = [f"{indent}subject:  {untrusted(summary.get('subject'))}",
             f"{indent}issuer:   {untrusted(summary.get('issuer'))}"]
    upns = summary.get("upns") or []
    if upns:
        lines.append(f"{indent}UPN:      {', '.join(untrusted(u) for u in upns)}")
    lines.append(f"{indent}valid:    {summary.get('not_before')} .. {summary.get('not_after')}")
    lines.append(f"{indent}sha256:   {summary.get('sha256')}")
    return lines


def info_text(data: dict[str, Any]) -> str:
    """Render ``pivtool.info/1`` JSON as text."""
    card = (f"YubiKey {data['version']}" if data["card"] == "yubikey" else "generic PIV card")
    if data.get("serial") is not None:
        card += f", serial {data['serial']}"
    mk = data["management_key"]
    mk_text = mk["algorithm"].upper()
    if mk.get("default"):
        mk_text += ", factory default"
    if mk.get("protected"):
        mk_text += ", stored PIN-protected"
    if mk.get("pin_derived"):
        mk_text += ", derived from the PIN (ykman's legacy scheme)"
    if mk.get("touch_policy") not in (None, "never"):
        mk_text += f", touch {mk['touch_policy']}"
    pin, puk = data["pin"], data["puk"]
    lines = [
        f"Card:      {card}",
        f"Reader:    {data['reader']}",
        f"PIN:       {counter_text(pin['tries_left'], pin['tries_total'], pin['is_default'])}",
        f"PUK:       {counter_text(puk['tries_left'], puk['tries_total'], puk['is_default'])}",
        f"Mgmt key:  {mk_text}",
        f"CHUID:     {data['chuid']['guid'] if data.get('chuid') else 'none'}",
        f"CCC:       {data['ccc']['card_id'] if data.get('ccc') else 'none'}",
    ]
    unknown = data.get("unknown_slots") or []
    if not data.get("slot_keys_reported", True):
        lines.append("Slots:     the card does not report slot keys: only slots with a "
                     "certificate are listed" + ("" if data["slots"] else " (none)"))
    elif unknown:
        lines.append(f"Slots:     unknown whether {', '.join(unknown)} hold a key (the card's "
                     "answer was not understood)")
    elif not data["slots"]:
        lines.append("Slots:     all empty")
    for s in data["slots"]:
        key = s.get("key")
        if key:
            key_text = f"{key['algorithm']}, {key['origin']}"
            if data["card"] == "yubikey":
                key_text += f", PIN {key['pin_policy']}, touch {key['touch_policy']}"
        else:
            key_text = "key unknown" if s.get("key_status") == "unknown" else "no key"
        lines.append(f"Slot {s['slot']} ({s['name']}): {key_text}")
        cert = s.get("certificate")
        if cert:
            match = s.get("certificate_matches_key")
            suffix = {True: "matches the key", False: "DOES NOT match the key",
                      None: "key not checked"}[match]
            lines.append(f"  certificate ({suffix}):")
            lines.extend(cert_lines(cert))
    for w in data.get("warnings", []):
        lines.append(f"! {w}")
    return "\n".join(lines)


_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def item_lines(items: list[dict[str, Any]]) -> list[str]:
    """One ``PASS|WARN|FAIL|SKIP  id  message`` line per item, the fix indented below
    anything not passing (``check`` and ``entra policy``)."""
    lines = []
    width = max((len(i["id"]) for i in items), default=0)
    for item in items:
        lines.append(f"{_MARK[item['status']]}  {item['id']:{width}}  {item['message']}")
        if item["status"] != "pass" and item["fix"]:
            lines.append(f"      {'':{width}}  fix: {item['fix']}")
    return lines
