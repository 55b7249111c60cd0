"""Microsoft Entra ``certificateUserIds`` values for a certificate.

Sources (checked 2025/2026):

* "Mapping to the certificateUserIds attribute in Microsoft Entra ID"
  (learn.microsoft.com/entra/identity/authentication/concept-certificate-based-authentication-certificateuserids):
  the seven patterns, "X509:<Mapping> prefixes are case-sensitive", up to 10 values (older
  revisions: 4, then 5) of at most 1024 characters, each unique in the tenant, the Graph PATCH
  body ``{"authorizationInfo": {"certificateUserIds": [...]}}``, and the worked
  IssuerAndSerialNumber example ``...<SR>b24134139f069b49997212a86ba0ef48`` for the serial
  48efa06ba8127299499b069f133441b2, i.e. the serial's bytes reversed.
* "Microsoft Entra certificate-based authentication technical deep dive", section
  "Achieve higher security with certificate bindings": PrincipalName, RFC822Name,
  IssuerAndSubject and Subject are *low-affinity*; SKI, SHA1PublicKey and
  IssuerAndSerialNumber are *high-affinity*. (Its prose says "three" low-affinity mappings
  but its table lists four; we follow the table.)
* [MS-PKCA] 3.1.5.2.1.3 "Explicit Mapping" (the same strings in AD altSecurityIdentities):
  Issuer/Subject are the name fields with CR/LF separators replaced by ","; SHA1-PUKEY is
  the "SHA1 hash of public key". [MS-PKCA] 3.1.5.2.1.5 classes the same three as strong.

Choices where the sources disagree or are silent — each is also recorded in ``note``:

* **Serial**: the byte-reversed (little-endian, Windows ``CERT_INFO`` order) hex of the DER
  INTEGER content, as in Microsoft's worked example. Microsoft's own Entra PowerShell module
  (``Get-EntraUserCertificateUserIdsFromCertificate``) reverses .NET's already little-endian
  ``GetSerialNumber()`` and so emits the *big-endian* serial; we do not follow it.
* **SHA1-PUKEY**: SHA-1 over the public key itself — the contents of the subjectPublicKey
  BIT STRING, without the AlgorithmIdentifier (what .NET's ``GetPublicKey()`` returns and
  what RFC 5280 §4.2.1.2 method 1 hashes for an SKI). The Entra PowerShell module instead
  uses the certificate thumbprint (SHA-1 of the whole DER certificate), as do many admin
  scripts. ``sha1_pukey="thumbprint"`` or ``"both"`` emits that variant too.
* **DN order**: RDNs in the order they are encoded in the certificate, which for a normal
  certificate is most significant first (``DC=com,DC=contoso,CN=CONTOSO-DC-CA`` in
  Microsoft's example) — the reverse of RFC 4514 string order. Separator "," with no spaces.
  Attribute keys are CryptoAPI's X.500 keys (``S`` for state, ``E`` for e-mail, ``OID.x.y``
  for unknown types); values are quoted with ``"`` as CertNameToStr does when they contain
  ``, + = " < > # ;``, a newline or leading/trailing spaces. Attributes of a multi-valued
  RDN are joined with ``+`` (Microsoft does not document this case).
* **Hex case**: lower case, like Microsoft's examples. **SKI**: the certificate's
  SubjectKeyIdentifier extension value; when the extension is absent no SKI value is
  emitted (Entra compares against the extension, so a computed value could never match) and
  :func:`certificate_user_id_gaps` says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

from .errors import CertInputError
from .inspect import get_emails, get_extension, get_upns

__all__ = [
    "HIGH",
    "LOW",
    "MAX_VALUES",
    "MAX_VALUE_LENGTH",
    "Affinity",
    "CertUserId",
    "certificate_thumbprint",
    "certificate_user_id_gaps",
    "certificate_user_ids",
    "format_dn",
    "graph_patch_body",
    "reversed_serial_hex",
    "sha1_public_key",
    "subject_public_key_bits",
    "validate_certificate_user_id",
]

Affinity = Literal["high", "low"]
HIGH: Affinity = "high"
LOW: Affinity = "low"

#: Entra limits on the certificateUserIds attribute.
MAX_VALUES = 10
MAX_VALUE_LENGTH = 1024

# Case-sensitive prefixes Entra accepts. "X509:<I>" must be followed by <S> or <SR> later on.
_PREFIXES = (
    "X509:<PN>",
    "X509:<RFC822>",
    "X509:<I>",
    "X509:<S>",
    "X509:<SKI>",
    "X509:<SHA1-PUKEY>",
)

# CryptoAPI's CERT_X500_NAME_STR keys (CertNameToStr / CertStrToName).
_DN_KEYS: dict[ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "S",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.TITLE: "T",
    NameOID.GIVEN_NAME: "G",
    NameOID.INITIALS: "I",
    NameOID.SURNAME: "SN",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.POSTAL_CODE: "PostalCode",
    NameOID.DN_QUALIFIER: "dnQualifier",
}
_QUOTE_TRIGGERS = frozenset(',+="<>#;\n\r')


@dataclass(frozen=True)
class CertUserId:
    """One certificateUserIds value a certificate supports.

    ``kind`` is Microsoft's "certificate mapping field" name (PrincipalName, RFC822Name,
    IssuerAndSubject, Subject, SKI, SHA1PublicKey, IssuerAndSerialNumber); ``value`` is the
    exact string to store; ``note`` explains how it was derived.
    """

    kind: str
    value: str
    affinity: Affinity
    note: str = ""

    def __str__(self) -> str:
        return self.value

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with keys kind, value, affinity, note."""
        return {
            "kind": self.kind,
            "value": self.value,
            "affinity": self.affinity,
            "note": self.note,
        }


