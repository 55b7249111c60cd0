"""Proof by use: a key enrolled by pivtool performs TLS client authentication through
PKCS#11 (OpenSC + libp11's OpenSSL engine), against a server that checks chain and CRL.

Entra CBA is, on the wire, exactly this: a TLS handshake in which the client signs with the
smart-card key and the server checks the certificate chain and the CRL published at the
certificate's CRL distribution point. A certificate that parses is no proof; a handshake is.

Each test enrolls a virtual YubiKey behind pcscd with ``pivtool enroll --ca``, starts
``openssl s_server`` (client certificate required, lab CA trusted, CRL downloaded from the
certificate's CDP, served here over HTTP on 127.0.0.1) and connects with ``openssl
s_client -engine pkcs11``. The oracle is the server: its status page shows the client
certificate it received, and its log shows the verify result. docs/tls-proof.md has the same
recipe for a person at a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from interop_tools import same_public_key, slot_public_key
from pcsc_stack import VCardFactory, VirtualCardProcess
from tls_tools import (
    CURL,
    CrlPublisher,
    LabCA,
    ServerIdentity,
    TlsServer,
    Token,
    card_certificate,
    card_key_uri,
    curl,
    make_server_identity,
    negotiated_protocol,
    peer_certificates,
    pin_tries_left,
    pivtool,
    s_client,
    token_in_reader,
)

pytestmark = [pytest.mark.pcsc, pytest.mark.interop]

# Test secrets only (set by enroll, passed to the engine in the URI).
PIN = "24681357"
PUK = "86427531"
WRONG_PIN = "11112222"


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def server_identity(tmp_path_factory: pytest.TempPathFactory) -> ServerIdentity:
    return make_server_identity(tmp_path_factory.mktemp("tls-server"))


@pytest.fixture
def crl_publisher() -> Iterator[CrlPublisher]:
    publisher = CrlPublisher()
    try:
        yield publisher
    finally:
        publisher.stop()


@pytest.fixture
def lab_ca(tmp_path: Path, crl_publisher: CrlPublisher) -> LabCA:
    """The user CA; its CRL URL points at our HTTP distribution point."""
    return LabCA.create(tmp_path / "lab-ca", "CN=Contoso TLS Lab CA,O=Contoso",
                        crl_publisher.url, crl_publisher)


TlsServerFactory = Callable[..., TlsServer]


@pytest.fixture
def tls_server(server_identity: ServerIdentity, tmp_path: Path,
               request: pytest.FixtureRequest) -> Iterator[TlsServerFactory]:
    """``tls_server(client_ca, *extra_args)`` starts an s_server; all are stopped (by PID)
    at teardown, and their logs attached to a failure report."""
    servers: list[TlsServer] = []

    def start(client_ca: Path, *extra_args: str) -> TlsServer:
        server = TlsServer(server_identity, client_ca,
                           tmp_path / f"s_server-{len(servers)}.log", tuple(extra_args))
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        for i, server in enumerate(servers):
            request.node.add_report_section("teardown", f"s_server {i} log", server.log())


@dataclass
class EnrolledCard:
    card: VirtualCardProcess
    upn: str
    cert: x509.Certificate
    cert_path: Path
    token: Token

    def key_uri(self, pin: str | None = PIN) -> str:
        return card_key_uri(self.token, pin)


def enroll(vcard_factory: VCardFactory, ca: LabCA, tmp_path: Path, opensc_conf: Path,
           upn: str, *extra: str) -> EnrolledCard:
    """A fresh virtual YubiKey enrolled through pcscd by ``pivtool enroll --ca``."""
    card = vcard_factory()
    pivtool("--reader", card.substring, "enroll", "--upn", upn, "--ca", str(ca.directory),
            *extra, env={"PIVTOOL_NEW_PIN": PIN, "PIVTOOL_NEW_PUK": PUK})
    cert_path = tmp_path / f"{upn.split('@')[0]}.pem"
    cert = card_certificate(card, cert_path)
    # The key behind the certificate is the one the card holds (its state file is the
    # oracle): a certificate for some other key could never prove possession below.
    assert same_public_key(cert.public_key(), slot_public_key(card, 0x9A))
    return EnrolledCard(card, upn, cert, cert_path, token_in_reader(card, opensc_conf))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def assert_server_accepted(server: TlsServer, client_out: str, user: EnrolledCard,
                           handshakes: int = 1) -> None:
    """The server received *user*'s certificate from the card, verified it, and answered."""
    seen = peer_certificates(client_out)
    assert len(seen) == handshakes, f"server pages: {len(seen)}\n{client_out[-2000:]}"
    for cert in seen:
        assert _der(cert) == _der(user.cert)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == user.upn  # pivtool's default subject is CN=<UPN>
    assert server.verified_clients(user.upn) == handshakes, server.log()
    # TLS 1.3: the client's CertificateVerify (the card's signature over the transcript)
    # is mandatory, so a verified client certificate means the card signed.
    assert negotiated_protocol(client_out) == "TLSv1.3"


# ------------------------------------------------------------------------------------------
# 1 + 3: the handshake succeeds with the key on the card, RSA and ECC


