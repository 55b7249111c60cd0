"""Crash-safe file writing, used for everything pivtool keeps on disk (lab CA index,
escrow, batch state) and every file it writes for the user.

Never through a symlink: :func:`atomic_write` renames over the path (a symlink there is
replaced, its target untouched) and :func:`create_new` creates with ``O_EXCL|O_NOFOLLOW``.
Both fsync the file and its directory, so a secret written once (a new management key in
``--key-out``) survives a power cut."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):  # not possible on every platform
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


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
    _fsync_dir(target.parent)


def create_new(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Create *path* holding *data*, with *mode* from the first byte (O_EXCL: never replaces
    a file or follows a symlink; raises ``FileExistsError``), fsynced with its directory.
    A failed write removes the file again: a re-run must not find an empty file "exists"."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exact, whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    _fsync_dir(Path(path).parent)


def write_file(path: str | os.PathLike[str], data: bytes, mode: int,
               overwrite: bool) -> None:
    """Write a file for the user: a new one (:func:`create_new`), or with *overwrite* the
    old one replaced atomically (:func:`atomic_write`: a symlink at *path* is replaced, its
    target never written or chmod'ed). A device or FIFO (``-o /dev/null``) is written in
    place, opened without following a symlink."""
    if overwrite:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return
        atomic_write(path, data, mode)
    else:
        create_new(path, data, mode)
