"""Crash-safe file replacement, used for everything pivtool keeps on disk (lab CA index,
escrow, batch state)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace *path* with *data*: a temporary file in the same directory, created 0600 by
    mkstemp (so a secret never sits in a wider-mode file) and set to *mode*, fsynced, renamed
    over *path*, then the directory fsynced so the rename survives a power cut. A crash
    leaves the old file or the new one, never a mix."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not possible on every platform
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def create_new(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Create *path* holding *data*, with *mode* from the first byte (O_EXCL: never replaces
    a file; raises ``FileExistsError``), fsynced. For secrets and certificate backups."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
