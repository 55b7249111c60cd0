"""pivtool.certs: CSRs, certificates, the Entra CBA profile, certificateUserIds and a lab CA.

A pure library: no card I/O, no printing. Works with any ``cryptography`` private key,
including card-backed ones, because it only calls ``public_key()`` and the builders' ``sign``.
"""

from .ca import IssuedRecord, LabCA
from .check import Finding, check_entra_certificate
from .csr import build_csr, build_self_signed, default_hash
from .entra import (
    CertUserId,
    certificate_user_id_gaps,
    certificate_user_ids,
    format_dn,
    graph_patch_body,
)
from .errors import (
    CertError,
    CertInputError,
    CertMismatchError,
    CertRequestRefusedError,
    LabCAError,
)
from .inspect import (
    CertSummary,
    key_algorithm_name,
    load_certificate,
    load_certificates,
    load_pkcs12,
    load_private_key,
    public_key_matches,
    summarize,
)
from .profile import (
    ENTRA_SMARTCARD_LOGON,
    CertProfile,
    CertRequest,
    parse_eku,
    parse_name,
    parse_oid,
)

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
