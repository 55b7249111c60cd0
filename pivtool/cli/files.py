"""Writing files the way a credential tool must: secrets 0600 from the first byte, never
overwriting without being asked."""

from __future__ import annotations

from ..core.errors import UsageError


def write_secret_file(path: str, text: str, overwrite: bool = False) -> None:
    """Create *path* with mode 0600 from the first byte and write *text*, fsynced with its
    directory (O_EXCL unless *overwrite*; an existing file or symlink is replaced, never
    written through)."""
    from ..core.fileio import write_file

    try:
        write_file(path, text.encode(), 0o600, overwrite)
    except FileExistsError:
        raise UsageError(f"{path} exists; refusing to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def write_output(path: str | None, data: bytes, overwrite: bool = False) -> None:
    """Write public data (certificates, CSRs, public keys) to *path*, or stdout for
    None/'-'. Existing files are not overwritten unless *overwrite*."""
    import sys

    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    assert path is not None
    from ..core.fileio import write_file

    try:
        write_file(path, data, 0o644, overwrite)
    except FileExistsError:
        raise UsageError(f"{path} exists; use --force to overwrite it") from None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


#: Largest input file read (certificates, bundles, keys, CSRs, object data are far
#: smaller): ``/dev/zero`` or a huge file is a usage error, not an exhausted memory.
MAX_INPUT = 16 * 1024 * 1024


def read_input(path: str) -> bytes:
    """Read a whole input file ('-' = stdin) with a one-line error."""
    import sys

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_INPUT + 1)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_INPUT:
        raise UsageError(f"{path} is too large (over {MAX_INPUT // (1024 * 1024)} MiB)")
    return data
