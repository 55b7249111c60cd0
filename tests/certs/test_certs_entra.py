"""certificateUserIds values, with expectations written by hand from Microsoft's documentation.

Sources for the literal expectations:
* "Mapping to the certificateUserIds attribute in Microsoft Entra ID" — the DN example
  (DC=com,DC=contoso,CN=CONTOSO-DC-CA / DC=com,DC=contoso,OU=UserAccounts,CN=mfatest), the
  serial example (48efa06b...41b2 stored as b2413413...ef48), the SKI example value in its
  PowerShell sample (eec6b887...ad0f), and the Graph PATCH body.
* "Microsoft Entra CBA technical deep dive" — the low/high affinity table.
"""

from __future__ import annotations

import hashlib

import pytest
from certs_helpers import ISSUER, build_cert, name
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from pivtool.certs.entra import (
    MAX_VALUE_LENGTH,
    CertUserId,
    certificate_user_id_gaps,
    certificate_user_ids,
    format_dn,
    graph_patch_body,
    reversed_serial_hex,
    subject_public_key_bits,
)
from pivtool.certs.errors import CertInputError
from pivtool.certs.profile import upn_other_name

MS_SERIAL = 0x48EFA06BA8127299499B069F133441B2
MS_ISSUER = name(
    (NameOID.DOMAIN_COMPONENT, "com"),
    (NameOID.DOMAIN_COMPONENT, "contoso"),
    (NameOID.COMMON_NAME, "CONTOSO-DC-CA"),
)
MS_SUBJECT = name(
    (NameOID.DOMAIN_COMPONENT, "com"),
    (NameOID.DOMAIN_COMPONENT, "contoso"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "UserAccounts"),
    (NameOID.COMMON_NAME, "mfatest"),
)


def by_kind(ids: list[CertUserId]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for item in ids:
        result.setdefault(item.kind, []).append(item.value)
    return result


def test_serial_reversal_matches_microsoft_example() -> None:
    assert reversed_serial_hex(MS_SERIAL) == "b24134139f069b49997212a86ba0ef48"


def test_serial_reversal_keeps_der_sign_byte() -> None:
    # 0x80F1 is DER-encoded as 00 80 F1 (sign byte); reversed: F1 80 00.
    assert reversed_serial_hex(0x80F1) == "f18000"
    assert reversed_serial_hex(0x01) == "01"


def test_microsoft_documented_dn_examples(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    cert = build_cert(
        issuer_key, p256.public_key(), subject=MS_SUBJECT, issuer=MS_ISSUER, serial=MS_SERIAL
    )
    ids = by_kind(certificate_user_ids(cert))
    assert ids["IssuerAndSubject"] == [
        "X509:<I>DC=com,DC=contoso,CN=CONTOSO-DC-CA<S>DC=com,DC=contoso,OU=UserAccounts,CN=mfatest"
    ]
    assert ids["Subject"] == ["X509:<S>DC=com,DC=contoso,OU=UserAccounts,CN=mfatest"]
    assert ids["IssuerAndSerialNumber"] == [
        "X509:<I>DC=com,DC=contoso,CN=CONTOSO-DC-CA<SR>b24134139f069b49997212a86ba0ef48"
    ]


def test_issuer_with_several_rdns_most_significant_first(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    # RFC 4514 string of ISSUER is "CN=Contoso Issuing CA,O=Contoso,C=US"; encoded C first.
    assert ISSUER.rfc4514_string() == "CN=Contoso Issuing CA,O=Contoso,C=US"
    cert = build_cert(issuer_key, p256.public_key(), serial=MS_SERIAL)
    ids = by_kind(certificate_user_ids(cert))
    assert ids["IssuerAndSerialNumber"] == [
        "X509:<I>C=US,O=Contoso,CN=Contoso Issuing CA<SR>b24134139f069b49997212a86ba0ef48"
    ]
    assert ids["IssuerAndSubject"] == ["X509:<I>C=US,O=Contoso,CN=Contoso Issuing CA<S>CN=Alice"]


def test_dn_keys_quoting_and_multivalued_rdn() -> None:
    dn = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso, Inc.")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, 'Say "hi"')]
            ),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "Bob"),
                    x509.NameAttribute(NameOID.USER_ID, "bob"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "bob@contoso.com")]
            ),
        ]
    )
    assert format_dn(dn) == (
        'C=US,S=WA,O="Contoso, Inc.",OU="Say ""hi""",'
        "CN=Bob+OID.0.9.2342.19200300.100.1.1=bob,E=bob@contoso.com"
    )


