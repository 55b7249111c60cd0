"""Where pivtool finds Microsoft Graph: tenant, application, credential, endpoints, TLS
trust and the token cache. Values come from options or the environment
(``PIVTOOL_TENANT``, ``PIVTOOL_CLIENT_ID``, ``PIVTOOL_CLIENT_SECRET``,
``PIVTOOL_AUTHORITY``, ``PIVTOOL_GRAPH_URL``); the client secret never from argv."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import GraphConfigError

#: Microsoft's public cloud; sovereign clouds set PIVTOOL_AUTHORITY / PIVTOOL_GRAPH_URL.
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"

#: Authority hosts MSAL knows itself (its instance discovery and authority validation are
#: for these); any other host (a test stand-in) is used as configured, without discovery.
MICROSOFT_AUTHORITY_HOSTS = frozenset({
    "login.microsoftonline.com", "login.microsoft.com", "login.windows.net",
    "login.microsoftonline.us", "login.chinacloudapi.cn", "login.partner.microsoftonline.cn",
})


@dataclass(frozen=True)
class ClientCertificate:
    """An application's certificate credential: the private key and certificate, PEM."""

    private_key_pem: str = field(repr=False)
    certificate_pem: str


@dataclass(frozen=True)
class GraphConfig:
    """Everything needed to reach Graph for one tenant.

    Without ``client_secret`` and ``client_certificate`` an administrator signs in with the
    device-code flow (a public client application); with one of them the application
    authenticates as itself (client credentials, for unattended batches)."""

    tenant: str
    client_id: str
    authority_host: str = DEFAULT_AUTHORITY
    graph_url: str = DEFAULT_GRAPH_URL
    client_secret: str | None = field(default=None, repr=False)
    client_certificate: ClientCertificate | None = field(default=None, repr=False)
    #: CA file for TLS verification; None = the system store.
    ca_file: str | None = None
    #: MSAL token cache file (0600); None = no persistent cache.
    cache_path: Path | None = None

    @property
    def authority(self) -> str:
        """The tenant's authority URL for MSAL."""
        return f"{self.authority_host.rstrip('/')}/{self.tenant}"

    @property
    def api(self) -> str:
        """Graph v1.0 base URL."""
        return f"{self.graph_url.rstrip('/')}/v1.0"

    @property
    def microsoft_authority(self) -> bool:
        """True for Microsoft's own login hosts (MSAL validates and discovers those)."""
        return (urlsplit(self.authority_host).hostname or "") in MICROSOFT_AUTHORITY_HOSTS

    @property
    def unattended(self) -> bool:
        """True when the application has its own credential (no person signs in)."""
        return self.client_secret is not None or self.client_certificate is not None

    def scopes(self, permissions: tuple[str, ...]) -> list[str]:
        """OAuth scopes: ``.default`` for an application credential (the permissions
        granted to the app), else the delegated *permissions* on Graph."""
        base = self.graph_url.rstrip("/")
        if self.unattended:
            return [f"{base}/.default"]
        return [f"{base}/{p}" for p in permissions]


def default_cache_path() -> Path:
    """``$XDG_CONFIG_HOME/pivtool/msal-token-cache.json`` (``~/.config`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".config")
    return Path(base) / "pivtool" / "msal-token-cache.json"


def trust_file() -> str | None:
    """The CA file TLS verification uses: ``SSL_CERT_FILE`` when set (``requests`` would
    only honour ``REQUESTS_CA_BUNDLE``), else the system store's file, else None (the
    HTTP library's default)."""
    explicit = os.environ.get("SSL_CERT_FILE")
    if explicit:
        if not os.path.isfile(explicit):
            raise GraphConfigError(f"SSL_CERT_FILE {explicit} is not a file")
        return explicit
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _https_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise GraphConfigError(f"{name} must be an https:// URL: {value!r}")
    return value.rstrip("/")


def load_client_certificate(data: bytes, path: str) -> ClientCertificate:
    """Split a PEM file holding the application's private key and certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise GraphConfigError(f"--client-cert {path}: no unencrypted PEM private key in "
                               "the file") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise GraphConfigError(f"--client-cert {path}: no PEM certificate in the file"
                               ) from None
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return ClientCertificate(key_pem, cert.public_bytes(serialization.Encoding.PEM).decode())


def resolve(*, tenant: str | None, client_id: str | None, client_secret: str | None,
            client_certificate: ClientCertificate | None,
            env: dict[str, str] | None = None, cache: bool = True) -> GraphConfig:
    """Build a :class:`GraphConfig` from explicit values, falling back to the environment.
    Raises :class:`GraphConfigError` for anything missing or malformed."""
    env = dict(os.environ) if env is None else env
    tenant = tenant or env.get("PIVTOOL_TENANT")
    client_id = client_id or env.get("PIVTOOL_CLIENT_ID")
    if not tenant:
        raise GraphConfigError("no tenant: set PIVTOOL_TENANT or use --tenant "
                               "(e.g. contoso.onmicrosoft.com or the tenant ID)")
    if not client_id:
        raise GraphConfigError("no application: set PIVTOOL_CLIENT_ID or use --client-id "
                               "(the application (client) ID of your app registration)")
    if "/" in tenant or "?" in tenant or "#" in tenant:
        raise GraphConfigError(f"the tenant must be a domain name or a tenant ID: {tenant!r}")
    if client_secret is not None and client_certificate is not None:
        raise GraphConfigError("use a client secret or --client-cert, not both")
    return GraphConfig(
        tenant=tenant,
        client_id=client_id,
        authority_host=_https_url("PIVTOOL_AUTHORITY",
                                  env.get("PIVTOOL_AUTHORITY") or DEFAULT_AUTHORITY),
        graph_url=_https_url("PIVTOOL_GRAPH_URL",
                             env.get("PIVTOOL_GRAPH_URL") or DEFAULT_GRAPH_URL),
        client_secret=client_secret,
        client_certificate=client_certificate,
        ca_file=trust_file(),
        cache_path=default_cache_path() if cache else None,
    )