# --------------------------------------------------------------------------- field formats


def _dn_value(value: str | bytes) -> str:
    if isinstance(value, bytes):
        # BIT STRING / OCTET STRING attributes: CertNameToStr prints these as hex.
        return "#" + value.hex()
    needs_quotes = (
        value == "" or value != value.strip() or any(ch in _QUOTE_TRIGGERS for ch in value)
    )
    if needs_quotes:
        return '"' + value.replace('"', '""') + '"'
    return value


def _dn_attribute(attribute: x509.NameAttribute[Any]) -> str:
    key = _DN_KEYS.get(attribute.oid, "OID." + attribute.oid.dotted_string)
    return f"{key}={_dn_value(attribute.value)}"


def format_dn(name: x509.Name) -> str:
    """Format a DN the way Microsoft stores it in certificateUserIds/altSecurityIdentities.

    RDNs in encoded order (most significant first for a normal certificate), joined by ","
    without spaces; attributes of a multi-valued RDN joined by "+". Example: a name whose
    RFC 4514 string is ``CN=Contoso Issuing CA,O=Contoso,C=US`` formats as
    ``C=US,O=Contoso,CN=Contoso Issuing CA``.
    """
    return ",".join("+".join(_dn_attribute(a) for a in rdn) for rdn in name.rdns)


