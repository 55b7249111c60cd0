"""Certificate profiles as data, and the parsing helpers that turn user input into them.

A :class:`CertRequest` says *what* a certificate (or CSR) should contain; :mod:`.csr` and
:mod:`.ca` turn it into DER with cryptography's builders. Nothing here touches a key.

The Entra CBA / Windows smart-card-logon profile (see ``/work/shared/mission.md``):

* SAN otherName UPN, type-id 1.3.6.1.4.1.311.20.2.3, value a DER UTF8String, and/or an
  rfc822Name;
* EKU Smart Card Logon (1.3.6.1.4.1.311.20.2.2) and Client Authentication (1.3.6.1.5.5.7.3.2);
* key usage digitalSignature, plus keyEncipherment for RSA keys (Windows uses RSA key
  transport with the smart-card key; ECC keys can't encipher, so the bit would be wrong there).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .errors import CertInputError

__all__ = [
    "EKU_NAMES",
    "ENTRA_SMARTCARD_LOGON",
    "KEY_USAGE_FLAGS",
    "UPN_OID",
    "CertProfile",
    "CertRequest",
    "decode_upn",
    "eku_display_name",
    "encode_upn",
    "key_usage_extension",
    "parse_eku",
    "parse_email",
    "parse_name",
    "parse_oid",
    "parse_upn",
    "upn_other_name",
]

#: SAN otherName type-id of the Microsoft User Principal Name (szOID_NT_PRINCIPAL_NAME).
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

#: Friendly EKU names accepted on input (and used for display). Dotted OIDs are accepted too.
EKU_NAMES: Mapping[str, ObjectIdentifier] = {
    "smartcard-logon": ExtendedKeyUsageOID.SMARTCARD_LOGON,  # 1.3.6.1.4.1.311.20.2.2
    "client-auth": ExtendedKeyUsageOID.CLIENT_AUTH,  # 1.3.6.1.5.5.7.3.2
    "server-auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "email-protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "code-signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}

#: Key-usage flag names, exactly the keyword arguments of :class:`cryptography.x509.KeyUsage`.
KEY_USAGE_FLAGS: tuple[str, ...] = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)

# Short attribute names accepted in subject strings on top of cryptography's RFC 4514 set
# (CN, L, ST, O, OU, C, STREET, DC, UID). These are the names Windows and OpenSSL users type.
_NAME_OVERRIDES: dict[str, ObjectIdentifier] = {
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "G": NameOID.GIVEN_NAME,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
}

_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
# A domain as Entra accepts it in a UPN: one or more LDH labels. Single-label ("bob@woodgrove")
# is allowed on purpose: Microsoft documents non-routable UPNs as valid certificateUserIds.
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_LOCAL_FORBIDDEN = re.compile(r"[\s@\x00-\x1f\x7f]")


def parse_oid(text: str | ObjectIdentifier) -> ObjectIdentifier:
    """Parse a dotted OID such as ``1.3.6.1.4.1.311.20.2.2``.

    Raises :class:`CertInputError` for anything that is not a well-formed dotted OID.
    """
    if isinstance(text, ObjectIdentifier):
        return text
    value = text.strip()
    if not _OID_RE.match(value):
        raise CertInputError(f"not a dotted object identifier: {value[:80]!r}")
    try:
        return ObjectIdentifier(value)
    except ValueError as e:
        raise CertInputError(f"not a valid object identifier: {value[:80]!r}") from e


def parse_eku(text: str | ObjectIdentifier) -> ObjectIdentifier:
    """Parse an EKU given as a friendly name (see :data:`EKU_NAMES`) or as a dotted OID."""
    if isinstance(text, ObjectIdentifier):
        return text
    key = text.strip().lower()
    if key in EKU_NAMES:
        return EKU_NAMES[key]
    if key and key[0].isdigit():
        return parse_oid(key)
    names = ", ".join(EKU_NAMES)
    raise CertInputError(
        f"unknown extended key usage {text[:80]!r} (use one of {names}, or an OID)"
    )


def eku_display_name(oid: ObjectIdentifier) -> str:
    """Return the friendly name of an EKU OID, or its dotted string if it has none."""
    for name, known in EKU_NAMES.items():
        if known == oid:
            return name
    return oid.dotted_string


def parse_name(text: str | x509.Name) -> x509.Name:
    """Parse an RFC 4514 distinguished name (``CN=Alice,O=Contoso,C=US``).

    As in RFC 4514 the *last* RDN in the string is the most significant (encoded first).
    Also accepts ``E=``/``EMAIL=``, ``S=``, ``G=``, ``SN=``, ``T=`` and ``SERIALNUMBER=``.
    Raises :class:`CertInputError` with a one-line reason on malformed input.
    """
    if isinstance(text, x509.Name):
        return text
    value = text.strip()
    if not value:
        raise CertInputError("subject is empty")
    try:
        return x509.Name.from_rfc4514_string(value, _NAME_OVERRIDES)
    except (ValueError, TypeError) as e:
        # cryptography's messages are often empty; say what we tried instead.
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "syntax error"
        raise CertInputError(
            f"invalid subject DN {value[:120]!r}: {detail} "
            "(expected RFC 4514, e.g. CN=Alice,O=Contoso)"
        ) from e


def parse_upn(text: str) -> str:
    """Validate a user principal name syntactically (``user@domain``) and return it stripped.

    The domain may be a single label (``bob@woodgrove``): Microsoft documents such
    non-routable UPNs as valid. Raises :class:`CertInputError` otherwise.
    """
    value = text.strip()
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain:
        raise CertInputError(f"UPN must look like user@domain: {value[:120]!r}")
    if _LOCAL_FORBIDDEN.search(local):
        raise CertInputError(
            f"UPN user part contains '@', spaces or control characters: {value[:120]!r}"
        )
    if not _DOMAIN_RE.match(domain):
        raise CertInputError(f"UPN domain is not a valid DNS name: {value[:120]!r}")
    return value


def parse_email(text: str) -> str:
    """Validate an e-mail address for an rfc822Name (ASCII ``local@domain``)."""
    value = text.strip()
    if not value.isascii():
        # rfc822Name is an IA5String; internationalised mailboxes need SmtpUTF8Mailbox instead.
        raise CertInputError(f"e-mail address must be ASCII for an rfc822Name: {value[:120]!r}")
    try:
        return parse_upn(value)
    except CertInputError as e:
        raise CertInputError(f"e-mail address must look like user@domain: {value[:120]!r}") from e


def encode_upn(upn: str) -> bytes:
    """DER-encode ``upn`` as a UTF8String (tag 0x0C), the value of the UPN otherName.

    Written by hand rather than via an ASN.1 library because it is one primitive TLV; the
    length uses the DER short/long form rules.
    """
    body = upn.encode("utf-8")
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return b"\x0c" + length + body


def decode_upn(value: bytes) -> str:
    """Decode the DER value of a UPN otherName (a UTF8String) back into text.

    Raises :class:`CertInputError` if it is not a single well-formed DER UTF8String.
    """
    if len(value) < 2 or value[0] != 0x0C:
        raise CertInputError("UPN otherName value is not a DER UTF8String")
    first = value[1]
    if first < 0x80:
        n, offset = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(value) < 2 + count:
            raise CertInputError("UPN otherName value has a malformed length")
        n, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if offset + n != len(value):
        raise CertInputError("UPN otherName value length does not match its contents")
    try:
        return value[offset:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CertInputError("UPN otherName value is not valid UTF-8") from e


def upn_other_name(upn: str) -> x509.OtherName:
    """Return the SAN ``OtherName`` carrying ``upn`` (validated with :func:`parse_upn`)."""
    return x509.OtherName(UPN_OID, encode_upn(parse_upn(upn)))


@dataclass(frozen=True)
class CertProfile:
    """What a class of certificates must contain, independent of any particular user.

    ``key_usage`` applies to every key; ``rsa_key_usage`` *replaces* it for RSA keys.
    """

    name: str
    ekus: tuple[ObjectIdentifier, ...]
    key_usage: frozenset[str]
    rsa_key_usage: frozenset[str]
    require_identity: bool = True
    """At least one UPN or e-mail address must be present in the SAN."""


ENTRA_SMARTCARD_LOGON = CertProfile(
    name="entra-smartcard-logon",
    ekus=(ExtendedKeyUsageOID.SMARTCARD_LOGON, ExtendedKeyUsageOID.CLIENT_AUTH),
    key_usage=frozenset({"digital_signature"}),
    rsa_key_usage=frozenset({"digital_signature", "key_encipherment"}),
)
"""The Entra CBA / Windows smart-card-logon end-entity profile."""


def _check_key_usage(flags: Iterable[str]) -> frozenset[str]:
    result = frozenset(flags)
    unknown = sorted(result - set(KEY_USAGE_FLAGS))
    if unknown:
        raise CertInputError(f"unknown key usage flag(s): {', '.join(unknown)}")
    return result


@dataclass
class CertRequest:
    """The user-specific content of a certificate or CSR.

    Construct directly with parsed values, or with :meth:`create` from strings. The
    constructor validates UPNs, e-mails and key-usage names and raises
    :class:`CertInputError` on bad input.
    """

    subject: x509.Name
    upns: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    ekus: list[ObjectIdentifier] = field(default_factory=lambda: list(ENTRA_SMARTCARD_LOGON.ekus))
    policies: list[ObjectIdentifier] = field(default_factory=list)
    key_usage: frozenset[str] = ENTRA_SMARTCARD_LOGON.key_usage
    rsa_key_usage: frozenset[str] = ENTRA_SMARTCARD_LOGON.rsa_key_usage

    def __post_init__(self) -> None:
        if not isinstance(self.subject, x509.Name):
            raise CertInputError("subject must be an x509.Name (use parse_name for strings)")
        self.upns = [parse_upn(u) for u in self.upns]
        self.emails = [parse_email(e) for e in self.emails]
        self.ekus = [parse_eku(e) for e in self.ekus]
        self.policies = [parse_oid(p) for p in self.policies]
        self.key_usage = _check_key_usage(self.key_usage)
        self.rsa_key_usage = _check_key_usage(self.rsa_key_usage)

    @classmethod
    def create(
        cls,
        *,
        subject: str | x509.Name | None = None,
        upns: Iterable[str] = (),
        emails: Iterable[str] = (),
        ekus: Iterable[str | ObjectIdentifier] | None = None,
        policies: Iterable[str | ObjectIdentifier] = (),
        profile: CertProfile = ENTRA_SMARTCARD_LOGON,
    ) -> CertRequest:
        """Build a request from user input, filling the rest from ``profile``.

        ``subject`` defaults to ``CN=<first UPN>`` (or the first e-mail). ``ekus`` default to
        the profile's. Raises :class:`CertInputError` on bad input, including a request
        without UPN or e-mail when the profile requires one.
        """
        upn_list = [parse_upn(u) for u in upns]
        email_list = [parse_email(e) for e in emails]
        if profile.require_identity and not upn_list and not email_list:
            raise CertInputError(f"profile {profile.name} needs at least one UPN or e-mail address")
        if subject is None:
            first = (upn_list or email_list or [""])[0]
            if not first:
                raise CertInputError("no subject given and no UPN or e-mail to derive one from")
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)])
        else:
            name = parse_name(subject)
        return cls(
            subject=name,
            upns=upn_list,
            emails=email_list,
            ekus=[parse_eku(e) for e in (profile.ekus if ekus is None else ekus)],
            policies=[parse_oid(p) for p in policies],
            key_usage=profile.key_usage,
            rsa_key_usage=profile.rsa_key_usage,
        )

    def subject_alternative_name(self) -> x509.SubjectAlternativeName | None:
        """The SAN extension value (UPN otherNames first, then rfc822Names), or None."""
        names: list[x509.GeneralName] = [upn_other_name(u) for u in self.upns]
        names += [x509.RFC822Name(e) for e in self.emails]
        return x509.SubjectAlternativeName(names) if names else None


def key_usage_extension(
    public_key: CertificatePublicKeyTypes,
    flags: Iterable[str],
    rsa_flags: Iterable[str] | None = None,
) -> x509.KeyUsage:
    """Build a :class:`x509.KeyUsage` from flag names; ``rsa_flags`` replace ``flags`` for RSA."""
    chosen = _check_key_usage(
        rsa_flags if rsa_flags is not None and isinstance(public_key, rsa.RSAPublicKey) else flags
    )
    kwargs = {name: name in chosen for name in KEY_USAGE_FLAGS}
    if not kwargs["key_agreement"]:
        # encipher_only/decipher_only are only meaningful with keyAgreement; cryptography
        # refuses them otherwise, so drop them rather than fail on a profile typo.
        kwargs["encipher_only"] = kwargs["decipher_only"] = False
    return x509.KeyUsage(**kwargs)
