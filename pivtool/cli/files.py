"""Writing files the way a credential tool must: secrets 0600 from the first byte, never
overwriting without being asked."""

from __future__ import annotations

import os

from ..core.errors import UsageError


def write_secret_file(path: str, text: str, overwrite: bool = False) -> None:
    """Create *path* with mode 0600 (O_EXCL unless *overwrite*) and write *text*."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; refusing to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # in case the file pre-existed with wider permissions


def write_output(path: str | None, data: bytes, overwrite: bool = False) -> None:
    """Write public data (certificates, CSRs, public keys) to *path*, or stdout for
    None/'-'. Existing files are not overwritten unless *overwrite*."""
    import sys

    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    assert path is not None
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None


def read_input(path: str) -> bytes:
    """Read a whole input file ('-' = stdin) with a one-line error."""
    import sys

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
