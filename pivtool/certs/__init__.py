"""pivtool.certs: CSRs, certificates, the Entra CBA profile, certificateUserIds and a lab CA.

A pure library: no card I/O, no printing. Works with any ``cryptography`` private key,
including card-backed ones, because it only calls ``public_key()`` and the builders' ``sign``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are loaded on first use (PEP 562): importing one submodule, as `pivtool info` does,
# must not pay for the lab CA, CSR and Entra modules.
_EXPORTS: dict[str, str] = {
    "CertError": "errors",
    "CertInputError": "errors",
    "CertMismatchError": "errors",
    "CertProfile": "profile",
    "CertRequest": "profile",
    "CertRequestRefusedError": "errors",
    "CertSummary": "inspect",
    "CertUserId": "entra",
    "ENTRA_SMARTCARD_LOGON": "profile",
    "Finding": "check",
    "IssuedRecord": "ca",
    "LabCA": "ca",
    "LabCAError": "errors",
    "build_csr": "csr",
    "build_self_signed": "csr",
    "certificate_user_id_gaps": "entra",
    "certificate_user_ids": "entra",
    "check_entra_certificate": "check",
    "default_hash": "csr",
    "format_dn": "entra",
    "graph_patch_body": "entra",
    "key_algorithm_name": "inspect",
    "load_certificate": "inspect",
    "load_certificates": "inspect",
    "load_pkcs12": "inspect",
    "load_private_key": "inspect",
    "parse_eku": "profile",
    "parse_name": "profile",
    "parse_oid": "profile",
    "public_key_matches": "inspect",
    "summarize": "inspect",
}



__all__ = [
    "ENTRA_SMARTCARD_LOGON",
    "CertError",
    "CertInputError",
    "CertMismatchError",
    "CertProfile",
    "CertRequest",
    "CertRequestRefusedError",
    "CertSummary",
    "CertUserId",
    "Finding",
    "IssuedRecord",
    "LabCA",
    "LabCAError",
    "build_csr",
    "build_self_signed",
    "certificate_user_id_gaps",
    "certificate_user_ids",
    "check_entra_certificate",
    "default_hash",
    "format_dn",
    "graph_patch_body",
    "key_algorithm_name",
    "load_certificate",
    "load_certificates",
    "load_pkcs12",
    "load_private_key",
    "parse_eku",
    "parse_name",
    "parse_oid",
    "public_key_matches",
    "summarize",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pivtool.certs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
