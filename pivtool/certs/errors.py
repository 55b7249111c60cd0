"""Exceptions raised by :mod:`pivtool.certs`.

Every message is a single line that is safe to show to a user: it never contains a password,
passphrase, private key material or a traceback-style dump of the input. The CLI maps these
classes to exit codes in one place; library code only raises them.
"""

from __future__ import annotations

__all__ = [
    "CertError",
    "CertInputError",
    "CertMismatchError",
    "CertRequestRefusedError",
    "LabCAError",
]


class CertError(Exception):
    """Base class for every error raised by :mod:`pivtool.certs`."""


class CertInputError(CertError):
    """Input could not be used: malformed PEM/DER/PKCS#12, bad subject DN, bad OID, wrong
    password, a value that exceeds a documented limit, ..."""


class CertMismatchError(CertError):
    """Two objects that must belong together do not (for example a private key and the
    certificate it is supposed to match)."""


class CertRequestRefusedError(CertError):
    """A certificate signing request was well formed but the lab CA's profile refuses it
    (bad signature, no UPN or e-mail in the SAN, malformed UPN, ...)."""


class LabCAError(CertError):
    """The lab CA directory is missing, already initialised, inconsistent, or an operation on
    it (such as revoking an unknown serial) cannot be carried out."""
