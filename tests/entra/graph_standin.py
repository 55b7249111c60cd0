"""TEST FIXTURE: a local HTTPS stand-in for the Microsoft identity platform and Microsoft
Graph, implementing exactly the endpoints pivtool uses, strictly.

It is not Microsoft's service and not a mock of pivtool's code: the real MSAL and
``requests`` talk to it over TLS (its own test CA; the client trusts it through
``SSL_CERT_FILE``). Request and response shapes, status codes and error bodies follow
Microsoft's documentation:

* OpenID discovery ``GET /{tenant}/v2.0/.well-known/openid-configuration``; token endpoint
  ``POST /{tenant}/oauth2/v2.0/token`` (client credentials with ``client_secret`` or a
  signed JWT ``client_assertion`` — signature, ``aud``, ``iss``/``sub``, ``exp`` and the
  ``x5t#S256``/``x5t`` thumbprint checked against the registered certificate; device code;
  refresh token) and ``POST /{tenant}/oauth2/v2.0/devicecode``. Errors as the identity
  platform sends them: ``{"error", "error_description": "AADSTS...", "error_codes"}``.
* Graph v1.0: ``GET /users/{id|upn}?$select=...``, ``PATCH /users/{id}`` with
  ``{"authorizationInfo": {"certificateUserIds": [...]}}`` (204), ``GET /users?$filter=
  authorizationInfo/certificateUserIds/any(x:x eq '...')&$count=true`` (needs
  ``ConsistencyLevel: eventual``), ``GET /policies/authenticationMethodsPolicy/
  authenticationMethodConfigurations/x509Certificate``, ``GET /organization``,
  ``GET /organization/{id}/certificateBasedAuthConfiguration``. Errors as
  ``{"error": {"code", "message", "innerError"}}``.

Strict: unknown paths 404, wrong methods 405, unknown ``$select`` properties 400, a PATCH
without ``Content-Type: application/json`` 415, any body other than the documented schema
400, a missing/unknown/expired bearer token 401, a token without the needed permission 403.
Behaviour: Entra's limits (10 values of at most 1,024 characters), uniqueness of
certificateUserIds across users (400), synchronised users (400 for a cloud write),
throttling on demand (429 + ``Retry-After``), paging (``@odata.nextLink``, page size
``page_size``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

X509_PATH = "/v1.0/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/" \
            "x509Certificate"
USER_PROPERTIES = {"id", "userPrincipalName", "displayName", "onPremisesSyncEnabled",
                   "authorizationInfo", "mail"}
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class User:
    """A directory user."""

    upn: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    synced: bool = False
    certificate_user_ids: list[str] = field(default_factory=list)


@dataclass
class App:
    """An app registration: its credentials and granted application permissions."""

    client_id: str
    secret: str | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)
    #: Public client (device code): delegated permissions the admin consented to.
    delegated: set[str] = field(default_factory=set)


@dataclass
class Token:
    scopes: set[str]
    expires: float
    subject: str


def default_x509_policy() -> dict[str, Any]:
    """Microsoft's documented default configuration (CBA disabled, no certificateUserIds
    rule)."""
    return {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#authenticationMethod"
                          "Configurations/$entity",
        "@odata.type": "#microsoft.graph.x509CertificateAuthenticationMethodConfiguration",
        "id": "X509Certificate",
        "state": "disabled",
        "certificateUserBindings": [
            {"x509CertificateField": "PrincipalName",
             "userProperty": "onPremisesUserPrincipalName", "priority": 1},
            {"x509CertificateField": "RFC822Name", "userProperty": "userPrincipalName",
             "priority": 2},
        ],
        "authenticationModeConfiguration": {
            "x509CertificateAuthenticationDefaultMode": "x509CertificateSingleFactor",
            "rules": [],
        },
        "includeTargets": [{"targetType": "group", "id": "all_users",
                            "isRegistrationRequired": False}],
        "excludeTargets": [],
    }


class GraphStandIn:
    """The stand-in's state and its HTTPS server (start with :meth:`start`)."""

    def __init__(self, workdir: Path, tenant: str = "contoso.onmicrosoft.com") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.tenant = tenant
        self.tenant_id = str(uuid.uuid4())
        self.org_id = str(uuid.uuid4())
        self.users: dict[str, User] = {}
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, tuple[str, set[str]]] = {}
        self.device_codes: dict[str, dict[str, Any]] = {}
        self.x509_policy = default_x509_policy()
        self.certificate_authorities: list[dict[str, Any]] = []
        #: The PKI-based trust store: certificateBasedAuthPki id -> (displayName,
        #: [certificateAuthorityDetail]).
        self.pki_stores: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.page_size = 1
        #: [(method, path prefix, remaining count, status, Retry-After)]
        self.throttles: list[list[Any]] = []
        #: Every request: (method, path, query dict, headers without Authorization).
        self.log: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = []
        self.token_lifetime = 3600
        #: Called with (method, path, status) after a request was handled, before the
        #: answer is sent (tests use it to kill the client: an answer lost).
        self.on_handled: Any = None
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.ca_file = workdir / "standin-ca.pem"
        self._make_tls()

    # ------------------------------------------------------------------ setup

    def _make_tls(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Graph Stand-in Test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                           False, False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        import ipaddress

        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        chain = self.workdir / "standin-server.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(chain)

    def add_user(self, upn: str, values: list[str] | None = None, synced: bool = False
                 ) -> User:
        """Create a user."""
        user = User(upn, synced=synced, certificate_user_ids=list(values or []))
        self.users[user.id] = user
        return user

    def user(self, upn: str) -> User:
        """The user with *upn*."""
        return next(u for u in self.users.values() if u.upn.lower() == upn.lower())

    def add_app(self, client_id: str | None = None, *, secret: str | None = None,
                certificate: x509.Certificate | None = None,
                roles: tuple[str, ...] = (), delegated: tuple[str, ...] = ()) -> App:
        """Register an application."""
        app = App(client_id or str(uuid.uuid4()), secret,
                  [certificate] if certificate is not None else [], set(roles),
                  set(delegated))
        self.apps[app.client_id] = app
        return app

    def throttle(self, method: str, path_prefix: str, count: int = 1, retry_after: int = 1,
                 status: int = 429) -> None:
        """Answer the next *count* matching requests with *status* and Retry-After."""
        self.throttles.append([method, path_prefix, count, status, retry_after])

    def requests(self, method: str | None = None, path_prefix: str = "") -> list[Any]:
        """Logged requests (method, path, query, headers), optionally filtered."""
        return [r for r in self.log if (method is None or r[0] == method)
                and r[1].startswith(path_prefix)]

    @property
    def authority(self) -> str:
        """PIVTOOL_AUTHORITY for this stand-in."""
        assert self._server is not None
        return f"https://localhost:{self._server.server_address[1]}"

    @property
    def graph_url(self) -> str:
        """PIVTOOL_GRAPH_URL for this stand-in."""
        return self.authority

    def env(self, client_id: str, secret: str | None = None) -> dict[str, str]:
        """Environment for pivtool to use this stand-in."""
        out = {"PIVTOOL_TENANT": self.tenant, "PIVTOOL_CLIENT_ID": client_id,
               "PIVTOOL_AUTHORITY": self.authority, "PIVTOOL_GRAPH_URL": self.graph_url,
               "SSL_CERT_FILE": str(self.ca_file),
               "XDG_CONFIG_HOME": str(self.workdir / "config")}
        if secret is not None:
            out["PIVTOOL_CLIENT_SECRET"] = secret
        return out

    # ------------------------------------------------------------------ server

    def start(self) -> None:
        """Serve on 127.0.0.1 (a free port) in a daemon thread."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                standin._dispatch(self, "GET")

            def do_POST(self) -> None:
                standin._dispatch(self, "POST")

            def do_PATCH(self) -> None:
                standin._dispatch(self, "PATCH")

            def do_PUT(self) -> None:
                standin._dispatch(self, "PUT")

            def do_DELETE(self) -> None:
                standin._dispatch(self, "DELETE")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k: v for k, v in h.headers.items() if k.lower() != "authorization"}
        with self.lock:
            self.log.append((method, path, query, headers))
            status, extra, payload = self._route(h, method, path, query, body)
        if self.on_handled is not None:
            self.on_handled(method, path, status)
        data = b"" if payload is None else json.dumps(payload).encode()
        h.send_response(status)
        for k, v in extra.items():
            h.send_header(k, v)
        if payload is not None:
            h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, h: BaseHTTPRequestHandler, method: str, path: str,
               query: dict[str, list[str]], body: bytes
               ) -> tuple[int, dict[str, str], Any]:
        for t in self.throttles:
            if t[2] > 0 and t[0] == method and path.startswith(t[1]):
                t[2] -= 1
                return t[3], {"Retry-After": str(t[4])}, graph_error(
                    "TooManyRequests", "Too many requests; please retry after the interval "
                    "in Retry-After.")
        tenant_prefix = f"/{self.tenant}/"
        if path.startswith(tenant_prefix) or path.startswith(f"/{self.tenant_id}/"):
            rest = path.split("/", 2)[2]
            return self._identity(h, method, "/" + rest, query, body)
        if path.startswith("/v1.0/"):
            return self._graph(h, method, path[len("/v1.0"):], query, body)
        if path.split("/")[1:2] and path.split("/")[1] not in ("v1.0", "beta"):
            return 400, {}, aad_error("invalid_tenant", 90002,
                                      f"Tenant '{path.split('/')[1]}' not found.")
        return 404, {}, graph_error("UnknownError", "Resource not found")

    # ------------------------------------------------------------------ identity platform

    def _identity(self, h: BaseHTTPRequestHandler, method: str, path: str,
                  query: dict[str, list[str]], body: bytes
                  ) -> tuple[int, dict[str, str], Any]:
        base = f"{self.authority}/{self.tenant_id}"
        if path == "/v2.0/.well-known/openid-configuration":
            if method != "GET":
                return 405, {}, None
            return 200, {}, {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                          "private_key_jwt"],
                "response_types_supported": ["code", "id_token", "code id_token",
                                             "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": "EU",
            }
        if path not in ("/oauth2/v2.0/token", "/oauth2/v2.0/devicecode"):
            return 404, {}, aad_error("invalid_request", 900561, "The endpoint only accepts "
                                      "POST requests.")
        if method != "POST":
            return 405, {}, aad_error("invalid_request", 900561,
                                      "The endpoint only accepts POST, OPTIONS requests.")
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            return 400, {}, aad_error("invalid_request", 900144,
                                      "The request body must contain the following "
                                      "parameter: 'grant_type'.")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        if path == "/oauth2/v2.0/devicecode":
            return self._device_code(form)
        return self._token(form, f"{base}/oauth2/v2.0/token")

    def _device_code(self, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return 400, {}, aad_error("unauthorized_client", 700016, "Application with "
                                      "identifier was not found in the directory.")
        code = secrets.token_urlsafe(24)
        user_code = secrets.token_hex(4).upper()
        self.device_codes[code] = {"client_id": app.client_id, "polls": 0,
                                   "scope": form.get("scope", "")}
        return 200, {}, {
            "device_code": code, "user_code": user_code,
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900, "interval": 1,
            "message": f"To sign in, use a web browser to open the page "
                       f"https://microsoft.com/devicelogin and enter the code {user_code} "
                       f"to authenticate.",
        }

    def _token(self, form: dict[str, str], audience: str
               ) -> tuple[int, dict[str, str], Any]:
        grant = form.get("grant_type")
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return 400, {}, aad_error("unauthorized_client", 700016, "Application with "
                                      "identifier was not found in the directory.")
        scopes = set(form.get("scope", "").split())
        if grant == "client_credentials":
            problem = self._client_auth(app, form, audience)
            if problem:
                return 401, {}, aad_error("invalid_client", *problem)
            if scopes != {f"{self.graph_url}/.default"}:
                return 400, {}, aad_error("invalid_scope", 1002012, "The provided value for "
                                          "scope is not valid. Client credential flows must "
                                          "have a scope value with /.default suffixed to the "
                                          "resource identifier.")
            return 200, {}, self._issue(app.roles, app.client_id, refresh=False, form=form)
        if grant == DEVICE_GRANT:
            flow = self.device_codes.get(form.get("device_code", ""))
            if flow is None or flow["client_id"] != app.client_id:
                return 400, {}, aad_error("invalid_grant", 70000, "The provided value for the "
                                          "'device_code' is not valid.")
            flow["polls"] += 1
            if flow["polls"] < 2:  # the admin has not finished signing in yet
                return 400, {}, aad_error("authorization_pending", 70016, "OAuth 2.0 device "
                                          "flow error. Authorization is pending.")
            del self.device_codes[form["device_code"]]
            return 200, {}, self._delegated(app, flow["scope"], form)
        if grant == "refresh_token":
            held = self.refresh_tokens.get(form.get("refresh_token", ""))
            if held is None or held[0] != app.client_id:
                return 400, {}, aad_error("invalid_grant", 700082, "The refresh token has "
                                          "expired or is invalid.")
            return 200, {}, self._delegated(app, form.get("scope", ""), form)
        return 400, {}, aad_error("unsupported_grant_type", 70003, "The app requested an "
                                  "unsupported grant type.")

    def _client_auth(self, app: App, form: dict[str, str], audience: str
                     ) -> tuple[int, str] | None:
        if "client_secret" in form:
            if app.secret is None or not secrets.compare_digest(form["client_secret"],
                                                                 app.secret):
                return 7000215, "Invalid client secret provided. Ensure the secret being " \
                                "sent in the request is the client secret value, not the " \
                                "client secret ID."
            return None
        if form.get("client_assertion_type") == JWT_BEARER and "client_assertion" in form:
            return self._check_assertion(app, form["client_assertion"], audience)
        return 7000218, "The request body must contain the following parameter: " \
                        "'client_assertion' or 'client_secret'."

    def _check_assertion(self, app: App, assertion: str, audience: str
                         ) -> tuple[int, str] | None:
        bad = 700027, "The certificate with identifier used to sign the client assertion " \
                      "is not registered on application."
        try:
            head_b64, claims_b64, sig_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(head_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(sig_b64)
        except ValueError:
            return 50027, "JWT token is invalid or malformed."
        cert = None
        # Thumbprints are base64url; MSAL keeps the '=' padding, which Entra accepts.
        s256 = str(header.get("x5t#S256") or "").rstrip("=")
        s1 = str(header.get("x5t") or "").rstrip("=")
        for c in app.certificates:
            der = c.public_bytes(serialization.Encoding.DER)
            if s256 == _b64url(hashlib.sha256(der).digest()) or \
                    s1 == _b64url(hashlib.sha1(der).digest()):
                cert = c
        if cert is None:
            return bad
        key = cert.public_key()
        signed = f"{head_b64}.{claims_b64}".encode()
        try:
            assert isinstance(key, rsa.RSAPublicKey)
            if header.get("alg") == "PS256":
                key.verify(signature, signed, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                          hashes.SHA256().digest_size),
                           hashes.SHA256())
            elif header.get("alg") == "RS256":
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                return 5002738, f"Unsupported algorithm {header.get('alg')}."
        except (InvalidSignature, AssertionError):
            return 700027, "Client assertion failed signature validation."
        now = time.time()
        if claims.get("aud") != audience:
            return 700212, "No matching federated identity record found for presented " \
                           "assertion audience."
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return 700023, "Client assertion audience claim does not match Realm issuer."
        if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < now:
            return 700024, "Client assertion is not within its valid time range."
        if not claims.get("jti"):
            return 50027, "JWT token is invalid or malformed."
        return None

    def _issue(self, granted: set[str], subject: str, *, refresh: bool,
               form: dict[str, str], client_id: str | None = None) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = Token(set(granted), time.time() + self.token_lifetime, subject)
        out: dict[str, Any] = {"token_type": "Bearer", "expires_in": self.token_lifetime,
                               "ext_expires_in": self.token_lifetime, "access_token": token}
        if refresh:
            rt = secrets.token_urlsafe(32)
            self.refresh_tokens[rt] = (client_id or subject, set(granted))
            out["refresh_token"] = rt
            out["scope"] = " ".join(sorted(f"{self.graph_url}/{g}" for g in granted))
        return out

    def _delegated(self, app: App, scope: str, form: dict[str, str]) -> dict[str, Any]:
        asked = {s.rsplit("/", 1)[-1] for s in scope.split()
                 if s.startswith(self.graph_url + "/")}
        granted = asked & app.delegated
        out = self._issue(granted, "admin@" + self.tenant, refresh=True, form=form,
                          client_id=app.client_id)
        uid, utid = str(uuid.UUID(int=1)), self.tenant_id
        out["client_info"] = _b64url(json.dumps({"uid": uid, "utid": utid}).encode())
        claims = {"aud": app.client_id, "iss": f"{self.authority}/{self.tenant_id}/v2.0",
                  "iat": int(time.time()), "exp": int(time.time()) + 3600,
                  "oid": uid, "tid": utid, "sub": uid,
                  "preferred_username": "admin@" + self.tenant, "name": "Admin"}
        out["id_token"] = ".".join([_b64url(b'{"alg":"none","typ":"JWT"}'),
                                    _b64url(json.dumps(claims).encode()), ""])
        return out

    # ------------------------------------------------------------------ Graph

    def _auth(self, h: BaseHTTPRequestHandler, needed: set[str]
              ) -> tuple[int, dict[str, str], Any] | None:
        value = h.headers.get("Authorization") or ""
        if not value.startswith("Bearer "):
            return 401, {}, graph_error("InvalidAuthenticationToken",
                                        "Access token is empty.")
        token = self.tokens.get(value[len("Bearer "):])
        if token is None or token.expires < time.time():
            return 401, {}, graph_error("InvalidAuthenticationToken",
                                        "Access token has expired or is not yet valid.")
        if not token.scopes & needed:
            return 403, {}, graph_error("Authorization_RequestDenied",
                                        "Insufficient privileges to complete the operation.")
        return None

    def _graph(self, h: BaseHTTPRequestHandler, method: str, path: str,
               query: dict[str, list[str]], body: bytes
               ) -> tuple[int, dict[str, str], Any]:
        segments = path.strip("/").split("/")
        read_user = {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All",
                     "Directory.ReadWrite.All"}
        write_user = {"User.ReadWrite.All", "Directory.ReadWrite.All"}
        policy = {"Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod"}
        org = {"Organization.Read.All", "Organization.ReadWrite.All"}
        if segments == ["users"]:
            return self._guard(h, method, "GET", read_user) or \
                self._list_users(h, path, query)
        if len(segments) == 2 and segments[0] == "users":
            if method == "GET":
                return self._auth(h, read_user) or self._get_user(segments[1], query)
            if method == "PATCH":
                return self._auth(h, write_user) or self._patch_user(h, segments[1], query,
                                                                     body)
            return 405, {}, graph_error("Request_BadRequest", "Method not allowed.")
        if "/v1.0" + path == X509_PATH:
            denied = self._guard(h, method, "GET", policy)
            if denied:
                return denied
            if query:
                return 400, {}, graph_error("BadRequest", "Query option is not allowed.")
            return 200, {}, self.x509_policy
        pki = {"PublicKeyInfrastructure.Read.All", "PublicKeyInfrastructure.ReadWrite.All"}
        if segments[:3] == ["directory", "publicKeyInfrastructure",
                            "certificateBasedAuthConfigurations"]:
            denied = self._guard(h, method, "GET", pki)
            if denied:
                return denied
            if len(segments) == 3:
                rows = [{"id": k, "displayName": name, "status": "succeeded",
                         "statusDetails": "", "deletedDateTime": None}
                        for k, (name, _cas) in self.pki_stores.items()]
                return self._page(path, query, rows)
            if len(segments) == 5 and segments[4] == "certificateAuthorities" and \
                    segments[3] in self.pki_stores:
                return self._page(path, query, self.pki_stores[segments[3]][1])
            return 404, {}, graph_error("Request_ResourceNotFound",
                                        f"Resource '{segments[-1]}' does not exist.")
        if segments == ["organization"]:
            denied = self._guard(h, method, "GET", org)
            if denied:
                return denied
            if query.get("$select") not in (None, ["id"]):
                return 400, {}, graph_error("Request_BadRequest", "Invalid $select.")
            return 200, {}, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#"
                                               "organization(id)",
                             "value": [{"id": self.org_id}]}
        if len(segments) == 3 and segments[0] == "organization" and \
                segments[2] == "certificateBasedAuthConfiguration":
            denied = self._guard(h, method, "GET", org)
            if denied:
                return denied
            if segments[1] != self.org_id:
                return 404, {}, graph_error("Request_ResourceNotFound",
                                            f"Resource '{segments[1]}' does not exist or "
                                            "one of its queried reference-property objects "
                                            "are not present.")
            # One configuration object per page's worth of CAs: exercises paging.
            configs = [{"id": "29728ade-6ae4-4ee9-9103-412912537da5",
                        "certificateAuthorities": self.certificate_authorities[i:i + 1]}
                       for i in range(max(1, len(self.certificate_authorities)))]
            return self._page(path, query, configs)
        return 404, {}, graph_error("Request_ResourceNotFound",
                                    f"Resource not found for the segment '{segments[-1]}'.")

    def _guard(self, h: BaseHTTPRequestHandler, method: str, allowed: str, needed: set[str]
               ) -> tuple[int, dict[str, str], Any] | None:
        if method != allowed:
            return 405, {}, graph_error("Request_BadRequest", "Method not allowed.")
        return self._auth(h, needed)

    def _find(self, key: str) -> User | None:
        return self.users.get(key) or next(
            (u for u in self.users.values() if u.upn.lower() == key.lower()), None)

    def _render(self, user: User, select: list[str] | None) -> dict[str, Any]:
        full = {"id": user.id, "userPrincipalName": user.upn,
                "displayName": user.upn.split("@")[0], "mail": user.upn,
                "onPremisesSyncEnabled": True if user.synced else None,
                "authorizationInfo": {"certificateUserIds": list(user.certificate_user_ids)}}
        keys = select or ["id", "userPrincipalName", "displayName", "mail"]
        return {k: full[k] for k in keys}

    def _select(self, query: dict[str, list[str]]
                ) -> tuple[list[str] | None, tuple[int, dict[str, str], Any] | None]:
        if "$select" not in query:
            return None, None
        wanted = [s.strip() for s in query["$select"][0].split(",")]
        bad = [s for s in wanted if s not in USER_PROPERTIES]
        if bad:
            return None, (400, {}, graph_error(
                "Request_BadRequest", f"Could not find a property named '{bad[0]}' on type "
                                      "'Microsoft.DirectoryServices.User'."))
        return wanted, None

    def _get_user(self, key: str, query: dict[str, list[str]]
                  ) -> tuple[int, dict[str, str], Any]:
        if set(query) - {"$select"}:
            return 400, {}, graph_error("Request_BadRequest", "Unsupported query.")
        select, err = self._select(query)
        if err:
            return err
        user = self._find(key)
        if user is None:
            return 404, {}, graph_error("Request_ResourceNotFound",
                                        f"Resource '{key}' does not exist or one of its "
                                        "queried reference-property objects are not present.")
        return 200, {}, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users"
                                           "/$entity", **self._render(user, select)}

    def _patch_user(self, h: BaseHTTPRequestHandler, key: str, query: dict[str, list[str]],
                    body: bytes) -> tuple[int, dict[str, str], Any]:
        if query:
            return 400, {}, graph_error("Request_BadRequest", "Unsupported query.")
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 415, {}, graph_error("UnsupportedMediaType",
                                        "Content-Type must be application/json.")
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {}, graph_error("BadRequest", "Unable to read JSON request payload.")
        if not isinstance(doc, dict) or set(doc) != {"authorizationInfo"} or \
                not isinstance(doc["authorizationInfo"], dict) or \
                set(doc["authorizationInfo"]) != {"certificateUserIds"} or \
                not isinstance(doc["authorizationInfo"]["certificateUserIds"], list) or \
                not all(isinstance(v, str) for v in doc["authorizationInfo"]
                        ["certificateUserIds"]):
            return 400, {}, graph_error("Request_BadRequest", "Invalid request body: this "
                                        "stand-in accepts only authorizationInfo."
                                        "certificateUserIds (a list of strings).")
        user = self._find(key)
        if user is None:
            return 404, {}, graph_error("Request_ResourceNotFound",
                                        f"Resource '{key}' does not exist or one of its "
                                        "queried reference-property objects are not present.")
        values: list[str] = doc["authorizationInfo"]["certificateUserIds"]
        if user.synced:
            return 400, {}, graph_error("Request_BadRequest", "Unable to update the specified "
                                        "properties for on-premises mastered Directory Sync "
                                        "objects or objects currently undergoing migration.")
        if len(values) > 10 or any(len(v) > 1024 for v in values) or \
                len(set(values)) != len(values):
            return 400, {}, graph_error("Request_BadRequest", "Invalid value specified for "
                                        "property 'certificateUserIds' of resource 'User'.")
        if not all(v.startswith(("X509:<PN>", "X509:<RFC822>", "X509:<I>", "X509:<S>",
                                 "X509:<SKI>", "X509:<SHA1-PUKEY>")) for v in values):
            return 400, {}, graph_error("Request_BadRequest", "Invalid value specified for "
                                        "property 'certificateUserIds' of resource 'User'.")
        for other in self.users.values():
            if other is not user and set(other.certificate_user_ids) & set(values):
                return 400, {}, graph_error("Request_BadRequest", "Another object with the "
                                            "same value for property certificateUserIds "
                                            "already exists.")
        user.certificate_user_ids = list(values)
        return 204, {}, None

    def _list_users(self, h: BaseHTTPRequestHandler, path: str,
                    query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        allowed = {"$filter", "$count", "$select", "$skiptoken"}
        if set(query) - allowed:
            return 400, {}, graph_error("Request_BadRequest", "Unsupported query.")
        select, err = self._select(query)
        if err:
            return err
        users = sorted(self.users.values(), key=lambda u: u.upn)
        if "$filter" in query:
            prefix = "authorizationInfo/certificateUserIds/any(x:x eq '"
            flt = query["$filter"][0]
            if not (flt.startswith(prefix) and flt.endswith("')")):
                return 400, {}, graph_error("Request_UnsupportedQuery",
                                            "Unsupported or invalid query filter clause "
                                            "specified for property 'authorizationInfo'.")
            if h.headers.get("ConsistencyLevel") != "eventual" or \
                    query.get("$count") != ["true"]:
                return 400, {}, graph_error("Request_UnsupportedQuery",
                                            "Unsupported or invalid query filter clause "
                                            "specified for property 'authorizationInfo' of "
                                            "resource 'User'.")
            value = flt[len(prefix):-2].replace("''", "'")
            users = [u for u in users if value in u.certificate_user_ids]
        rows = [self._render(u, select) for u in users]
        return self._page(path, query, rows, count="$count" in query)

    def _page(self, path: str, query: dict[str, list[str]], rows: list[Any],
              count: bool = False) -> tuple[int, dict[str, str], Any]:
        start = int(query.get("$skiptoken", ["0"])[0])
        page = rows[start:start + self.page_size]
        out: dict[str, Any] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata"}
        if count:
            out["@odata.count"] = len(rows)
        out["value"] = page
        if start + self.page_size < len(rows):
            rest = {k: v[0] for k, v in query.items() if k != "$skiptoken"}
            rest["$skiptoken"] = str(start + self.page_size)
            qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in rest.items())
            out["@odata.nextLink"] = f"{self.graph_url}/v1.0{path}?{qs}"
        return 200, {}, out


def graph_error(code: str, message: str) -> dict[str, Any]:
    """Graph's error body."""
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": dt.datetime.now(dt.timezone.utc)
                                     .strftime("%Y-%m-%dT%H:%M:%S"),
                                     "request-id": str(uuid.uuid4()),
                                     "client-request-id": str(uuid.uuid4())}}}


def aad_error(error: str, code: int, text: str) -> dict[str, Any]:
    """The identity platform's error body."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return {"error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {uuid.uuid4()} "
                                 f"Correlation ID: {uuid.uuid4()} Timestamp: {stamp}",
            "error_codes": [code], "timestamp": stamp,
            "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}


def app_certificate(common_name: str = "pivtool batch app"
                    ) -> tuple[rsa.RSAPrivateKey, x509.Certificate, bytes]:
    """A self-signed RSA application certificate (as uploaded to an app registration) and
    the PEM file pivtool's --client-cert reads (key + certificate)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + \
        cert.public_bytes(serialization.Encoding.PEM)
    return key, cert, pem


def running(workdir: Path) -> Iterator[GraphStandIn]:
    """Start a stand-in in *workdir*; stop it afterwards (for fixtures)."""
    standin = GraphStandIn(workdir)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