@pytest.mark.parametrize("algorithm", ["rsa2048", "eccp256"])
def test_tls_client_auth_with_card_key(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    crl_publisher: CrlPublisher, tls_server: TlsServerFactory,
    server_identity: ServerIdentity, algorithm: str,
) -> None:
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, f"alice.{algorithm}@contoso.com",
                  "-a", algorithm)
    server = tls_server(lab_ca.cert_path)
    fetched_before = crl_publisher.fetches

    result = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                      opensc_conf)

    assert result.ok, result.describe()
    assert_server_accepted(server, result.stdout, user)
    # The server really checked revocation: it fetched the CRL from the certificate's CDP.
    assert crl_publisher.fetches > fetched_before
    assert pin_tries_left(user.card) == 3


# ------------------------------------------------------------------------------------------
# 2: negative cases


def test_revoked_certificate_is_rejected(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    crl_publisher: CrlPublisher, tls_server: TlsServerFactory,
    server_identity: ServerIdentity,
) -> None:
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "mallory@contoso.com")
    server = tls_server(lab_ca.cert_path)
    accepted = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                        opensc_conf)
    assert accepted.ok, accepted.describe()
    assert_server_accepted(server, accepted.stdout, user)

    lab_ca.revoke(user.cert.serial_number)
    # No server restart: s_server downloads the CRL from the CDP on every verification,
    # as a relying party with an expired CRL cache would.
    rejected = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                        opensc_conf)

    assert not rejected.ok
    assert peer_certificates(rejected.stdout) == []
    assert "certificate revoked" in rejected.stderr  # TLS alert 44 from the server
    assert f"depth=0 CN = {user.upn}\nverify error:num=23:certificate revoked" in server.log()
    assert server.verified_clients(user.upn) == 1  # only the handshake before revocation


def test_wrong_pin_fails_and_spends_exactly_one_try(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    tls_server: TlsServerFactory, server_identity: ServerIdentity,
) -> None:
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "bob@contoso.com")
    server = tls_server(lab_ca.cert_path)
    assert pin_tries_left(user.card) == 3

    result = s_client(server, server_identity.ca_path, user.key_uri(WRONG_PIN),
                      user.cert_path, opensc_conf)

    assert not result.ok
    assert "PIN incorrect" in result.stderr, result.describe()
    # The engine gave up after the failed C_Login: no retry loop burning the PIN.
    assert pin_tries_left(user.card) == 2
    assert server.verified_clients(user.upn) == 0
    assert peer_certificates(result.stdout) == []


def test_certificate_from_another_ca_is_rejected(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    crl_publisher: CrlPublisher, tls_server: TlsServerFactory,
    server_identity: ServerIdentity,
) -> None:
    # Two cards in two readers at once: the stranger's key is found by its token, not by
    # luck, and the trusted user's handshake afterwards shows the server is not just down.
    other_ca = LabCA.create(tmp_path / "other-ca", "CN=Fabrikam Rogue CA,O=Fabrikam",
                            crl_publisher.url, None)
    stranger = enroll(vcard_factory, other_ca, tmp_path, opensc_conf, "eve@fabrikam.com")
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "carol@contoso.com")
    assert stranger.token.slot_description != user.token.slot_description
    server = tls_server(lab_ca.cert_path)

    rejected = s_client(server, server_identity.ca_path, stranger.key_uri(),
                        stranger.cert_path, opensc_conf)
    accepted = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                        opensc_conf)

    assert not rejected.ok
    assert "unknown ca" in rejected.stderr  # TLS alert 48 from the server
    assert (f"depth=0 CN = {stranger.upn}\nverify error:num=20:unable to get local issuer "
            "certificate") in server.log()
    assert server.verified_clients(stranger.upn) == 0
    assert accepted.ok, accepted.describe()
    assert_server_accepted(server, accepted.stdout, user)
    # Neither key was asked for its PIN more than the one successful login.
    assert pin_tries_left(stranger.card) == 3
    assert pin_tries_left(user.card) == 3


# ------------------------------------------------------------------------------------------
# 3: PIN policy "always"


def test_pin_policy_always(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    tls_server: TlsServerFactory, server_identity: ServerIdentity,
) -> None:
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "dave@contoso.com",
                  "-a", "eccp256", "--pin-policy", "always")
    info = pivtool("--reader", user.card.substring, "--json", "info").stdout
    assert '"pin_policy": "always"' in info
    server = tls_server(lab_ca.cert_path)

    result = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                      opensc_conf)

    assert result.ok, result.describe()
    assert_server_accepted(server, result.stdout, user)
    assert pin_tries_left(user.card) == 3


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_pin_policy_always_two_handshakes_one_process(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    tls_server: TlsServerFactory, server_identity: ServerIdentity,
) -> None:
    """A browser-like client signs more than once per PKCS#11 login. The card demands a
    fresh VERIFY before each signature; OpenSC answers the card's 6982 by re-presenting
    the PIN from its PIN cache (use_pin_caching, default on)."""
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "erin@contoso.com",
                  "-a", "eccp256", "--pin-policy", "always")
    server = tls_server(lab_ca.cert_path)

    result = curl(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                  opensc_conf, requests=2)

    assert result.ok, result.describe()
    assert_server_accepted(server, result.stdout, user, handshakes=2)
