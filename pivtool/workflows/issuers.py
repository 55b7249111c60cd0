"""Certificate issuers: what turns an enrollment's certificate request into a certificate.

An :class:`Issuer` is given the CSR (and, where the card can attest the key, its
attestation) and returns the certificate. Two ship with pivtool: :class:`LabCAIssuer` (the
lab CA in a directory, ``--ca``) and :class:`CommandIssuer` (an operator's command,
``--issuer-cmd``). ``enroll``, ``recover --reenroll`` and batch use them through the
protocol; ``pivtool/cli/issuer.py`` builds one from the options. :func:`run_hook` runs an
operator's command without a shell and without pivtool's secrets in its environment.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.childenv import child_env
from ..core.errors import PivToolError, UsageError
from ..core.fileio import create_new

if TYPE_CHECKING:  # the lab CA loads lazily
    from ..certs.ca import LabCA


#: A key's attestation as enroll hands it to the issuer: (attestation certificate PEM,
#: the card's f9 certificate PEM).
AttestationPems = tuple[bytes, bytes]


class Issuer(Protocol):
    """Turns a CSR (PEM) into a certificate (PEM). ``None`` issuer = two-step mode."""

    description: str

    def issue(self, csr_pem: bytes, attestation: AttestationPems | None = None) -> bytes:
        """Return the issued certificate as PEM (or DER). *attestation*: the key's, when
        the card can attest it (YubiKey), for an issuer that requires one."""
        ...

    def ca_certificates(self) -> list[Any]:
        """CA certificates to check the chain against (may be empty)."""
        ...

    def preflight(self) -> None:
        """Check everything that can be checked before the card changes (the CA opens with
        its passphrase, the command exists); raise :class:`UsageError` otherwise."""
        ...


@dataclass
class LabCAIssuer:
    """Issue with pivtool's lab CA in a directory."""

    directory: str
    passphrase: bytes | None = field(default=None, repr=False)
    days: int = 365
    description: str = "lab CA"
    #: The CA as opened by :meth:`preflight` (its key decrypted once, not per check).
    _ca: LabCA | None = field(default=None, init=False, repr=False, compare=False)

    def issue(self, csr_pem: bytes, attestation: AttestationPems | None = None) -> bytes:
        """Issue with the smart-card-logon profile (the attestation is checked when the CA
        requires one: ``ca init --require-attestation``)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from ..certs.ca import LabCA

        ca = LabCA.open(self.directory, self.passphrase)
        evidence = None
        if attestation is not None:
            evidence = (x509.load_pem_x509_certificate(attestation[0]),
                        x509.load_pem_x509_certificates(attestation[1]))
        return ca.issue(csr_pem, days=self.days, attestation=evidence).public_bytes(
            Encoding.PEM)

    def ca_certificates(self) -> list[Any]:
        """The lab CA's root."""
        from ..certs.ca import LabCA

        return [LabCA.open(self.directory, self.passphrase).certificate]

    def preflight(self) -> None:
        """Open the CA and decrypt its key now: a missing CA or a wrong passphrase must stop
        enroll before the card changes, not after the key was generated."""
        from ..certs.ca import LabCA
        from ..certs.errors import CertError

        try:
            self._ca = LabCA.open(self.directory, self.passphrase)
        except CertError as e:
            raise UsageError(f"--ca {self.directory}: {e}") from None

    def check_policies(self, policies: list[str]) -> None:
        """Refuse (before the card changes) certificate policies this CA would silently
        drop: an enrollment asked for them, so a certificate without them is not what the
        admin wanted (Entra authentication-binding rules may depend on them)."""
        from ..certs.ca import LabCA

        ca = self._ca or LabCA.open(self.directory, self.passphrase)
        missing = [p for p in policies if p not in set(ca.allowed_policies)]
        if missing:
            raise UsageError(f"--ca {self.directory} does not issue policy "
                             f"{', '.join(missing)}: create the CA with "
                             f"'ca init --allow-policy OID' or drop --policy")


def run_hook(command: str, stdin: bytes, timeout: float, what: str,
             extra_env: dict[str, str] | None = None) -> bytes:
    """Run an operator's hook command (``--issuer-cmd``, ``--revoke-cmd``): split like a
    shell but run without one, *stdin* in, stdout back; a non-zero exit, a timeout or a
    missing program is an error naming *what*."""
    argv = shlex.split(command)
    if not argv:
        raise UsageError(f"empty {what}")
    try:
        # The child never sees pivtool's secrets (PIVTOOL_PIN, ..._MGMT_KEY...).
        proc = subprocess.run(argv, input=stdin, capture_output=True,
                              timeout=timeout, check=False, env=child_env(extra_env))
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise PivToolError(f"{what} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = err[-1] if err else "no error output"
        raise PivToolError(f"{what} exited with {proc.returncode}: {last}")
    return proc.stdout


@dataclass
class CommandIssuer:
    """Run an external command: CSR PEM on stdin, certificate PEM on stdout. Run without a
    shell (wrap it in ``sh -c '...'`` if you need one)."""

    command: str
    timeout: float = 120.0
    bundle: list[Any] = field(default_factory=list)
    description: str = "issuer command"

    def issue(self, csr_pem: bytes, attestation: AttestationPems | None = None) -> bytes:
        """Run the command and return its stdout. With *attestation*, the command finds the
        key's attestation certificate and the card's f9 certificate in the PEM files named
        by ``PIVTOOL_ATTESTATION`` and ``PIVTOOL_ATTESTATION_INTERMEDIATE``."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pivtool-attest-") as tmp:
            extra = {}
            if attestation is not None:
                for name, data in zip(("PIVTOOL_ATTESTATION",
                                       "PIVTOOL_ATTESTATION_INTERMEDIATE"), attestation,
                                      strict=True):
                    path = Path(tmp) / f"{name.lower()}.pem"
                    create_new(path, data, 0o644)
                    extra[name] = str(path)
            out = run_hook(self.command, csr_pem, self.timeout, "issuer command", extra)
        if not out.strip():
            raise PivToolError("issuer command printed no certificate")
        return out

    def ca_certificates(self) -> list[Any]:
        """The CA bundle given with the command, if any."""
        return self.bundle

    def preflight(self) -> None:
        """The command exists and is executable (it is run only after the CSR)."""
        import shutil

        argv = shlex.split(self.command)
        if not argv:
            raise UsageError("empty --issuer-cmd")
        exe = argv[0]
        if os.sep in exe:
            if not os.path.isfile(exe):
                raise UsageError(f"issuer command not found: {exe}")
            if not os.access(exe, os.X_OK):
                raise UsageError(f"issuer command is not executable: {exe}")
        elif shutil.which(exe) is None:
            raise UsageError(f"issuer command not found on PATH: {exe}")
