"""Parsing secret values (no I/O)."""

from __future__ import annotations

from ..core.errors import UsageError


def parse_hex_key(value: bytes, name: str = "management key") -> bytes:
    """A management key given as hex text (as every PIV tool writes it). The message never
    contains the value."""
    key = _from_hex(value)
    if key is None:
        # Raised outside the ``except`` block: the decoding error (whose repr holds the
        # value) must not ride along as ``__context__``.
        raise UsageError(f"the {name} must be hex digits")
    return key


def _from_hex(value: bytes) -> bytes | None:
    try:
        text = value.decode("ascii").strip().replace(" ", "").replace(":", "")
        return bytes.fromhex(text)
    except (ValueError, UnicodeDecodeError):
        return None
