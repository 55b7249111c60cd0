"""Where secrets come from: a file (``-`` for stdin), an environment variable, or a hidden
prompt — never argv. Values are returned as bytes and never echoed or logged."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import click

from ..core.errors import UsageError


@dataclass(frozen=True)
class SecretSpec:
    """How to find one secret: its user-facing name, env var and file option."""

    name: str
    env: str
    file_option: str


PIN = SecretSpec("PIN", "PIVTOOL_PIN", "--pin-file")
PUK = SecretSpec("PUK", "PIVTOOL_PUK", "--puk-file")
MGMT_KEY = SecretSpec("management key", "PIVTOOL_MGMT_KEY", "--mgmt-key-file")
NEW_PIN = SecretSpec("new PIN", "PIVTOOL_NEW_PIN", "--new-pin-file")
NEW_PUK = SecretSpec("new PUK", "PIVTOOL_NEW_PUK", "--new-puk-file")
NEW_MGMT_KEY = SecretSpec("new management key", "PIVTOOL_NEW_MGMT_KEY", "--new-mgmt-key-file")
PFX_PASSWORD = SecretSpec("PKCS#12 password", "PIVTOOL_PFX_PASSWORD", "--password-file")


def _read_file(path: str, spec: SecretSpec) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.readline()
        else:
            with open(path, "rb") as f:
                data = f.readline()
    except OSError as e:
        raise UsageError(f"cannot read the {spec.name} file {path}: {e.strerror}") from None
    # One secret per file, first line; trailing newline is not part of it.
    return data.rstrip(b"\r\n")


def get_secret(spec: SecretSpec, file: str | None, prompt: bool = True,
               confirm: bool = False, required: bool = True) -> bytes | None:
    """Resolve a secret: *file* beats the environment beats a hidden prompt.

    With ``prompt=False`` (non-interactive use) a missing secret is a usage error naming the
    env var and file option, or ``None`` when not *required*."""
    if file:
        value = _read_file(file, spec)
    elif spec.env in os.environ:
        value = os.environ[spec.env].encode("utf-8")
    elif prompt and sys.stdin.isatty():
        text = click.prompt(f"Enter {spec.name}", hide_input=True,
                            confirmation_prompt=confirm, err=True, default="",
                            show_default=False)
        value = text.encode("utf-8")
    elif not required:
        return None
    else:
        raise UsageError(f"{spec.name} needed: set {spec.env}, use {spec.file_option} FILE, "
                         "or run interactively")
    if not value and required:
        raise UsageError(f"empty {spec.name}")
    return value


def parse_hex_key(value: bytes, spec: SecretSpec = MGMT_KEY) -> bytes:
    """A management key given as hex text (as every PIV tool writes it)."""
    try:
        return bytes.fromhex(value.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"the {spec.name} must be hex digits") from None
