"""The shipped Yubico attestation roots and intermediates (pivtool/certs/roots): pinned by
SHA-256 (the README's table), every signature up to a root checks, and the package data is
what the code loads."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from pivtool.certs.attestation import signed_by, yubico_intermediates, yubico_roots

README = Path(__file__).parents[2] / "pivtool" / "certs" / "roots" / "README.md"


def _sha(cert: object) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()  # type: ignore[attr-defined]


def test_roots_and_intermediates_are_the_published_ones() -> None:
    pinned = re.findall(r"`([0-9a-f]{64})`", README.read_text())
    roots, inter = yubico_roots(), yubico_intermediates()
    assert sorted(_sha(c) for c in roots + inter) == sorted(pinned)
    assert {c.subject.rfc4514_string() for c in roots} == {
        "CN=Yubico PIV Root CA Serial 263751", "CN=Yubico Attestation Root 1",
        "CN=Yubico U2F Root CA Serial 457200631"}
    for root in roots:
        assert signed_by(root, root)
    # Every intermediate chains to "Yubico Attestation Root 1" through the others.
    (root1,) = [r for r in roots if r.subject.rfc4514_string() == "CN=Yubico Attestation Root 1"]
    for cert in inter:
        current, hops = cert, 0
        while not signed_by(current, root1):
            current = next(c for c in inter if signed_by(current, c))
            hops += 1
            assert hops < 3


def test_chain_walks_intermediates_like_the_2024_hierarchy() -> None:
    """attestation <- f9 <- PIV Attestation B 1 <- Intermediate B 1 <- Root 1 has two
    intermediates between f9 and the root (YubiKey 5.7.4+); a synthetic one of the same
    shape verifies only with every link present."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from pivtool.certs.attestation import verify_attestation

    start = dt.datetime(2024, 12, 1, tzinfo=dt.timezone.utc)

    def cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: str,
             signer: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name.from_rfc4514_string(f"CN={cn}"))
                .issuer_name(x509.Name.from_rfc4514_string(f"CN={issuer}"))
                .public_key(key.public_key()).serial_number(1).not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=9000))
                .sign(signer, hashes.SHA256()))

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    names = ["Lab Root", "Lab Intermediate", "Lab PIV Attestation", "Device f9",
             "YubiKey PIV Attestation 9a"]
    chain = [cert(names[0], keys[0], names[0], keys[0])]
    for i in range(1, 5):
        chain.append(cert(names[i], keys[i], names[i - 1], keys[i - 1]))
    root, inter, piv, f9, att = chain
    ok = verify_attestation(att, f9, [root], [piv, inter])
    assert ok.verified and ok.root == "CN=Lab Root"
    assert ok.chain == [f"CN={n}" for n in reversed(names)]
    missing = verify_attestation(att, f9, [root], [piv])
    assert not missing.verified
    assert missing.reason == "CN=Lab PIV Attestation does not chain to a trusted attestation root"
    # Yubico's own roots do not vouch for a lab hierarchy.
    assert not verify_attestation(att, f9, None, [piv, inter]).verified