def _serial_der_bytes(serial: int) -> bytes:
    # The DER INTEGER content: minimal two's complement, so a positive serial whose top bit
    # is set keeps its leading 0x00 (it is part of the value Windows stores).
    if serial < 0:
        return serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return serial.to_bytes(max(1, (serial.bit_length() + 8) // 8), "big")


def reversed_serial_hex(serial: int) -> str:
    """The serial's DER INTEGER bytes in reverse order, as lower-case hex.

    ``0x48efa06ba8127299499b069f133441b2`` -> ``b24134139f069b49997212a86ba0ef48``.
    """
    return _serial_der_bytes(serial)[::-1].hex()


def _der_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return (tag, content_start, content_end) of the DER TLV at ``pos``."""
    if pos + 2 > len(data):
        raise CertInputError("truncated DER in certificate")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertInputError("malformed DER length in certificate")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise CertInputError("truncated DER in certificate")
    return tag, pos, pos + length


def subject_public_key_bits(cert: x509.Certificate) -> bytes:
    """The certificate's subjectPublicKey BIT STRING contents, exactly as encoded.

    Read from the TBSCertificate rather than re-encoded from the parsed key, so a compressed
    EC point stays compressed. For RSA this is the DER RSAPublicKey; for EC the X9.62 point;
    for Ed25519 the 32-byte key.
    """
    tbs = cert.tbs_certificate_bytes
    _, pos, _ = _der_header(tbs, 0)
    tag, _, next_pos = _der_header(tbs, pos)
    if tag == 0xA0:  # explicit [0] version
        pos = next_pos
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        _, _, pos = _der_header(tbs, pos)
    tag, spki_start, spki_end = _der_header(tbs, pos)
    if tag != 0x30:
        raise CertInputError("certificate has a malformed SubjectPublicKeyInfo")
    _, _, pos = _der_header(tbs, spki_start)  # AlgorithmIdentifier
    tag, bits_start, bits_end = _der_header(tbs, pos)
    if tag != 0x03 or bits_end > spki_end or bits_end <= bits_start or tbs[bits_start] != 0:
        raise CertInputError("certificate has a malformed subjectPublicKey BIT STRING")
    return tbs[bits_start + 1 : bits_end]


def sha1_public_key(cert: x509.Certificate) -> str:
    """SHA-1 (lower-case hex) of the subjectPublicKey BIT STRING contents — our SHA1-PUKEY."""
    return hashlib.sha1(subject_public_key_bits(cert)).hexdigest()


def certificate_thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 (lower-case hex) of the whole DER certificate (Windows' "thumbprint")."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------- the values


def certificate_user_ids(
    cert: x509.Certificate,
    *,
    sha1_pukey: Literal["public-key", "thumbprint", "both"] = "public-key",
) -> list[CertUserId]:
    """Every certificateUserIds value ``cert`` supports, in Microsoft's table order.

    Values longer than :data:`MAX_VALUE_LENGTH` are still returned (with a note);
    :func:`graph_patch_body` refuses them. See :func:`certificate_user_id_gaps` for the forms
    the certificate cannot support.
    """
    ids: list[CertUserId] = []
    for upn in get_upns(cert):
        ids.append(CertUserId("PrincipalName", f"X509:<PN>{upn}", LOW, "SAN otherName UPN"))
    for email in get_emails(cert):
        ids.append(CertUserId("RFC822Name", f"X509:<RFC822>{email}", LOW, "SAN rfc822Name"))

    issuer, subject = format_dn(cert.issuer), format_dn(cert.subject)
    multi = any(len(rdn) > 1 for rdn in (*cert.issuer.rdns, *cert.subject.rdns))
    dn_note = "RDNs in encoded order, ',' without spaces" + (
        "; multi-valued RDN joined with '+' (undocumented by Microsoft)" if multi else ""
    )
    if issuer and subject:
        ids.append(CertUserId("IssuerAndSubject", f"X509:<I>{issuer}<S>{subject}", LOW, dn_note))
    if subject:
        ids.append(CertUserId("Subject", f"X509:<S>{subject}", LOW, dn_note))

    ski = get_extension(cert, x509.SubjectKeyIdentifier)
    if ski is not None and ski.digest:
        ids.append(
            CertUserId(
                "SKI", f"X509:<SKI>{ski.digest.hex()}", HIGH, "SubjectKeyIdentifier extension"
            )
        )

    thumb = certificate_thumbprint(cert)
    if sha1_pukey in ("public-key", "both"):
        ids.append(
            CertUserId(
                "SHA1PublicKey",
                f"X509:<SHA1-PUKEY>{sha1_public_key(cert)}",
                HIGH,
                "SHA-1 of the subjectPublicKey bits ([MS-PKCA] 'SHA1 hash of public key'); "
                "Microsoft's Entra PowerShell module uses the certificate thumbprint "
                f"{thumb} instead",
            )
        )
    if sha1_pukey in ("thumbprint", "both"):
        ids.append(
            CertUserId(
                "SHA1PublicKey",
                f"X509:<SHA1-PUKEY>{thumb}",
                HIGH,
                "certificate thumbprint (SHA-1 of the DER certificate), the variant Microsoft's "
                "Entra PowerShell module emits",
            )
        )

    if issuer:
        big_endian = _serial_der_bytes(cert.serial_number).hex()
        ids.append(
            CertUserId(
                "IssuerAndSerialNumber",
                f"X509:<I>{issuer}<SR>{reversed_serial_hex(cert.serial_number)}",
                HIGH,
                "serial bytes reversed as in Microsoft's example "
                f"(big-endian serial is {big_endian})",
            )
        )

    return [
        CertUserId(i.kind, i.value, i.affinity, i.note + f"; exceeds {MAX_VALUE_LENGTH} characters")
        if len(i.value) > MAX_VALUE_LENGTH
        else i
        for i in ids
    ]


def certificate_user_id_gaps(cert: x509.Certificate) -> list[str]:
    """One-line reasons for each certificateUserIds form ``cert`` cannot provide."""
    gaps: list[str] = []
    if not get_upns(cert):
        gaps.append("PrincipalName: no UPN otherName in the subject alternative name")
    if not get_emails(cert):
        gaps.append("RFC822Name: no rfc822Name in the subject alternative name")
    if len(cert.subject) == 0:
        gaps.append("Subject, IssuerAndSubject: the subject DN is empty")
    if len(cert.issuer) == 0:
        gaps.append("IssuerAndSerialNumber, IssuerAndSubject: the issuer DN is empty")
    ski = get_extension(cert, x509.SubjectKeyIdentifier)
    if ski is None or not ski.digest:
        gaps.append("SKI: the certificate has no SubjectKeyIdentifier extension")
    return gaps


def validate_certificate_user_id(value: str) -> str:
    """Check one value against Entra's documented rules; return it or raise CertInputError."""
    if not isinstance(value, str) or not value:
        raise CertInputError("certificateUserIds value is empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise CertInputError(
            f"certificateUserIds value is {len(value)} characters; "
            f"Entra allows at most {MAX_VALUE_LENGTH}"
        )
    if not value.startswith(_PREFIXES):
        raise CertInputError(
            f"certificateUserIds value must start with one of {', '.join(_PREFIXES)} "
            f"(case-sensitive): {value[:60]!r}"
        )
    if value.startswith("X509:<I>") and "<S>" not in value and "<SR>" not in value:
        raise CertInputError(f"X509:<I> value needs <S>subject or <SR>serial: {value[:60]!r}")
    if value.endswith(">"):
        raise CertInputError(f"certificateUserIds value has an empty field: {value[:60]!r}")
    return value


def graph_patch_body(
    ids: Iterable[CertUserId | str],
    max_values: int = MAX_VALUES,
    *,
    existing: Iterable[str] = (),
) -> dict[str, Any]:
    """The Microsoft Graph ``PATCH /users/{id}`` body that sets certificateUserIds.

    The PATCH *replaces* the attribute, so pass the user's current values as ``existing`` to
    keep them (they come first). Exact duplicates are dropped. Raises
    :class:`CertInputError` for a value over 1024 characters, a bad prefix, or more than
    ``max_values`` values (``max_values`` cannot exceed Entra's limit of 10).
    """
    if not 1 <= max_values <= MAX_VALUES:
        raise CertInputError(f"max_values must be between 1 and {MAX_VALUES} (Entra's limit)")
    values: list[str] = []
    for item in (*existing, *ids):
        value = validate_certificate_user_id(str(item))
        if value not in values:
            values.append(value)
    if len(values) > max_values:
        raise CertInputError(
            f"{len(values)} certificateUserIds values given; at most {max_values} are allowed"
        )
    return {"authorizationInfo": {"certificateUserIds": values}}


#: The Graph body's value order: the high-affinity bindings first (issuer+serial, SKI, public
#: key), then the UPN. RFC822, Subject and Issuer+Subject are left out on purpose: they bind
#: any certificate carrying the same name.
GRAPH_ORDER = ("IssuerAndSerialNumber", "SKI", "SHA1PublicKey", "PrincipalName")


def graph_selection(ids: list[CertUserId], limit: int = 10
                    ) -> tuple[list[CertUserId], list[CertUserId]]:
    """Pick the values for a Graph PATCH body in :data:`GRAPH_ORDER`, at most *limit* and
    none over Entra's 1024 characters; return (chosen, left out)."""
    chosen = [i for kind in GRAPH_ORDER for i in ids
              if i.kind == kind and len(i.value) <= MAX_VALUE_LENGTH]
    left = [i for i in ids if i not in chosen]
    return chosen[:limit], chosen[limit:] + left
