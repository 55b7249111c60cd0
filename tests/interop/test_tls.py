"""Proof by use: a key enrolled by pivtool performs TLS client authentication through
PKCS#11 (OpenSC + libp11's OpenSSL engine), against a server that checks chain and CRL.

Entra CBA is, on the wire, exactly this: a TLS handshake in which the client signs with the
smart-card key and the server checks the certificate chain and the CRL published at the
certificate's CRL distribution point. A certificate that parses is no proof; a handshake is.

Each test enrolls a virtual YubiKey behind pcscd with ``pivtool enroll --ca``, starts
``openssl s_server`` (client certificate required, lab CA trusted, CRL downloaded from the
certificate's CDP, served here over HTTP on 127.0.0.1) and connects with ``openssl
s_client -engine pkcs11``. The oracle is the server: its -www status page shows the client
certificate it received, and its -state log shows, per handshake, the verify result and
whether the handshake completed (i.e. the card's CertificateVerify signature checked out).
docs/tls-proof.md has the same recipe for a person at a terminal.
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
    NO_RESUMPTION,
    RECONNECT_HANDSHAKES,
    CrlPublisher,
    LabCA,
    ServerIdentity,
    TlsServer,
    Token,
    card_certificate,
    card_info,
    card_key_uri,
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
                           handshakes: int) -> None:
    """The server completed *handshakes* handshakes authenticated by *user*'s certificate
    (so the card signed each CertificateVerify), and showed that certificate on its page."""
    assert server.accepted(user.upn) == handshakes, server.log()[-3000:]
    # The status page is written for the last connection only.
    seen = peer_certificates(client_out)
    assert len(seen) == 1, f"server pages with a client certificate: {len(seen)}"
    assert _der(seen[0]) == _der(user.cert)
    cn = seen[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == user.upn  # pivtool's default subject is CN=<UPN>
    # TLS 1.3: the client's CertificateVerify is mandatory with a client certificate.
    assert negotiated_protocol(client_out) == "TLSv1.3"


# ------------------------------------------------------------------------------------------
# 1 + 3: handshakes succeed with the key on the card: RSA and ECC, PIN policy once and always


@pytest.mark.parametrize("pin_policy", ["default", "always"])
@pytest.mark.parametrize("algorithm", ["rsa2048", "eccp256"])
def test_tls_client_auth_with_card_key(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    crl_publisher: CrlPublisher, tls_server: TlsServerFactory,
    server_identity: ServerIdentity, algorithm: str, pin_policy: str,
) -> None:
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf,
                  f"alice.{algorithm}.{pin_policy}@contoso.com",
                  "-a", algorithm, "--pin-policy", pin_policy)
    slot = next(s for s in card_info(user.card)["slots"] if s["slot"] == "9a")
    assert slot["key"]["pin_policy"] == ("once" if pin_policy == "default" else "always")
    # No resumption: each of s_client's -reconnect handshakes (one process, one PKCS#11
    # login) makes the card sign. With policy "always" the card wants a fresh VERIFY before
    # every signature; see test_pin_policy_always_is_enforced_by_the_card for who gives it.
    server = tls_server(lab_ca.cert_path, *NO_RESUMPTION)
    fetched_before = crl_publisher.fetches

    result = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                      opensc_conf, reconnect=True)

    assert result.ok, result.describe()
    assert_server_accepted(server, result.stdout, user, RECONNECT_HANDSHAKES)
    # The server really checked revocation: it fetched the CRL from the certificate's CDP.
    assert crl_publisher.fetches > fetched_before
    assert pin_tries_left(user.card) == 3


# ------------------------------------------------------------------------------------------
# 2: negative cases


def test_revoked_certificate_is_rejected(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    tls_server: TlsServerFactory, server_identity: ServerIdentity,
) -> None:
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "mallory@contoso.com")
    server = tls_server(lab_ca.cert_path)
    accepted = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                        opensc_conf)
    assert accepted.ok, accepted.describe()
    assert_server_accepted(server, accepted.stdout, user, 1)

    lab_ca.revoke(user.cert.serial_number)
    # No server restart: s_server downloads the CRL from the CDP for every verification,
    # so publishing the new CRL is enough (as for a relying party whose CRL cache expired).
    rejected = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                        opensc_conf)

    assert not rejected.ok
    assert "certificate revoked" in rejected.stderr  # TLS alert 44 from the server
    assert peer_certificates(rejected.stdout) == []
    last = server.handshakes()[-1]
    assert last.client == f"CN = {user.upn}"
    assert last.verify_error == "num=23:certificate revoked"
    assert not last.completed
    assert server.accepted(user.upn) == 1  # only the handshake before the revocation


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
    # The engine gave up after the one failed C_Login: no retry loop burning the PIN.
    assert pin_tries_left(user.card) == 2
    # libp11 loads the key before connecting: the server never saw this client.
    assert server.handshakes() == []
    assert peer_certificates(result.stdout) == []


def test_certificate_from_another_ca_is_rejected(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    crl_publisher: CrlPublisher, tls_server: TlsServerFactory,
    server_identity: ServerIdentity,
) -> None:
    # Two cards in two readers at once: each key is found by its token (URI token= and
    # serial=), not by luck, and the trusted user's handshake afterwards shows the server
    # is not simply refusing everyone.
    other_ca = LabCA.create(tmp_path / "other-ca", "CN=Fabrikam Rogue CA,O=Fabrikam",
                            crl_publisher.url, None)
    stranger = enroll(vcard_factory, other_ca, tmp_path, opensc_conf, "eve@fabrikam.com")
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "carol@contoso.com")
    assert stranger.token.slot_description != user.token.slot_description
    server = tls_server(lab_ca.cert_path)

    rejected = s_client(server, server_identity.ca_path, stranger.key_uri(),
                        stranger.cert_path, opensc_conf)

    assert not rejected.ok
    assert "unknown ca" in rejected.stderr  # TLS alert 48 from the server
    assert peer_certificates(rejected.stdout) == []
    [seen] = server.handshakes()
    assert seen.client == f"CN = {stranger.upn}"
    assert seen.verify_error == "num=20:unable to get local issuer certificate"
    assert not seen.completed

    accepted = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                        opensc_conf)
    assert accepted.ok, accepted.describe()
    assert_server_accepted(server, accepted.stdout, user, 1)
    assert pin_tries_left(stranger.card) == 3
    assert pin_tries_left(user.card) == 3


# ------------------------------------------------------------------------------------------
# 3: who satisfies PIN policy "always"


def test_pin_policy_always_is_enforced_by_the_card(
    vcard_factory: VCardFactory, opensc_conf: Path, tmp_path: Path, lab_ca: LabCA,
    tls_server: TlsServerFactory, server_identity: ServerIdentity,
) -> None:
    """With policy "always" the card refuses a second signature without a new VERIFY.

    OpenSC 0.23 does not mark the 9a key CKA_ALWAYS_AUTHENTICATE (it cannot read a
    YubiKey's PIN policy), so libp11 never does a context-specific login. The repeated
    handshakes in test_tls_client_auth_with_card_key[...-always] work because OpenSC answers
    the card's 6982 by re-presenting the PIN from its PIN cache (use_pin_caching, on by
    default). Turn the cache off and the second handshake fails: the policy is the card's.
    If this starts passing, OpenSC or libp11 changed how they handle it: update
    docs/tls-proof.md.
    """
    user = enroll(vcard_factory, lab_ca, tmp_path, opensc_conf, "dave@contoso.com",
                  "-a", "eccp256", "--pin-policy", "always")
    no_cache = tmp_path / "opensc-no-pin-cache.conf"
    no_cache.write_text(opensc_conf.read_text().replace(
        "framework pkcs15 {", "framework pkcs15 {\n\t\tuse_pin_caching = false;", 1))
    assert "use_pin_caching = false" in no_cache.read_text()
    server = tls_server(lab_ca.cert_path, *NO_RESUMPTION)

    result = s_client(server, server_identity.ca_path, user.key_uri(), user.cert_path,
                      no_cache, reconnect=True)

    assert not result.ok
    assert "User not logged in" in result.stderr, result.describe()
    # The first handshake (signature right after C_Login's VERIFY) completed; the second
    # was never finished, because the client could not sign.
    assert server.accepted(user.upn) == 1
    assert not server.handshakes()[1].completed
    assert pin_tries_left(user.card) == 3

