"""Issue 16's low findings at the CLI: no writing through symlinks, fsynced secrets, no
empty file after a failed exclusive create, terminal escapes from certificates escaped."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from pivtool.core import fileio
from tests.cli.clihelp import make_card, run, self_signed, store_certificate_object

PIN = {"PIVTOOL_PIN": "123456"}


def test_overwrite_replaces_a_symlink_never_its_target(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    link = tmp_path / "diag.json"
    link.symlink_to(victim)
    r = run(card, "diagnose", "-o", str(link), "--force", env=PIN)
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
    # Public outputs too (certs export -o F --force).
    assert run(card, "keys", "generate", "9a").exit_code == 0
    assert run(card, "certs", "selfsign", "9a", "--upn", "a@contoso.com", env=PIN).exit_code == 0
    link2 = tmp_path / "cert.pem"
    link2.symlink_to(victim)
    assert run(card, "certs", "export", "9a", "-o", str(link2), "--force").exit_code == 0
    assert victim.read_text() == "precious\n" and not link2.is_symlink()
    # Without --force a (dangling) symlink is "exists", not followed.
    dangling = tmp_path / "dangling.pem"
    dangling.symlink_to(tmp_path / "nowhere.pem")
    r = run(card, "certs", "export", "9a", "-o", str(dangling))
    assert r.exit_code == 2 and "exists" in r.stderr
    assert not (tmp_path / "nowhere.pem").exists()
    # Devices are written in place, never replaced.
    assert run(card, "certs", "export", "9a", "-o", os.devnull, "--force").exit_code == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_failed_exclusive_create_leaves_no_file_and_syncs_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = make_card(tmp_path)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    fileio.create_new(tmp_path / "key.txt", b"secret", 0o600)
    assert str(tmp_path / "key.txt") in synced and str(tmp_path) in synced

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # (os.fsync is patched for everyone: the card file is only read by diagnose.)
    monkeypatch.setattr(fileio.os, "fsync", full)
    out = tmp_path / "diag.json"
    r = run(card, "diagnose", "-o", str(out), env=PIN)
    assert r.exit_code == 2 and "No space left on device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()  # the re-run is not refused with "exists"


def _crafted_cert(card: Path) -> None:
    cn = "evil\x1b[31mRED\x1b[0m\nSlot 9c (signature): FAKE LINE"
    store_certificate_object(card, 0x5FC105, self_signed(cn))


def test_certificate_fields_cannot_drive_the_terminal(tmp_path: Path) -> None:
    card = make_card(tmp_path)
    _crafted_cert(card)
    r = run(card, "info")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output
    assert "\\x1b[31mRED" in r.stdout
    assert not [line for line in r.stdout.splitlines() if line.startswith("Slot 9c")]
    # An error quoting untrusted text stays one line.
    r = run(None, "keys", "verify-attestation", "a\nb\x1b[2J", "f9.pem")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "\x1b" not in r.stderr and "a\\x0ab\\x1b[2J" in r.stderr


def test_backup_dir_must_be_ours_and_not_writable_by_others(tmp_path: Path) -> None:
    from pivtool.piv.constants import Slot
    from pivtool.workflows.certs import old_cert_path

    card = make_card(tmp_path)
    assert run(card, "keys", "generate", "9a").exit_code == 0
    assert run(card, "certs", "selfsign", "9a", "--upn", "a@contoso.com", env=PIN).exit_code == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    r = run(card, "certs", "delete", "9a", "--yes", "--backup-dir", str(shared), env=PIN)
    assert r.exit_code == 2 and "writable by other users (mode 777)" in r.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 4321, 4321)
    r = run(card, "certs", "delete", "9a", "--yes", "--backup-dir", str(foreign), env=PIN)
    assert r.exit_code == 2 and "belongs to another user (uid 4321)" in r.stderr
    assert run(card, "certs", "export", "9a").exit_code == 0  # nothing was deleted
    # A symlink planted where the backup would go is skipped, never written through.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    first = old_cert_path(Slot.AUTHENTICATION, None, mine, 42)
    first.symlink_to(tmp_path / "victim.pem")
    second = old_cert_path(Slot.AUTHENTICATION, None, mine, 42)
    assert second != first and not (tmp_path / "victim.pem").exists()
    r = run(card, "certs", "delete", "9a", "--yes", "--backup-dir", str(mine), env=PIN)
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "victim.pem").exists()


def test_readme_shows_the_prompt_first_and_warns_about_shell_history() -> None:
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    tour = readme.split("## A tour", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert "PIVTOOL_PIN=" not in tour and "PIVTOOL_NEW_PIN=" not in tour
    secrets = readme.split("## Secrets", 1)[1]
    assert secrets.index("--pin-file") < secrets.index("PIVTOOL_PIN")
    assert "bash_history" in secrets
    assert "shell history" in (root / "docs" / "index.md").read_text()
