"""Parsing secret values (no I/O)."""

from __future__ import annotations

from ..core.errors import UsageError


def parse_hex_key(value: bytes, name: str = "management key") -> bytes:
    """A management key given as hex text (as every PIV tool writes it). The message never
    contains the value."""
    try:
        text = value.decode("ascii").strip().replace(" ", "").replace(":", "")
        return bytes.fromhex(text)
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"the {name} must be hex digits") from None
