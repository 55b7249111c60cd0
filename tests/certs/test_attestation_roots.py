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
