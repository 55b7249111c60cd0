"""Build CSRs and self-signed certificates from a :class:`~.profile.CertRequest`.

Works with any ``cryptography`` private key, including card-backed subclasses whose
``sign()`` talks to a PIV card: we only call ``private_key.public_key()`` and hand the key to
the standard builders' ``.sign(private_key, hash)``. The private key is never serialised.
"""

from __future__ import annotations

import datetime as _dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from .errors import CertInputError
from .profile import CertRequest, key_usage_extension

__all__ = ["SignatureHash", "build_csr", "build_self_signed", "default_hash", "request_extensions"]

_Extension = tuple[x509.ExtensionType, bool]

#: Hash algorithms cryptography's builders accept for a signature.
SignatureHash = (
    hashes.SHA224
    | hashes.SHA256
    | hashes.SHA384
    | hashes.SHA512
    | hashes.SHA3_224
    | hashes.SHA3_256
    | hashes.SHA3_384
    | hashes.SHA3_512
)


def default_hash(public_key: CertificatePublicKeyTypes) -> SignatureHash | None:
    """The signature hash that matches the key: SHA-256 for RSA and P-256, SHA-384 for P-384,
    SHA-512 for P-521, None for Ed25519/Ed448 (they hash internally)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        size = public_key.curve.key_size
        if size > 384:
            return hashes.SHA512()
        if size > 256:
            return hashes.SHA384()
        return hashes.SHA256()
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return None
    return hashes.SHA256()


def _pick_hash(
    public_key: CertificatePublicKeyTypes, hash_alg: SignatureHash | None
) -> SignatureHash | None:
    is_eddsa = isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    if hash_alg is None:
        return default_hash(public_key)
    if is_eddsa:
        raise CertInputError("Ed25519/Ed448 signatures take no separate hash algorithm")
    return hash_alg


def request_extensions(
    public_key: CertificatePublicKeyTypes, request: CertRequest
) -> list[_Extension]:
    """The extensions (value, critical) that ``request`` asks for, for a key like ``public_key``.

    SAN is critical only when the subject is empty (RFC 5280 §4.2.1.6); key usage is critical
    as RFC 5280 recommends; EKU and certificate policies are non-critical.
    """
    extensions: list[_Extension] = []
    san = request.subject_alternative_name()
    if san is not None:
        extensions.append((san, len(request.subject) == 0))
    extensions.append(
        (key_usage_extension(public_key, request.key_usage, request.rsa_key_usage), True)
    )
    if request.ekus:
        extensions.append((x509.ExtendedKeyUsage(list(request.ekus)), False))
    if request.policies:
        extensions.append(
            (
                x509.CertificatePolicies(
                    [x509.PolicyInformation(p, None) for p in request.policies]
                ),
                False,
            )
        )
    return extensions


def build_csr(
    private_key: CertificateIssuerPrivateKeyTypes,
    request: CertRequest,
    hash_alg: SignatureHash | None = None,
) -> x509.CertificateSigningRequest:
    """Build and sign a PKCS#10 CSR for ``request`` with ``private_key``.

    SAN (UPN otherName + rfc822Name), key usage, EKU and certificate policies go into the
    extensionRequest attribute. ``hash_alg`` defaults to :func:`default_hash`.
    """
    public_key = private_key.public_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(request.subject)
    for value, critical in request_extensions(public_key, request):
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(private_key, _pick_hash(public_key, hash_alg))


def build_self_signed(
    private_key: CertificateIssuerPrivateKeyTypes,
    request: CertRequest,
    days: int = 365,
    hash_alg: SignatureHash | None = None,
    *,
    now: _dt.datetime | None = None,
) -> x509.Certificate:
    """Build a self-signed end-entity certificate for labs and tests (BasicConstraints CA=false).

    Not useful for Entra CBA on its own (Entra needs the issuing CA in its trust store), but
    it lets a PIV slot hold a certificate before a real one is issued.
    """
    if days < 1:
        raise CertInputError("validity must be at least one day")
    public_key = private_key.public_key()
    start = (now or _dt.datetime.now(_dt.timezone.utc)).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(request.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Back-date slightly: a certificate that is "not yet valid" because of clock skew
        # is a classic first-sign-in failure.
        .not_valid_before(start - _dt.timedelta(minutes=5))
        .not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    for value, critical in request_extensions(public_key, request):
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(private_key, _pick_hash(public_key, hash_alg))
