"""Profile data and the parsing helpers."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from pivtool.certs.errors import CertInputError
from pivtool.certs.profile import (
    ENTRA_SMARTCARD_LOGON,
    UPN_OID,
    CertRequest,
    decode_upn,
    encode_upn,
    parse_eku,
    parse_email,
    parse_name,
    parse_oid,
    parse_upn,
    upn_other_name,
)


def test_entra_profile_is_the_documented_one() -> None:
    assert UPN_OID.dotted_string == "1.3.6.1.4.1.311.20.2.3"
    assert [o.dotted_string for o in ENTRA_SMARTCARD_LOGON.ekus] == [
        "1.3.6.1.4.1.311.20.2.2",
        "1.3.6.1.5.5.7.3.2",
    ]
    assert ENTRA_SMARTCARD_LOGON.key_usage == {"digital_signature"}
    assert ENTRA_SMARTCARD_LOGON.rsa_key_usage == {"digital_signature", "key_encipherment"}


def test_upn_encoding_golden_bytes() -> None:
    # UTF8String tag 0x0C, short-form length.
    assert encode_upn("a@b") == b"\x0c\x03a@b"
    # Non-ASCII is UTF-8: "é" is C3 A9.
    assert encode_upn("é@b") == b"\x0c\x04\xc3\xa9@b"
    # 200 bytes needs the long form 0x81 0xC8.
    long = "u" * 198 + "@b"
    assert encode_upn(long)[:3] == b"\x0c\x81\xc8"
    assert decode_upn(encode_upn(long)) == long
    assert upn_other_name("alice@contoso.com") == x509.OtherName(
        UPN_OID, b"\x0c\x11alice@contoso.com"
    )


@pytest.mark.parametrize(
    "value",
    [b"", b"\x13\x03a@b", b"\x0c\x05a@b", b"\x0c\x02a@b", b"\x0c\x80", b"\x0c\x02\xff\xfe"],
)
def test_upn_decoding_rejects_malformed(value: bytes) -> None:
    with pytest.raises(CertInputError):
        decode_upn(value)


@pytest.mark.parametrize(
    "upn", ["alice@contoso.com", "bob@woodgrove", "a.b-c_d@sub.example.org", " x@y.z "]
)
def test_parse_upn_accepts(upn: str) -> None:
    assert parse_upn(upn) == upn.strip()


@pytest.mark.parametrize(
    "upn",
    ["alice", "@contoso.com", "alice@", "al ice@contoso.com", "a@b@c", "a@-bad-.com", "a@b..c"],
)
def test_parse_upn_rejects(upn: str) -> None:
    with pytest.raises(CertInputError):
        parse_upn(upn)


def test_parse_email_requires_ascii() -> None:
    assert parse_email("user@woodgrove.com") == "user@woodgrove.com"
    with pytest.raises(CertInputError, match="ASCII"):
        parse_email("jöns@contoso.com")


def test_parse_name() -> None:
    name = parse_name("CN=Alice,O=Contoso\\, Inc.,C=US")
    assert name.rfc4514_string() == "CN=Alice,O=Contoso\\, Inc.,C=US"
    assert name.rdns[0].get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "US"
    extended = parse_name("E=a@b.c,S=WA,SN=Smith,G=Al,T=Eng,CN=x")
    oids = [a.oid for a in extended]
    assert (
        NameOID.EMAIL_ADDRESS in oids
        and NameOID.STATE_OR_PROVINCE_NAME in oids
        and NameOID.SURNAME in oids
    )


@pytest.mark.parametrize("bad", ["", "   ", "CN", "FOO=bar", "CN=a,,", "=x", "CN=\\zz", "C=USA"])
def test_parse_name_rejects_with_one_line(bad: str) -> None:
    with pytest.raises(CertInputError) as info:
        parse_name(bad)
    assert "\n" not in str(info.value)


def test_parse_oid_and_eku() -> None:
    assert parse_oid("1.2.3.4") == ObjectIdentifier("1.2.3.4")
    assert parse_eku("smartcard-logon") == ExtendedKeyUsageOID.SMARTCARD_LOGON
    assert parse_eku("Client-Auth") == ExtendedKeyUsageOID.CLIENT_AUTH
    assert parse_eku("1.3.6.1.5.5.7.3.4") == ExtendedKeyUsageOID.EMAIL_PROTECTION
    for bad in ["", "1", "1.2.", "3.1", "1.02", "a.b", "1.2.3 4"]:
        with pytest.raises(CertInputError):
            parse_oid(bad)
    with pytest.raises(CertInputError, match="unknown extended key usage"):
        parse_eku("smart-card")


def test_cert_request_create_defaults() -> None:
    request = CertRequest.create(upns=["alice@contoso.com"], policies=["1.2.3.4"])
    assert request.subject.rfc4514_string() == "CN=alice@contoso.com"
    assert request.ekus == list(ENTRA_SMARTCARD_LOGON.ekus)
    assert request.policies == [ObjectIdentifier("1.2.3.4")]
    san = request.subject_alternative_name()
    assert san is not None and list(san) == [upn_other_name("alice@contoso.com")]


def test_cert_request_validation() -> None:
    with pytest.raises(CertInputError, match="at least one UPN"):
        CertRequest.create(subject="CN=x")
    with pytest.raises(CertInputError):
        CertRequest(subject=x509.Name([]), upns=["not-a-upn"])
    with pytest.raises(CertInputError, match="key usage"):
        CertRequest(subject=x509.Name([]), key_usage=frozenset({"sign_everything"}))
    with pytest.raises(CertInputError):
        CertRequest(subject="CN=x")  # type: ignore[arg-type]
