"""The escrow file format on its own: round trip, authentication, bounds, locking."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from pivtool.cli.exitcodes import Exit, exit_code_for
from pivtool.workflows.escrow import (
    EscrowCorruptError,
    EscrowFile,
    EscrowPassphraseError,
)

PW = b"correct horse battery"


def test_round_trip_and_update(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    ef = EscrowFile(path, PW)
    assert not ef.exists()
    ef.put(42, "a@contoso.com", puk=b"12341234")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = ef.get(42)
    assert first is not None and first.puk == "12341234" and first.mgmt_key is None
    ef.put(42, mgmt_key=bytes(range(24)), mgmt_key_algorithm="aes192")
    other = EscrowFile(path, PW)  # a fresh reader derives the key itself
    entry = other.get(42)
    assert entry is not None
    assert entry.puk == "12341234" and entry.upn == "a@contoso.com"  # kept
    assert entry.mgmt_key == bytes(range(24)).hex() and entry.created == first.created
    assert other.get(43) is None
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]  # no temp files left


def test_secrets_never_in_repr_or_file_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    ef = EscrowFile(path, PW)
    entry = ef.put(42, "a@contoso.com", puk=b"12341234")
    assert "12341234" not in repr(entry) and "correct" not in repr(ef)
    raw = path.read_bytes()
    assert b"12341234" not in raw and b"contoso" not in raw and b"serial" not in raw
    assert "12341234" not in json.dumps(entry.to_public_json())


def test_wrong_passphrase_vs_tampering(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    EscrowFile(path, PW).put(42, puk=b"12341234")
    with pytest.raises(EscrowPassphraseError) as wrong:
        EscrowFile(path, b"wrong passphrase").read()
    assert str(wrong.value) == f"wrong escrow passphrase for {path}"
    assert exit_code_for(wrong.value) == Exit.AUTH
    doc = json.loads(path.read_text())
    # A header field that is not checked on its own is still covered: it is GCM AAD.
    doc["kdf"]["comment"] = "added"
    path.write_text(json.dumps(doc))
    with pytest.raises(EscrowCorruptError) as bad:
        EscrowFile(path, PW).read()
    assert "integrity" in str(bad.value) and exit_code_for(bad.value) == Exit.USAGE


@pytest.mark.parametrize("change", [
    {"n": 2**30}, {"r": 1000}, {"n": 3}, {"n": "16384"}, {"name": "pbkdf2"}])
def test_kdf_bounds(tmp_path: Path, change: dict[str, object]) -> None:
    path = tmp_path / "e.json"
    EscrowFile(path, PW).put(1, puk=b"12341234")
    doc = json.loads(path.read_text())
    doc["kdf"].update(change)
    path.write_text(json.dumps(doc))
    with pytest.raises(EscrowCorruptError, match="corrupt"):
        EscrowFile(path, PW).read()  # refused before scrypt runs with a crafted cost


def test_failed_first_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    with pytest.raises(RuntimeError):
        def boom(entries: object) -> object:
            raise RuntimeError("x")
        EscrowFile(path, PW).update(boom)  # type: ignore[arg-type]
    assert not path.exists()
    path.write_bytes(b"")
    with pytest.raises(EscrowCorruptError, match="empty"):
        EscrowFile(path, PW).read()


def test_concurrent_writers_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    EscrowFile(path, PW).put(0, puk=b"00000000")
    errors: list[BaseException] = []

    def writer(serial: int) -> None:
        try:
            EscrowFile(path, PW).put(serial, f"u{serial}@contoso.com",
                                     puk=f"{serial:08d}".encode())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = EscrowFile(path, PW).read()
    assert sorted(e.serial for e in entries) == list(range(7))
    assert all(e.puk == f"{e.serial:08d}" for e in entries)
