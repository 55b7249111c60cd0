"""PIV reset on a YubiKey: back up what can be backed up, block PIN and PUK on purpose (the
card only resets when both are blocked), reset, and report exactly what was destroyed."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import (
    BlockedError,
    InvalidPinError,
    NotSupportedError,
    PivToolError,
    UsageError,
)
from ..core.fileio import create_new
from ..piv.session import PivSession
from .auth import pin_tries, puk_tries
from .state import CardSnapshot


@dataclass
class ResetPlan:
    """What a reset would destroy, for the confirmation and the report."""

    serial: int | None
    destroys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line per item."""
        if not self.destroys:
            return "The card holds no keys or certificates; PIN, PUK and management key " \
                   "go back to factory defaults."
        return "A PIV reset destroys:\n" + "\n".join(f"  - {d}" for d in self.destroys) + \
            "\nand sets PIN, PUK and management key back to factory defaults."


def plan_reset(state: CardSnapshot) -> ResetPlan:
    """List every key and certificate a reset would destroy."""
    items = []
    for s in state.slots:
        parts = []
        if s.key_algorithm:
            parts.append(f"{s.key_algorithm} key ({s.origin})")
        if s.certificate is not None:
            from ..certs.inspect import summarize

            summ = summarize(s.certificate)
            parts.append(f"certificate {summ.subject}")
        if parts:
            items.append(f"slot {s.slot.label}: " + " and ".join(parts))
    if state.chuid_guid:
        items.append("the CHUID and CCC objects")
    return ResetPlan(state.serial, items)


def backup_certificates(state: CardSnapshot, directory: Path) -> list[Path]:
    """Write every certificate on the card to *directory* as PEM (created 0700, files 0600:
    certificates are public, but the folder says who holds which key)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    written = []
    certs = [s for s in state.slots if s.certificate is not None]
    if not certs:
        return []
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for s in certs:
            data = s.certificate.public_bytes(Encoding.PEM)
            written.append(_write_new(directory, f"slot-{s.slot.value:02x}", data))
    except OSError as e:
        # Nothing has been destroyed yet: stop here with one line (exit 2).
        raise UsageError(f"cannot save the certificates to {directory}: "
                         f"{e.strerror or e}") from None
    return written


def _write_new(directory: Path, stem: str, data: bytes) -> Path:
    """Write *data* to ``stem.pem`` (0600) without ever replacing a different file: a
    re-run after a pulled card (same --backup-dir, or the same second) would otherwise
    overwrite the old certificate's backup with the new certificate."""
    n = 0
    while True:
        path = directory / (f"{stem}.pem" if n == 0 else f"{stem}-{n}.pem")
        try:
            create_new(path, data)
        except FileExistsError:
            if path.read_bytes() == data:
                return path  # this very certificate is saved already
            n += 1
            continue
        return path


def default_backup_dir(serial: int | None) -> Path:
    """``pivtool-backup-<serial>-<UTC time>`` in the current directory."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"pivtool-backup-{serial if serial is not None else 'card'}-{stamp}")


def _random_wrong(length: int, avoid: bytes | None = None) -> bytes:
    while True:
        value = "".join(secrets.choice("0123456789") for _ in range(length)).encode()
        if value != avoid:
            return value


def block_pin(session: PivSession) -> int:
    """Spend every PIN try with random wrong PINs; returns how many were spent."""
    spent = 0
    for _ in range(256):  # bounded: a card that never blocks is broken
        left = pin_tries(session).left
        if left == 0:
            return spent
        try:
            session.verify_pin(_random_wrong(8))
            # Guessed the real PIN (1 in 10^8): clear the status and keep going.
            session.unverify_pin()
        except InvalidPinError:
            spent += 1
        except BlockedError:
            return spent
    raise PivToolError("the PIN did not block after 256 wrong tries")


def block_puk(session: PivSession) -> int:
    """Spend every PUK try with random wrong PUKs; returns how many were spent."""
    spent = 0
    for _ in range(256):
        left = puk_tries(session).left
        if left == 0:
            return spent
        try:
            session.unblock_pin(_random_wrong(8), _random_wrong(8))
        except InvalidPinError:
            spent += 1
        except BlockedError:
            return spent
    raise PivToolError("the PUK did not block after 256 wrong tries")


@dataclass
class ResetResult:
    """What happened."""

    destroyed: list[str]
    backup: list[str]
    pin_tries_spent: int
    puk_tries_spent: int


def require_resettable(session: PivSession) -> None:
    """Raise :class:`NotSupportedError` with what to do instead on a card pivtool cannot
    reset (a generic PIV card: SP 800-73-4 has no reset; only its issuer can)."""
    if not session.is_yubikey:
        raise NotSupportedError(
            "this generic PIV card cannot be reset by pivtool: only its issuer can "
            "(card management system or the vendor's tool)")


def reset_card(session: PivSession, plan: ResetPlan, backup: list[Path]) -> ResetResult:
    """Block PIN and PUK, then RESET. Call only after confirmation and backup."""
    require_resettable(session)
    pin_spent = block_pin(session)
    puk_spent = block_puk(session)
    session.reset()
    return ResetResult(plan.destroys, [str(p) for p in backup], pin_spent, puk_spent)

