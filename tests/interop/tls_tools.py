"""TLS client authentication with the key on a (virtual) card: the pieces of the proof.

* :class:`CrlPublisher` — the CA's CRL distribution point: an in-process HTTP server on
  127.0.0.1 serving ``/ca.crl`` and recording every fetch (the TLS server downloads the CRL
  from the URL in the user's certificate, as Entra does).
* :func:`make_server_identity` — a separate server CA and a server certificate for
  127.0.0.1, made with cryptography (the user's lab CA must not be involved in the
  server side, or a mix-up would go unnoticed).
* :class:`TlsServer` — ``openssl s_server -www`` requiring a client certificate from the lab
  CA, checking it against the CRL; stopped by PID.
* :func:`token_in_reader` / :func:`card_key_uri` / :func:`s_client` — a real TLS client
  using the key on the card through OpenSC's PKCS#11 module and libp11's OpenSSL engine.
* :meth:`TlsServer.handshakes` / :func:`peer_certificates` — the server's view: which
  handshakes it completed with which client certificate, and the certificate it received.

Test secrets only: the PIN travels in the PKCS#11 URI (``pin-value``) so that the clients
run unattended. docs/tls-proof.md shows the interactive way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from interop_tools import OPENSC_MODULE, OPENSSL, PKCS11_TOOL, run
from pcsc_stack import VirtualCardProcess

PIVTOOL = str(Path(sys.executable).with_name("pivtool"))
#: s_server options that refuse session resumption (no cache, no tickets), so that every
#: connection is a full handshake with a fresh client signature.
NO_RESUMPTION = ("-no_cache", "-no_ticket")
#: s_client -reconnect: the first connection and five more.
RECONNECT_HANDSHAKES = 6

#: The request the clients send; s_server -www answers any GET with its status page.
HTTP_GET = "GET / HTTP/1.0\r\n\r\n"

# Proxy variables would send the server's CRL download (OpenSSL's HTTP client honours
# http_proxy) through a proxy; the whole exchange is on 127.0.0.1.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "ALL_PROXY")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without proxies (and with *extra*), for every process of the proof."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.update(LC_ALL="C", LANG="C", no_proxy="*", NO_PROXY="*")
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller retries if it is taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------
# the CRL distribution point


class _CrlHandler(http.server.BaseHTTPRequestHandler):
    server: _CrlHttpServer

    def do_GET(self) -> None:
        self.server.fetches.append(self.path)
        body = self.server.crl if self.path == "/ca.crl" else None
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # fetches are recorded in server.fetches; keep pytest's output clean


class _CrlHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    crl: bytes | None = None
    fetches: list[str]


class CrlPublisher:
    """``http://127.0.0.1:<port>/ca.crl``: the lab CA's CRL distribution point.

    A thread, not a process: nothing to leak if a test fails. :meth:`stop` in teardown.
    """

    def __init__(self) -> None:
        self._httpd = _CrlHttpServer(("127.0.0.1", 0), _CrlHandler)
        self._httpd.fetches = []
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/ca.crl"

    @property
    def fetches(self) -> int:
        """How many times the CRL was downloaded so far."""
        return self._httpd.fetches.count("/ca.crl")

    def publish(self, der: bytes) -> None:
        self._httpd.crl = der

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


# ------------------------------------------------------------------------------------------
# the lab CA (through pivtool's CLI, as an administrator would run it)


def pivtool(*args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([PIVTOOL, *args], env=clean_env(env), check=check)


@dataclass
class LabCA:
    """A ``pivtool ca`` directory whose CRL is published by a :class:`CrlPublisher`."""

    directory: Path
    publisher: CrlPublisher | None

    @classmethod
    def create(cls, directory: Path, subject: str, crl_url: str,
               publisher: CrlPublisher | None) -> LabCA:
        pivtool("ca", "init", str(directory), "--subject", subject, "--crl-url", crl_url)
        ca = cls(directory, publisher)
        ca.publish_crl()
        return ca

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    def publish_crl(self) -> None:
        """Sign a new CRL and put it at the distribution point."""
        out = self.directory / "published.crl"
        pivtool("ca", "crl", str(self.directory), "-o", str(out), "--format", "der", "--force")
        if self.publisher is not None:
            self.publisher.publish(out.read_bytes())

    def revoke(self, serial: int) -> None:
        pivtool("ca", "revoke", str(self.directory), f"{serial:x}", "--reason",
                "keycompromise")
        self.publish_crl()


# ------------------------------------------------------------------------------------------
# the server side


@dataclass(frozen=True)
class ServerIdentity:
    ca_path: Path
    cert_path: Path
    key_path: Path


def make_server_identity(directory: Path) -> ServerIdentity:
    """A server CA and a server certificate for IP 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.timezone.utc)

    def build(subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey,
              signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("pivtool test TLS server CA", None, ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", ca_cert.subject, key, ca_key, ca=False)
    ident = ServerIdentity(directory / "server-ca.pem", directory / "server.pem",
                           directory / "server.key")
    ident.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    ident.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ident.key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    ident.key_path.chmod(0o600)
    return ident


def _listening(port: int) -> bool:
    """True once something listens on 127.0.0.1:*port* (read from /proc: probing with a
    connection would make s_server log a failed handshake)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want and cols[3] == "0A":  # 0A = TCP_LISTEN
                return True
    return False


@dataclass
class ServerHandshake:
    """One handshake as the server logged it."""

    #: The client certificate's subject as s_server prints it ("CN = alice@contoso.com").
    client: str | None = None
    #: "num=23:certificate revoked" etc.; None when the chain verified.
    verify_error: str | None = None
    completed: bool = False


@dataclass
class TlsServer:
    """``openssl s_server`` on 127.0.0.1 that requires a client certificate issued by
    *client_ca* and checks it against the CRL downloaded from the certificate's CRL
    distribution point."""

    identity: ServerIdentity
    client_ca: Path
    log_path: Path
    extra_args: tuple[str, ...] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log_offset: int = field(default=0, repr=False)

    def command(self) -> list[str]:
        return [
            OPENSSL, "s_server", "-accept", f"127.0.0.1:{self.port}",
            "-cert", str(self.identity.cert_path), "-key", str(self.identity.key_path),
            # -Verify (capital): a client certificate is required, not just requested;
            # -verify_return_error: a failed check aborts the handshake instead of being
            # logged and ignored.
            "-Verify", "1", "-verify_return_error",
            # Only the lab CA is trusted for client certificates. -verifyCAfile, not just
            # -CAfile: OpenSSL 3.0's s_server installs -crl_download on the -verifyCAfile
            # store only; with -CAfile alone it never fetches and every client fails with
            # "unable to get certificate CRL". -CAfile is kept for the acceptable-CA list the
            # server sends in its CertificateRequest.
            "-CAfile", str(self.client_ca), "-verifyCAfile", str(self.client_ca),
            "-crl_check", "-crl_download",
            # -state: s_server logs every handshake state; "read finished" after a verified
            # client certificate is the server's own record of a completed client-authenticated
            # handshake (the verify callback alone also fires for handshakes that then fail:
            # the client's Certificate can arrive before it fails to sign).
            "-state", "-www", *self.extra_args,
        ]

    def start(self, attempts: int = 5) -> None:
        for _ in range(attempts):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._log_offset = log.tell()
                self.proc = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=clean_env(),
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if _listening(self.port):
                    return
                if self.proc.poll() is not None:
                    break  # most likely the port was taken in between: try another
                time.sleep(0.02)
            self.stop()
        pytest.fail(f"openssl s_server did not start:\n{self.log()}")

    def log(self) -> str:
        """What this server process logged (verify results, errors)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[self._log_offset:].decode(errors="replace")

    def handshakes(self) -> list[ServerHandshake]:
        """Every handshake this server saw, parsed from its -state log."""
        result: list[ServerHandshake] = []
        current: ServerHandshake | None = None
        lines = self.log().splitlines()
        for i, line in enumerate(lines):
            if line == "SSL_accept:SSLv3/TLS read client hello":
                current = ServerHandshake()
                result.append(current)
            elif current is None:
                continue
            elif line.startswith("depth=0 "):
                # The verify callback logs the leaf's subject, then its verdict.
                current.client = line.removeprefix("depth=0 ")
                verdict = lines[i + 1] if i + 1 < len(lines) else ""
                if verdict.startswith("verify error:"):
                    current.verify_error = verdict.removeprefix("verify error:")
            elif line.startswith("verify error:") and current.verify_error is None:
                current.verify_error = line.removeprefix("verify error:")
            elif line == "SSL_accept:SSLv3/TLS read finished":
                # Reached only after the client's CertificateVerify checked out.
                current.completed = True
        return result

    def accepted(self, subject_cn: str) -> int:
        """Completed handshakes whose client certificate (CN=*subject_cn*) verified."""
        return sum(
            1 for h in self.handshakes()
            if h.completed and h.verify_error is None and h.client == f"CN = {subject_cn}"
        )

    def stop(self) -> None:
        """Stop exactly our s_server (by its PID) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------------------------------
# the client side


def opensc_env(opensc_conf: Path) -> dict[str, str]:
    """Environment for libp11's engine with OpenSC's module.

    Without PKCS11_MODULE_PATH libp11 loads p11-kit's proxy, which only finds OpenSC
    through p11-kit's module registry; naming the module keeps the proof about OpenSC.
    """
    return {"OPENSC_CONF": str(opensc_conf), "PKCS11_MODULE_PATH": OPENSC_MODULE}


@dataclass(frozen=True)
class Token:
    """What OpenSC's PKCS#11 module shows for the card in one reader."""

    slot_description: str
    label: str
    serial: str


def token_in_reader(card: VirtualCardProcess, opensc_conf: Path) -> Token:
    """The token OpenSC presents for *card* (found by its reader's slot description)."""
    out = run([PKCS11_TOOL, "--module", OPENSC_MODULE, "-L"],
              env=clean_env(opensc_env(opensc_conf))).stdout
    # "Slot 0 (0x0): <reader>\n  token label        : ...\n ... serial num         : ..."
    for block in re.split(r"^Slot \d+ ", out, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        if head.split(": ", 1)[-1].strip() != card.reader:
            continue
        fields = dict(
            (k.strip(), v.strip()) for k, v in
            (line.split(":", 1) for line in body.splitlines() if ":" in line)
        )
        if "token label" not in fields:
            break
        return Token(card.reader, fields["token label"], fields["serial num"])
    pytest.fail(f"OpenSC shows no token in {card.reader!r}:\n{out}")


def _uri_value(value: str) -> str:
    # RFC 7512 attribute values are percent-encoded; encode all but unreserved characters.
    return quote(value, safe="")


def card_key_uri(token: Token, pin: str | None, object_label: str = "PIV AUTH key") -> str:
    """PKCS#11 URI of the PIV authentication key (slot 9a) of exactly *token*.

    ``token=`` and ``serial=`` pin the URI to this card: with several cards inserted libp11
    would otherwise use the first token holding an object of that name.
    """
    parts = [f"token={_uri_value(token.label)}", f"serial={_uri_value(token.serial)}",
             f"object={_uri_value(object_label)}", "type=private"]
    if pin is not None:
        parts.append(f"pin-value={_uri_value(pin)}")
    return "pkcs11:" + ";".join(parts)


@dataclass(frozen=True)
class ClientResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def s_client(server: TlsServer, server_ca: Path, key_uri: str, cert: Path,
             opensc_conf: Path, reconnect: bool = False, timeout: float = 30) -> ClientResult:
    """One HTTPS request with ``openssl s_client``, client key on the card.

    The server's certificate is verified too (-verify_return_error, -verify_ip): a proof
    against an unauthenticated server would prove little.

    *reconnect*: s_client's -reconnect, five more handshakes in the same process (and so
    the same PKCS#11 login) before the request. Against a server started with
    :data:`NO_RESUMPTION` each is a full handshake that makes the card sign again.
    """
    cmd = [
        OPENSSL, "s_client", "-connect", f"127.0.0.1:{server.port}",
        "-CAfile", str(server_ca), "-verify_return_error", "-verify_ip", "127.0.0.1",
        "-engine", "pkcs11", "-keyform", "engine", "-key", key_uri, "-cert", str(cert),
        # Keep reading after stdin ends so the server's whole answer arrives; s_server -www
        # closes the connection after it.
        "-ign_eof",
    ]
    if reconnect:
        cmd.append("-reconnect")
    proc = subprocess.run(cmd, input=HTTP_GET, capture_output=True, text=True,
                          timeout=timeout, env=clean_env(opensc_env(opensc_conf)),
                          check=False)
    return ClientResult(proc.returncode, proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------------------
# the server's view of the client


def peer_certificates(page: str) -> list[x509.Certificate]:
    """Client certificates in s_server -www status pages (one per page in *page*).

    s_server prints "Client certificate", the certificate as text and then as PEM: this is
    the certificate the server received and verified, in the server's own words.
    """
    certs = []
    for chunk in page.split("Client certificate")[1:]:
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", chunk, re.S)
        if m:
            certs.append(x509.load_pem_x509_certificate(m.group(0).encode()))
    return certs


def negotiated_protocol(page: str) -> str | None:
    m = re.search(r"^\s*Protocol\s*:\s*(\S+)", page, flags=re.M)
    return m.group(1) if m else None


def card_info(card: VirtualCardProcess) -> dict[str, Any]:
    """``pivtool --json info`` through pcscd."""
    info: dict[str, Any] = json.loads(
        pivtool("--reader", card.substring, "--json", "info").stdout)
    return info


def pin_tries_left(card: VirtualCardProcess) -> int:
    """PIN tries left as ``pivtool --json info`` reads them."""
    return int(card_info(card)["pin"]["tries_left"])


def card_certificate(card: VirtualCardProcess, path: Path) -> x509.Certificate:
    """Export the slot 9a certificate from the card with pivtool."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    pivtool("--reader", card.substring, "certs", "export", "9a", "-o", str(path))
    return x509.load_pem_x509_certificate(path.read_bytes())
