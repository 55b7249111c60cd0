"""What an enrollment is asked to do, what it reports, and the checks made before the card.

:class:`EnrollOptions` (no secrets: those come from the Prompter), :class:`Step` and
:class:`EnrollResult` (what ``enroll --json`` prints), and :func:`validate_options`:
everything about the options that can be refused before the first APDU (exit 2, the card
unchanged). Shared by ``enroll``, ``recover --reenroll``, ``roster`` checks and batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..piv.constants import KeyType, PinPolicy, TouchPolicy
from ..piv.session import PivSession
from ..piv.version import check_key_support

#: Algorithms iOS (CryptoTokenKit via Yubico Authenticator) can use for signing.
IOS_ALGORITHMS = frozenset({KeyType.RSA1024, KeyType.RSA2048, KeyType.ECCP256,
                            KeyType.ECCP384})


@dataclass
class EnrollOptions:
    """What to enroll. Secrets are not here: they come from the Prompter."""

    upn: str
    emails: list[str] = field(default_factory=list)
    subject: str | None = None
    algorithm: KeyType = KeyType.ECCP256
    pin_policy: PinPolicy = PinPolicy.DEFAULT
    touch_policy: TouchPolicy = TouchPolicy.DEFAULT
    macos: bool = False
    policies: list[str] = field(default_factory=list)
    force: bool = False
    random_pin: bool = False
    random_puk: bool = False
    secrets_out: str | None = None
    backup_dir: str | None = None
    allow_non_ios: bool = False
    csr_out: str | None = None
    retry_force: bool = False
    #: On a card that cannot say whether its PUK is the factory default: leave it (the
    #: user knows it is not). Without it enroll replaces the PUK there.
    keep_puk: bool = False


@dataclass
class Step:
    """One reported step."""

    name: str
    status: str  # "done", "skipped", "pending", "failed"
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """JSON form."""
        return {"step": self.name, "status": self.status, "detail": self.detail}


@dataclass
class EnrollResult:
    """The outcome (no secrets)."""

    serial: int | None
    upn: str
    steps: list[Step] = field(default_factory=list)
    status: str = "enrolled"  # or "pending-certificate", "already-enrolled"
    certificate: Any = None
    certificate_user_ids: list[dict[str, str]] = field(default_factory=list)
    csr_file: str | None = None
    secrets_file: str | None = None
    backup: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON (schema ``pivtool.enroll/1``)."""
        from ..certs.inspect import summarize

        return {
            "schema": "pivtool.enroll/1",
            "status": self.status,
            "serial": self.serial,
            "upn": self.upn,
            "steps": [s.to_json() for s in self.steps],
            "certificate": summarize(self.certificate).to_json() if self.certificate else None,
            "certificate_user_ids": self.certificate_user_ids,
            "csr_file": self.csr_file,
            "secrets_file": self.secrets_file,
            "backup": self.backup,
        }


def validate_options(opts: EnrollOptions, session: PivSession | None = None) -> None:
    """Everything that can be checked before the card is touched."""
    from ..certs.profile import CertRequest

    CertRequest.create(subject=opts.subject, upns=[opts.upn], emails=opts.emails,
                       policies=opts.policies)
    if opts.algorithm not in IOS_ALGORITHMS and not opts.allow_non_ios:
        raise UsageError(f"{opts.algorithm.label} cannot be used by iOS (CryptoTokenKit takes "
                         "RSA 1024/2048 and ECC P-256/P-384 only); use --allow-non-ios to "
                         "enroll it anyway")
    if opts.algorithm is KeyType.X25519:
        raise UsageError("x25519 keys cannot sign: no certificate request is possible")
    if opts.keep_puk and opts.random_puk:
        raise UsageError("--keep-puk and --random-puk contradict each other")
    if (opts.random_pin or opts.random_puk) and not opts.secrets_out:
        raise UsageError("--random-pin/--random-puk need --secrets-out FILE (written 0600)")
    if opts.secrets_out and os.path.exists(opts.secrets_out):
        raise UsageError(f"{opts.secrets_out} exists; refusing to overwrite it")
    if opts.csr_out and os.path.exists(opts.csr_out) and not opts.force:
        raise UsageError(f"{opts.csr_out} exists; use --force to overwrite it")
    # Where the files go must be writable before the card changes: a secrets file that
    # cannot be written stops enroll with the PIN unchanged, a CSR that cannot be written
    # would come after the slot's key was replaced.
    for out in (opts.secrets_out, opts.csr_out):
        if out:
            _check_writable(out)
    if opts.backup_dir:
        _check_dir_creatable(opts.backup_dir)
    if session is not None:
        check_key_support(session.version, opts.algorithm, opts.pin_policy, opts.touch_policy)


def _check_writable(path: str) -> None:
    """A usage error unless *path* can be created (or replaced) as a regular file."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: directory {parent} is not writable")


def _check_dir_creatable(path: str) -> None:
    """A usage error unless *path* is (or can be created as) a writable directory."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"{path} is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write into {path}")
        return
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {path}: {parent} is not writable")

