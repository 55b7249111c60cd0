"""Review (safety standards): files that hold secrets are 0600 before the first byte, and
inputs are read with a bound."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pivtool.core.errors import UsageError


def test_secret_file_overwrite_is_0600_before_the_secret_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pivtool.cli.files as files
    import pivtool.core.fileio as fileio

    path = tmp_path / "bundle.json"
    path.write_text("old")
    path.chmod(0o644)
    modes: list[int] = []
    real_fdopen = os.fdopen

    class Spy:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def fileno(self) -> int:
            return int(self.f.fileno())

        def write(self, text: str) -> int:
            modes.append(stat.S_IMODE(os.fstat(self.f.fileno()).st_mode))
            return int(self.f.write(text))

        def flush(self) -> None:
            self.f.flush()

    # The write goes through core.fileio (atomic_write: a 0600 temporary file renamed over
    # the old one, so the old file's wider mode never sees the secret).
    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, *a, **k: Spy(real_fdopen(fd, *a, **k)))
    files.write_secret_file(str(path), "SECRET", overwrite=True)
    assert modes and all(m == 0o600 for m in modes)
    assert path.read_text() == "SECRET"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_read_input_is_bounded(tmp_path: Path) -> None:
    from pivtool.cli.files import MAX_INPUT, read_input

    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_INPUT + 1)
    with pytest.raises(UsageError) as e:
        read_input(str(big))
    assert "too large" in str(e.value)
    ok = tmp_path / "ok.bin"
    ok.write_bytes(b"x" * 10)
    assert read_input(str(ok)) == b"x" * 10