def test_principal_name_and_rfc822(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    san = x509.SubjectAlternativeName(
        [
            upn_other_name("bob@woodgrove"),
            upn_other_name("jöns@contoso.com"),
            x509.RFC822Name("user@woodgrove.com"),
        ]
    )
    cert = build_cert(issuer_key, p256.public_key(), extensions=[(san, False)])
    ids = by_kind(certificate_user_ids(cert))
    assert ids["PrincipalName"] == ["X509:<PN>bob@woodgrove", "X509:<PN>jöns@contoso.com"]
    assert ids["RFC822Name"] == ["X509:<RFC822>user@woodgrove.com"]


def test_ski_from_extension(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    ski = x509.SubjectKeyIdentifier(bytes.fromhex("eec6b88788d2770a01e01775ce71f1125cd6ad0f"))
    cert = build_cert(issuer_key, p256.public_key(), extensions=[(ski, False)])
    assert by_kind(certificate_user_ids(cert))["SKI"] == [
        "X509:<SKI>eec6b88788d2770a01e01775ce71f1125cd6ad0f"
    ]
    assert not any(g.startswith("SKI") for g in certificate_user_id_gaps(cert))


def test_no_ski_extension_means_no_ski_value(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    cert = build_cert(issuer_key, p256.public_key())
    assert "SKI" not in by_kind(certificate_user_ids(cert))
    gaps = certificate_user_id_gaps(cert)
    assert "SKI: the certificate has no SubjectKeyIdentifier extension" in gaps
    assert any(g.startswith("PrincipalName") for g in gaps)


@pytest.mark.parametrize("key_name", ["p256", "rsa2048"])
def test_sha1_pukey_is_sha1_of_the_public_key(
    request: pytest.FixtureRequest, issuer_key: ec.EllipticCurvePrivateKey, key_name: str
) -> None:
    key = request.getfixturevalue(key_name)
    public_key = key.public_key()
    cert = build_cert(issuer_key, public_key)
    # The documented input is "the public key": the subjectPublicKey BIT STRING contents,
    # i.e. the X9.62 point for EC and the PKCS#1 RSAPublicKey for RSA.
    if isinstance(public_key, rsa.RSAPublicKey):
        key_bytes = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
    else:
        key_bytes = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    expected = hashlib.sha1(key_bytes).hexdigest()
    assert subject_public_key_bits(cert) == key_bytes
    assert by_kind(certificate_user_ids(cert))["SHA1PublicKey"] == [f"X509:<SHA1-PUKEY>{expected}"]

    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    both = by_kind(certificate_user_ids(cert, sha1_pukey="both"))["SHA1PublicKey"]
    assert both == [f"X509:<SHA1-PUKEY>{expected}", f"X509:<SHA1-PUKEY>{thumbprint}"]
    only_thumb = by_kind(certificate_user_ids(cert, sha1_pukey="thumbprint"))["SHA1PublicKey"]
    assert only_thumb == [f"X509:<SHA1-PUKEY>{thumbprint}"]


def test_sha1_pukey_ed25519(
    issuer_key: ec.EllipticCurvePrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    raw = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    cert = build_cert(issuer_key, ed_key.public_key())
    assert by_kind(certificate_user_ids(cert))["SHA1PublicKey"] == [
        f"X509:<SHA1-PUKEY>{hashlib.sha1(raw).hexdigest()}"
    ]


def test_affinities_and_order(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    san = x509.SubjectAlternativeName(
        [upn_other_name("alice@contoso.com"), x509.RFC822Name("alice@contoso.com")]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(p256.public_key())
    cert = build_cert(issuer_key, p256.public_key(), extensions=[(san, False), (ski, False)])
    ids = certificate_user_ids(cert)
    assert [(i.kind, i.affinity) for i in ids] == [
        ("PrincipalName", "low"),
        ("RFC822Name", "low"),
        ("IssuerAndSubject", "low"),
        ("Subject", "low"),
        ("SKI", "high"),
        ("SHA1PublicKey", "high"),
        ("IssuerAndSerialNumber", "high"),
    ]
    assert all(i.note for i in ids)
    assert "reversed" in ids[-1].note and "1234" in ids[-1].note
    assert ids[0].to_json() == {
        "kind": "PrincipalName",
        "value": "X509:<PN>alice@contoso.com",
        "affinity": "low",
        "note": ids[0].note,
    }


def test_graph_patch_body_shape() -> None:
    body = graph_patch_body(
        ["X509:<PN>user@contoso.com", "X509:<SKI>eec6b88788d2770a01e01775ce71f1125cd6ad0f"]
    )
    assert body == {
        "authorizationInfo": {
            "certificateUserIds": [
                "X509:<PN>user@contoso.com",
                "X509:<SKI>eec6b88788d2770a01e01775ce71f1125cd6ad0f",
            ]
        }
    }


def test_graph_patch_body_accepts_cert_user_ids_merges_and_dedupes() -> None:
    ids = [
        CertUserId("PrincipalName", "X509:<PN>a@b.c", "low"),
        CertUserId("PrincipalName", "X509:<PN>a@b.c", "low"),
    ]
    body = graph_patch_body(ids, existing=["X509:<RFC822>a@b.c"])
    assert body["authorizationInfo"]["certificateUserIds"] == [
        "X509:<RFC822>a@b.c",
        "X509:<PN>a@b.c",
    ]


def test_graph_patch_body_limits() -> None:
    eleven = [f"X509:<PN>user{i}@contoso.com" for i in range(11)]
    with pytest.raises(CertInputError, match="at most 10"):
        graph_patch_body(eleven)
    assert len(graph_patch_body(eleven[:10])["authorizationInfo"]["certificateUserIds"]) == 10
    with pytest.raises(CertInputError, match="at most 3"):
        graph_patch_body(eleven[:4], max_values=3)
    with pytest.raises(CertInputError, match="between 1 and 10"):
        graph_patch_body(eleven[:1], max_values=11)
    long_value = "X509:<PN>" + "a" * (MAX_VALUE_LENGTH - len("X509:<PN>@b") + 1) + "@b"
    assert len(long_value) == MAX_VALUE_LENGTH + 1
    with pytest.raises(CertInputError, match="1024"):
        graph_patch_body([long_value])
    exactly = "X509:<PN>" + "a" * (MAX_VALUE_LENGTH - len("X509:<PN>@b")) + "@b"
    assert len(exactly) == MAX_VALUE_LENGTH
    assert graph_patch_body([exactly])


@pytest.mark.parametrize(
    "bad",
    ["x509:<PN>a@b.c", "X509:<pn>a@b.c", "X509:<PN>", "X509:<I>DC=com", "PN:a@b.c", ""],
)
def test_graph_patch_body_rejects_malformed_values(bad: str) -> None:
    with pytest.raises(CertInputError):
        graph_patch_body([bad])


def test_long_dn_values_are_flagged(
    issuer_key: ec.EllipticCurvePrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    subject = name(*[(NameOID.ORGANIZATIONAL_UNIT_NAME, "x" * 60) for _ in range(20)])
    cert = build_cert(issuer_key, p256.public_key(), subject=subject)
    too_long = [i for i in certificate_user_ids(cert) if len(i.value) > MAX_VALUE_LENGTH]
    assert too_long and all("exceeds 1024" in i.note for i in too_long)
    with pytest.raises(CertInputError):
        graph_patch_body(too_long)
